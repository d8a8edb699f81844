#!/usr/bin/env bash
# Installs what the infra checks need on a fresh Debian 12 machine, idempotently, outside the work tree:
#   - Debian packages: openssh-server (a real sshd for the SSH test), shellcheck (the VM bootstrap script),
#     prometheus (its promtool, for the alert rules),
#     python3-venv, iproute2 (lo up inside `unshare -n`);
#   - Debian's cloud-init, unpacked (not installed: it must not run on this machine) for `cloud-init schema`;
#   - three venvs under $MBA_CACHE_DIR/infra, one per requirements file in tests/infra/requirements/ (checkov is kept
#     apart from python-hcl2 because their parser pins clash). A venv is rebuilt only when its requirements file changes.
# Prints the path of the tools directory on its last line.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}/infra"
mkdir -p "$cache"

need_apt=()
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
# promtool checks and unit-tests the shipped alert rules (monitoring/).
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v useradd >/dev/null || need_apt+=(passwd)
# Debian's python3 ships without a working venv/ensurepip until python3-venv is installed: try making one.
probe="$(mktemp -d)"
if ! command -v python3 >/dev/null; then
    need_apt+=(python3 python3-venv)
elif ! python3 -m venv "$probe/v" >/dev/null 2>&1; then
    need_apt+=(python3-venv)
fi
rm -rf "$probe"
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "install-tools: apt-get install ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    # The packaged sshd must not start listening on port 22 of this machine: the test runs its own on loopback.
    # A temporary policy-rc.d (unless the machine already has one) stops invoke-rc.d from starting it.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi

# cloud-init's schema validator, from Debian's package, unpacked into the cache and run with the tests venv.
cloud_init_dir="$cache/cloud-init"
if [ ! -d "$cloud_init_dir/usr/lib/python3/dist-packages/cloudinit" ]; then
    echo "install-tools: unpacking Debian's cloud-init" >&2
    dl="$(mktemp -d)"
    chown _apt "$dl" 2>/dev/null || true # apt downloads as its sandbox user when it can
    if ! (cd "$dl" && apt-get download -qq cloud-init >&2); then
        # No package lists yet on a fresh machine.
        apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
        (cd "$dl" && apt-get download -qq cloud-init >&2)
    fi
    rm -rf "$cloud_init_dir.tmp"
    dpkg -x "$dl"/cloud-init_*.deb "$cloud_init_dir.tmp"
    rm -rf "$dl" "$cloud_init_dir"
    mv "$cloud_init_dir.tmp" "$cloud_init_dir"
fi

make_venv() { # name -> venv with requirements/<name>.txt installed
    local name="$1" req="$here/requirements/$1.txt" dir="$cache/venv-$1"
    local want; want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
    if [ -f "$dir/.mba-stamp" ] && [ "$(cat "$dir/.mba-stamp")" = "$want" ]; then return 0; fi
    echo "install-tools: building venv $name" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check --no-input -r "$req" >&2
    echo "$want" >"$dir/.mba-stamp"
}

make_venv tests &
p1=$!
make_venv terraform &
p2=$!
make_venv checkov
wait "$p1"
wait "$p2"
echo "$cache"
