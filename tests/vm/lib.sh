# Shared helpers for tests/vm/*.sh (sourced, not run). Everything they install or cache lives under MBA_CACHE_DIR.
# shellcheck shell=bash

CACHE=${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VM_VENV=$CACHE/venv-vm
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 ANSIBLE_LOCALHOST_WARNING=false
# ansible-lint and ansible must not try to fetch collections or phone home: everything the role uses is builtin.
export ANSIBLE_GALAXY_SERVER_LIST="" ANSIBLE_COLLECTIONS_PATH=$CACHE/ansible-collections

log() { echo "[$(date +%T)] ${LOG_TAG:-vm}: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# check NAME CMD...: runs one check, counts it, keeps going so every failure is reported; checks_summary prints
# the counts and fails when any check did.
failures=0
passed=0
check() {
    local name=$1 out
    shift
    out=$(mktemp)
    if "$@" >"$out" 2>&1; then
        passed=$((passed + 1)); log "ok   $name"
    else
        failures=$((failures + 1)); log "FAIL $name"; sed 's/^/    /' "$out" >&2
    fi
    rm -f "$out"
}
checks_summary() {
    echo "$passed passed, $failures failed"
    ((failures == 0))
}

# need_apt PKG...: installs the Debian packages not installed yet (apt-get update first, only when needed).
need_apt() {
    local missing=() pkg
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# need_vm_venv: the Python tools of these tests (ansible-core, ansible-lint, pymongo, azure-storage-blob), pinned in
# tests/vm/requirements.txt; rebuilt when that file changes.
need_vm_venv() {
    need_apt python3-venv
    local stamp=$VM_VENV/.requirements
    if ! cmp -s "$REPO/tests/vm/requirements.txt" "$stamp" 2>/dev/null; then
        log "installing the Python test tools into $VM_VENV"
        rm -rf "$VM_VENV"
        python3 -m venv "$VM_VENV"
        "$VM_VENV/bin/pip" install -q -r "$REPO/tests/vm/requirements.txt"
        cp "$REPO/tests/vm/requirements.txt" "$stamp"
    fi
    export PATH=$VM_VENV/bin:$PATH
}

# offline CMD...: runs a tool that might reach out to the network in a namespace without one, so it fails fast.
offline() {
    unshare -n bash -c 'ip link set lo up 2>/dev/null || true; exec "$@"' offline "$@"
}
