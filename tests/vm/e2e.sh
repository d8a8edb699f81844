#!/usr/bin/env bash
# End-to-end test of the VM side on a booted systemd: a Debian 12 root (debootstrap, cached) boots in systemd-nspawn
# on the host network; the Ansible role deploys the .deb over SSH; then the checks issue 6 lists run against the
# SecantusDB and Azurite servers on the host (run under tests/harness/with-services.sh, which exports
# MBA_TEST_MONGODB_URI and MBA_TEST_AZURITE_BLOB_ENDPOINT). Needs root. MBA_E2E_DEB=path skips `make deb`;
# MBA_E2E_KEEP=1 leaves the container running at the end for a look (stop it with the command it prints).
set -euo pipefail
LOG_TAG=e2e
# shellcheck source=tests/vm/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, systemd-nspawn)"
: "${MBA_TEST_MONGODB_URI:?run me under tests/harness/with-services.sh}"
: "${MBA_TEST_AZURITE_BLOB_ENDPOINT:?run me under tests/harness/with-services.sh}"

started=$SECONDS
VM=$CACHE/vm
SUITE=bookworm
# ca-certificates: the package depends on it (every Azure Ubuntu image has it; a minbase root does not).
INCLUDE=systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,procps,ca-certificates
ROOT_KEY=$(echo "v1 $SUITE $INCLUDE" | sha256sum | cut -c1-12)
CACHED_ROOT=$VM/$SUITE-$ROOT_KEY
RUN=$VM/run
MACHINE=mba-e2e
# Azurite's documented development account; nothing secret about it.
AZ_ACCOUNT=devstoreaccount1
AZ_KEY=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
AZ_CONN="DefaultEndpointsProtocol=http;AccountName=$AZ_ACCOUNT;AccountKey=$AZ_KEY;BlobEndpoint=$MBA_TEST_AZURITE_BLOB_ENDPOINT;"
AZ_CONTAINER=e2e-$(date +%s)
AZ_PREFIX=vm
BIG_DB=e2e_big

passed=0
step() { log "── $*"; }
ok() { passed=$((passed + 1)); log "ok: $*"; }

need_apt debootstrap systemd-container openssh-client python3 iproute2 coreutils
need_vm_venv
export ANSIBLE_CONFIG=$RUN/ansible.cfg

# ---------------------------------------------------------------------------------------------------------------
step "package"
if [[ -n ${MBA_E2E_DEB:-} ]]; then
    DEB=$(realpath "$MBA_E2E_DEB")
else
    DEB=$REPO/$(bash packaging/build-deb.sh | tail -n 1)
fi
[[ -f $DEB ]] || die "no package at $DEB"
log "using $DEB"

# ---------------------------------------------------------------------------------------------------------------
step "Debian 12 root (cached in $CACHED_ROOT)"
debian_mirror() { # the mirror this machine's own apt uses, so the test reaches what apt-get reaches
    if [[ -n ${MBA_DEBIAN_MIRROR:-} ]]; then echo "$MBA_DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && !/security/ {print $2; exit}')
    [[ -n $uri ]] || uri=$(awk '/^deb / && !/security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list 2>/dev/null)
    [[ -n $uri ]] || die "cannot tell the Debian mirror from /etc/apt; set MBA_DEBIAN_MIRROR"
    echo "$uri"
}
if [[ ! -x $CACHED_ROOT/usr/lib/systemd/systemd ]]; then
    mirror=$(debian_mirror)
    log "debootstrap $SUITE from $mirror (once per machine)"
    rm -rf "$CACHED_ROOT.tmp"
    mkdir -p "$VM"
    nice -n 19 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$CACHED_ROOT.tmp" "$mirror" \
        >"$VM/debootstrap.log" 2>&1 || { tail -n 30 "$VM/debootstrap.log" >&2; die "debootstrap failed"; }
    # Nothing in the test needs these, and a timer firing apt mid-test would only add noise.
    rm -f "$CACHED_ROOT.tmp"/etc/systemd/system/timers.target.wants/*
    mv "$CACHED_ROOT.tmp" "$CACHED_ROOT"
    # Roots cached under an older key are dead weight now.
    find "$VM" -maxdepth 1 -name "$SUITE-*" ! -name "$(basename "$CACHED_ROOT")" -exec rm -rf {} +
fi

# ---------------------------------------------------------------------------------------------------------------
step "boot it with systemd-nspawn"
nspawn_pid=""
stop_container() {
    [[ -n $nspawn_pid ]] || return 0
    if kill -0 "$nspawn_pid" 2>/dev/null; then
        # SIGTERM to systemd-nspawn asks the container's systemd for an orderly poweroff.
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    wait "$nspawn_pid" 2>/dev/null || true
    nspawn_pid=""
}
on_exit() {
    local rc=$?
    if ((rc != 0)); then
        log "failed after $((SECONDS - started)) s; container console: $RUN/console.log"
        if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
            vm_ssh root journalctl -u mongo-backup-agent --no-pager -n 60 >&2 2>/dev/null || true
        fi
    fi
    if [[ -n ${MBA_E2E_KEEP:-} && -n $nspawn_pid ]]; then
        log "container left running: ssh -F $RUN/ssh_config root@vm; stop with: kill $nspawn_pid"
        return
    fi
    stop_container
    # A passing run's copy of the root is of no further use (a failing one stays for a look).
    if ((rc == 0)); then rm -rf "$RUN/root"; fi
}
trap on_exit EXIT

rm -rf "$RUN"
mkdir -p "$RUN/keys"
cp -a --reflink=auto "$CACHED_ROOT" "$RUN/root"
R=$RUN/root
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "$MACHINE" >"$R/etc/hostname"
# The container shares the host's network: its sshd listens on a free loopback port only.
mkdir -p "$R/etc/ssh/sshd_config.d"
printf 'Port %s\nListenAddress 127.0.0.1\nPasswordAuthentication no\n' "$PORT" >"$R/etc/ssh/sshd_config.d/e2e.conf"
ssh-keygen -q -t ed25519 -N '' -C e2e-admin -f "$RUN/keys/admin"
ssh-keygen -q -t ed25519 -N '' -C e2e-ci-cronjob -f "$RUN/keys/ci"
ssh-keygen -q -t ed25519 -N '' -C e2e-stranger -f "$RUN/keys/stranger"
install -d -m 0700 "$R/root/.ssh"
install -m 0600 "$RUN/keys/admin.pub" "$R/root/.ssh/authorized_keys"
# Pinned host key, as the AKS CronJob pins it: no trust on first use anywhere in this test.
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$R/etc/ssh/ssh_host_ed25519_key.pub")" >"$RUN/known_hosts"
cat >"$RUN/ssh_config" <<EOF
Host vm
    HostName 127.0.0.1
    Port $PORT
    UserKnownHostsFile $RUN/known_hosts
    StrictHostKeyChecking yes
    HostKeyAlgorithms ssh-ed25519
    IdentitiesOnly yes
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
EOF
vm_ssh() { # vm_ssh USER ARG...: runs ARG... as USER (root: admin key; others: the CI key); ssh joins its
    # arguments into one shell line, so each is quoted here to arrive as the same word
    local user=$1 key=admin line; shift
    [[ $user == root ]] || key=ci
    line=$(printf '%q ' "$@")
    ssh -n -F "$RUN/ssh_config" -i "$RUN/keys/$key" -l "$user" vm "${line% }"
}
systemd-nspawn -D "$R" --register=no --keep-unit --boot --machine="$MACHINE" --console=read-only \
    >"$RUN/console.log" 2>&1 </dev/null &
nspawn_pid=$!
state=""
for _ in $(seq 1 120); do
    kill -0 "$nspawn_pid" 2>/dev/null || { tail -n 30 "$RUN/console.log" >&2; die "systemd-nspawn exited"; }
    state=$(vm_ssh root systemctl is-system-running --wait 2>/dev/null) && break
    [[ $state == degraded ]] && break
    sleep 0.5
done
[[ $state == running ]] || { vm_ssh root systemctl --failed --no-pager >&2 || true; die "container state '$state'"; }
ok "booted a Debian 12 systemd ($(vm_ssh root systemctl --version | head -n 1)) in $((SECONDS - started)) s"

# ---------------------------------------------------------------------------------------------------------------
step "prepare the services on the host"
# The agent never creates its container (infrastructure does): make it, as terraform would in Azure.
python3=$VM_VENV/bin/python
"$python3" - "$AZ_CONN" "$AZ_CONTAINER" <<'PY'
import sys
from azure.storage.blob import BlobServiceClient
BlobServiceClient.from_connection_string(sys.argv[1]).create_container(sys.argv[2])
PY
# Blob names under the prefix, committed ones only unless "uncommitted" is asked for.
blobs() {
    "$python3" - "$AZ_CONN" "$AZ_CONTAINER" "$AZ_PREFIX/" "${1:-}" <<'PY'
import sys
from azure.storage.blob import BlobServiceClient
c = BlobServiceClient.from_connection_string(sys.argv[1]).get_container_client(sys.argv[2])
inc = ["uncommittedblobs"] if sys.argv[4] == "uncommitted" else None
for b in c.list_blobs(name_starts_with=sys.argv[3], include=inc):
    print(b.name)
PY
}
manifests() { blobs | grep '/manifest.json$' || true; }

# ---------------------------------------------------------------------------------------------------------------
step "role variables and inventory"
cat >"$RUN/ansible.cfg" <<EOF
[defaults]
roles_path = $REPO/ansible/roles
host_key_checking = True
retry_files_enabled = False
interpreter_python = /usr/bin/python3
stdout_callback = default
[ssh_connection]
ssh_args = -F $RUN/ssh_config -o ControlMaster=auto -o ControlPersist=60s
pipelining = True
EOF
cat >"$RUN/inventory.ini" <<EOF
[mongodb_vms]
vm ansible_user=root ansible_ssh_private_key_file=$RUN/keys/admin
EOF
"$python3" - "$RUN/vars.json" <<PY
import json, sys
json.dump({
    "mongo_backup_agent_deb": "$DEB",
    "mongo_backup_agent_mongodb": {"uri": "$MBA_TEST_MONGODB_URI"},
    # Slow, single-stream compression keeps the large backup below running long enough to be stopped midway.
    "mongo_backup_agent_backup": {"compression": "zstd", "zstd_level": 19, "compression_threads": 1,
                                  "parallel_collections": 1},
    "mongo_backup_agent_storage": {"kind": "azure", "endpoint": "$MBA_TEST_AZURITE_BLOB_ENDPOINT",
                                   "container": "$AZ_CONTAINER", "prefix": "$AZ_PREFIX",
                                   "auth": "connection-string"},
    # All backups of this test fall into one hour, where keep_hourly alone would keep only the newest.
    "mongo_backup_agent_retention": {"keep_last": 100, "keep_hourly": 48, "keep_daily": 7},
    "mongo_backup_agent_secrets": {"azure-connection-string": "$AZ_CONN"},
    "mongo_backup_agent_trigger_keys": [{"key": open("$RUN/keys/ci.pub").read().strip(), "from": ["127.0.0.1"]}],
}, open(sys.argv[1], "w"), indent=1)
PY
playbook() { # playbook LOGNAME [ARGS...]: runs site.yml against the container, output in $RUN/LOGNAME.log
    local name=$1; shift
    if ! ansible-playbook -i "$RUN/inventory.ini" "$REPO/ansible/site.yml" -e "@$RUN/vars.json" "$@" \
        >"$RUN/$name.log" 2>&1 </dev/null; then
        tail -n 40 "$RUN/$name.log" >&2
        die "ansible-playbook ($name) failed"
    fi
}
recap() { # recap LOGNAME FIELD: a number from the PLAY RECAP line of the host
    sed -n "s/^vm .*$2=\([0-9]*\).*/\1/p" "$RUN/$1.log"
}

# ---------------------------------------------------------------------------------------------------------------
step "check mode on the fresh VM"
playbook check-fresh --check --diff
vm_ssh root sh -c '! dpkg -s mongo-backup-agent >/dev/null 2>&1' || die "check mode installed the package"
ok "check mode on a fresh VM runs clean ($(recap check-fresh changed) would change) and changes nothing"

step "deploy with the role"
t0=$SECONDS
playbook deploy
ok "role deployed in $((SECONDS - t0)) s (changed=$(recap deploy changed))"

# ---------------------------------------------------------------------------------------------------------------
step "the service is up, hardened, and logged its start"
[[ $(vm_ssh root systemctl is-active mongo-backup-agent) == active ]] || die "service not active"
[[ $(vm_ssh root systemctl is-enabled mongo-backup-agent) == enabled ]] || die "service not enabled"
pid=$(vm_ssh root systemctl show -P MainPID mongo-backup-agent)
((pid > 0)) || die "no main PID"
status=$(vm_ssh root cat "/proc/$pid/status")
grep -qP '^Uid:\t(\d+)\t\1' <<<"$status" || die "odd Uid line"
[[ $(vm_ssh root stat -c %U "/proc/$pid") == mongo-backup-agent ]] || die "not running as mongo-backup-agent"
grep -qP '^NoNewPrivs:\t1$' <<<"$status" || die "NoNewPrivs not set"
grep -qP '^Seccomp:\t2$' <<<"$status" || die "no seccomp filter"
grep -qP '^CapBnd:\t0+$' <<<"$status" || die "capability bounding set not empty"
grep -qP '^CapEff:\t0+$' <<<"$status" || die "effective capabilities not empty"
# Look at the file system from inside the service's own mount namespace.
in_ns() { vm_ssh root nsenter -t "$pid" -m -- "$@"; }
in_ns sh -c '! touch /usr/e2e-probe 2>/dev/null' || die "/usr is writable for the service"
in_ns sh -c '! touch /etc/e2e-probe 2>/dev/null' || die "/etc is writable for the service"
[[ -z $(in_ns ls -A /home) ]] || die "/home is visible to the service"
[[ -z $(in_ns ls -A /root 2>/dev/null || true) ]] || die "/root is visible to the service"
[[ -z $(in_ns sh -c 'ls /dev | grep -E "^(sd|vd|nvme|mem|kmsg)"' || true) ]] || die "real devices visible"
in_ns findmnt -no OPTIONS /var/lib/mongo-backup-agent | grep -q '^rw' || die "state directory not writable"
in_ns findmnt -no OPTIONS /tmp | grep -q . || die "no private /tmp"
creds=$(vm_ssh root ls /run/credentials/mongo-backup-agent.service)
[[ $creds == azure-connection-string ]] || die "credentials seen by the service: $creds"
[[ $(vm_ssh root stat -c '%a %U %G' /etc/mongo-backup-agent/credentials/azure-connection-string) == "600 root root" ]] \
    || die "credential file mode"
[[ $(vm_ssh root stat -c '%a %U %G' /etc/mongo-backup-agent/config.toml) == "640 root mongo-backup-agent" ]] \
    || die "config.toml mode"
[[ $(vm_ssh root stat -c '%a %U %G' /run/mongo-backup-agent/control.sock) == "660 mongo-backup-agent mongo-backup-trigger" ]] \
    || die "control socket: $(vm_ssh root stat -c '%a %U %G' /run/mongo-backup-agent/control.sock)"
exposure=$(vm_ssh root systemd-analyze security --no-pager mongo-backup-agent.service | sed -n 's/.*exposure level for .*: \([0-9.]*\).*/\1/p')
log "live unit (with the role's drop-in): exposure $exposure"
awk -v l="$exposure" 'BEGIN { exit !(l <= 2.0) }' || die "exposure $exposure > 2.0"
vm_ssh root journalctl -u mongo-backup-agent --no-pager -o cat >"$RUN/journal-start.log"
grep -q 'Started mongo-backup-agent.service' "$RUN/journal-start.log" || die "journal has no start: $(cat "$RUN/journal-start.log")"
ok "active+enabled as mongo-backup-agent, NoNewPrivs, seccomp, no capabilities, read-only /usr and /etc, no /home," \
    "private /dev, 1 credential, socket 0660 group mongo-backup-trigger, exposure $exposure; journal shows the start"

# ---------------------------------------------------------------------------------------------------------------
step "the CronJob kick: ssh as mongo-backup-trigger with the CI key runs a backup"
"$python3" - "$MBA_TEST_MONGODB_URI" <<'PY'
import sys
from pymongo import MongoClient
db = MongoClient(sys.argv[1])["e2e_app"]
db.orders.drop()
db.orders.insert_many([{"_id": i, "item": f"item-{i}", "qty": i % 7} for i in range(2000)])
db.customers.drop()
db.customers.insert_many([{"name": f"c{i}"} for i in range(300)])
PY
before=$(manifests | grep -c . || true)
t0=$SECONDS
set +e
vm_ssh mongo-backup-trigger run-now >"$RUN/kick.out" 2>&1
rc=$?
set -e
((rc == 0)) || die "trigger run-now exited $rc: $(cat "$RUN/kick.out")"
after=$(manifests)
(($(grep -c . <<<"$after") == before + 1)) || die "expected one new manifest in Azurite, have: '$after'"
new_id=$(basename "$(dirname "$(tail -n 1 <<<"$after")")")
ok "ssh mongo-backup-trigger@vm run-now exited 0 in $((SECONDS - t0)) s; Azurite holds $AZ_PREFIX/$new_id/manifest.json"

step "the backup is listed"
vm_ssh root mongo-backup-agent list >"$RUN/list.out" 2>&1 || die "list failed: $(cat "$RUN/list.out")"
grep -qF "$new_id" "$RUN/list.out" || die "list does not show $new_id: $(cat "$RUN/list.out")"
vm_ssh mongo-backup-trigger status >"$RUN/status.out" 2>&1 || die "trigger status failed: $(cat "$RUN/status.out")"
ok "mongo-backup-agent list shows $new_id; trigger status exits 0"

step "ssh without a command is run-now too (issue 5)"
before=$(manifests | grep -c . || true)
set +e
ssh -n -T -F "$RUN/ssh_config" -i "$RUN/keys/ci" -l mongo-backup-trigger vm >"$RUN/kick-empty.out" 2>&1
rc=$?
set -e
((rc == 0)) || die "ssh without a command exited $rc: $(cat "$RUN/kick-empty.out")"
(($(manifests | grep -c .) == before + 1)) || die "ssh without a command stored no backup: $(cat "$RUN/kick-empty.out")"
ok "ssh mongo-backup-trigger@vm (no command) backed up and exited 0"

step "systemctl reload re-reads the config in place"
main_pid=$(vm_ssh root systemctl show -P MainPID mongo-backup-agent)
vm_ssh root systemctl reload mongo-backup-agent || die "systemctl reload failed"
for _ in $(seq 1 50); do
    vm_ssh root journalctl -u mongo-backup-agent --no-pager -o cat | grep -q '^reloaded ' && break
    sleep 0.2
done
vm_ssh root journalctl -u mongo-backup-agent --no-pager -o cat | grep -q '^reloaded ' || die "no 'reloaded' in the journal"
[[ $(vm_ssh root systemctl is-active mongo-backup-agent) == active ]] || die "service not active after reload"
[[ $(vm_ssh root systemctl show -P MainPID mongo-backup-agent) == "$main_pid" ]] || die "reload restarted the daemon"
ok "systemctl reload: the daemon (PID $main_pid) logged 'reloaded' and kept running"

# ---------------------------------------------------------------------------------------------------------------
step "the same key can do nothing else"
refused() { # refused DESCRIPTION WANT_RC SSH-ARGS...
    local what=$1 want=$2 rc; shift 2
    set +e
    ssh -n -F "$RUN/ssh_config" -i "$RUN/keys/${KEY:-ci}" -l mongo-backup-trigger "$@" >"$RUN/refused.out" 2>&1
    rc=$?
    set -e
    [[ $rc == "$want" ]] || die "$what: exit $rc, want $want: $(cat "$RUN/refused.out")"
    ! grep -q 'uid=' "$RUN/refused.out" || die "$what: a command ran: $(cat "$RUN/refused.out")"
}
refused "a forbidden command" 2 vm id
# restrict: no terminal, and no port forwarding, so the key can be neither a shell nor a tunnel into the network.
refused "a terminal" 255 -tt vm
refused "a command dressed as an argument" 2 vm 'run-now; id'
refused "a port forward" 255 -o ExitOnForwardFailure=yes -W "127.0.0.1:$PORT" vm
# A key that is not in authorized_keys is refused outright.
KEY=stranger refused "an unknown key" 255 vm run-now
ok "forbidden command, injected command (exit 2), terminal, port forwarding and an" \
    "unknown key (exit 255) all refused"

# ---------------------------------------------------------------------------------------------------------------
# The backups below must still be running when the test acts on them: 160 MiB of random bytes (nothing to compress)
# at zstd level 19 on one thread take a while.
"$python3" - "$MBA_TEST_MONGODB_URI" "$BIG_DB" <<'PY'
import os, sys
from bson.binary import Binary
from pymongo import MongoClient
coll = MongoClient(sys.argv[1])[sys.argv[2]]["blobs"]
coll.drop()
for batch in range(20):
    coll.insert_many([{"_id": batch * 500 + i, "data": Binary(os.urandom(16 * 1024))} for i in range(500)])
PY
ids() { awk -F/ 'NF > 1 {print $(NF-1)}' | sort -u; }
kick_id="" kick_pid=""
kick_until_uploading() { # kick_until_uploading NAME: kicks a backup over SSH in the background (output in
    # $RUN/kick-NAME.out); returns once its archive is being uploaded (blocks staged, not committed yet), with its id
    # in kick_id and the ssh client's PID in kick_pid
    local known
    known=$(manifests | ids)
    vm_ssh mongo-backup-trigger run-now >"$RUN/kick-$1.out" 2>&1 &
    kick_pid=$!
    kick_id=""
    for _ in $(seq 1 300); do
        kick_id=$(blobs uncommitted | ids | grep -vxF -f <(echo "$known") | head -n 1 || true)
        [[ -n $kick_id ]] && return
        kill -0 "$kick_pid" 2>/dev/null || break
        sleep 0.2
    done
    die "never saw the $1 backup upload (kick: $(cat "$RUN/kick-$1.out"))"
}
kick_result() { # kick_result NAME: waits for the kick and checks it succeeded with a manifest for kick_id
    local rc=0
    wait "$kick_pid" || rc=$?
    ((rc == 0)) || die "the $1 backup failed (exit $rc): $(cat "$RUN/kick-$1.out")"
    manifests | grep -qF "/$kick_id/manifest.json" || die "no manifest for the $1 backup $kick_id"
}
set_var() { # set_var NAME JSON: changes one role variable for the following playbook runs
    "$python3" - "$RUN/vars.json" "$1" "$2" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
v[sys.argv[2]] = json.loads(sys.argv[3])
json.dump(v, open(sys.argv[1], "w"), indent=1)
PY
}
agent() { vm_ssh root systemctl show -P "$1" mongo-backup-agent; }
wait_restarted() { # wait_restarted OLD_PID: waits until the agent restarted itself (exit 75, then RestartSec=10s)
    for _ in $(seq 1 150); do
        [[ $(agent MainPID) != "$1" && $(vm_ssh root systemctl is-active mongo-backup-agent) == active ]] && return
        sleep 0.2
    done
    die "the agent (PID $1) did not restart: $(vm_ssh root systemctl status --no-pager mongo-backup-agent)"
}

step "a config change through the role during a backup reloads the agent; the backup completes"
main_pid=$(agent MainPID)
restarts=$(agent NRestarts)
kick_until_uploading reload
set_var mongo_backup_agent_retention '{"keep_last": 100, "keep_hourly": 48, "keep_daily": 8}'
playbook reconfigure
grep -q 'RUNNING HANDLER \[mongo_backup_agent : Reload mongo-backup-agent\]' "$RUN/reconfigure.log" \
    || die "the role did not reload the agent: $(grep HANDLER "$RUN/reconfigure.log")"
kick_result reload
[[ $(agent MainPID) == "$main_pid" && $(agent NRestarts) == "$restarts" ]] \
    || die "the agent restarted (PID $main_pid -> $(agent MainPID), restarts $restarts -> $(agent NRestarts))"
vm_ssh root grep -qx 'keep_daily = 8' /etc/mongo-backup-agent/config.toml || die "config.toml not rewritten"
vm_ssh root journalctl -u mongo-backup-agent --no-pager -o cat >"$RUN/journal-reconfigure.log"
# The reload has to land while the backup runs, or this step shows nothing.
line_of() { # line_of REGEX [AFTER]: the number of the first journal line after line AFTER matching REGEX
    awk -v after="${2:-0}" -v re="$1" 'NR > after && $0 ~ re {print NR; exit}' "$RUN/journal-reconfigure.log"
}
started_at=$(line_of "^backup $kick_id started")
reloaded_at=$(line_of '^reloaded ' "${started_at:-0}")
done_at=$(line_of "^backup $kick_id complete")
if ! [[ -n $started_at && -n $reloaded_at && -n $done_at ]] || ((reloaded_at > done_at)); then
    die "no reload between the start and the end of $kick_id (journal lines $started_at/$reloaded_at/$done_at)"
fi
! grep -q 'cancelling' "$RUN/journal-reconfigure.log" || die "a backup was cancelled"
ok "role run mid-backup: handler reloaded the agent (PID $main_pid kept, NRestarts $restarts), backup $kick_id completed"

step "a change that needs a new process waits for the running backup"
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
kick_until_uploading restart
set_var mongo_backup_agent_metrics "{\"listen\": \"127.0.0.1:$metrics_port\"}"
playbook relisten
kick_result restart
wait_restarted "$main_pid"
new_pid=$(agent MainPID)
[[ $(agent NRestarts) == $((restarts + 1)) ]] || die "NRestarts $(agent NRestarts), want $((restarts + 1))"
vm_ssh root journalctl -u mongo-backup-agent --no-pager -o cat >"$RUN/journal-relisten.log"
grep -q "metrics.listen changed: restarting once backup $kick_id finishes" "$RUN/journal-relisten.log" \
    || die "the agent did not say it waits for $kick_id"
python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).read()' \
    "http://127.0.0.1:$metrics_port/metrics" || die "no metrics on the new listener"
restarts=$((restarts + 1))
ok "metrics.listen changed mid-backup: $kick_id completed, then the agent restarted itself (PID $main_pid ->" \
    "$new_pid) and serves metrics on :$metrics_port"

step "systemctl stop during a backup leaves no manifest"
before=$(manifests | sort)
kick_until_uploading stopped
stopped_id=$kick_id
t0=$SECONDS
vm_ssh root systemctl stop mongo-backup-agent
stop_secs=$((SECONDS - t0))
set +e
wait "$kick_pid"
kick_rc=$?
set -e
((kick_rc != 0)) || die "the interrupted trigger exited 0"
result=$(vm_ssh root systemctl show -P Result mongo-backup-agent)
[[ $result == success ]] || die "service stop result '$result' (want a clean exit, not a timeout or kill)"
after=$(manifests | sort)
[[ $after == "$before" ]] || die "manifests changed by the stopped backup: $after"
! grep -qF "/$stopped_id/manifest.json" <<<"$after" || die "stopped backup $stopped_id has a manifest"
leftover=$(blobs | grep -F "/$stopped_id/" || true)
log "stopped backup $stopped_id: committed blobs left: ${leftover:-none}"
vm_ssh root mongo-backup-agent list >"$RUN/list2.out" 2>&1 || true
! grep -qF "$stopped_id" "$RUN/list2.out" || die "list shows the stopped backup"
vm_ssh root systemctl start mongo-backup-agent
# A start by hand may reset the count: "restarted by itself" below means since this start.
restarts=$(agent NRestarts)
"$python3" -c 'import sys; from pymongo import MongoClient; MongoClient(sys.argv[1]).drop_database(sys.argv[2])' \
    "$MBA_TEST_MONGODB_URI" "$BIG_DB"
ok "stop took $stop_secs s with a clean exit; the trigger got exit $kick_rc; no manifest for $stopped_id"

# ---------------------------------------------------------------------------------------------------------------
step "a second role run changes nothing"
playbook rerun
[[ $(recap rerun changed) == 0 ]] || { grep -E '^changed:' "$RUN/rerun.log" >&2; die "second run changed $(recap rerun changed)"; }
playbook check-again --check
[[ $(recap check-again changed) == 0 ]] || die "check mode on the deployed VM would change $(recap check-again changed)"
[[ $(vm_ssh root systemctl is-active mongo-backup-agent) == active ]] || die "service not active after rerun"
# The service has been up for a while now: a daemon that forgot its WATCHDOG=1 pings would have been killed.
vm_ssh root journalctl -u mongo-backup-agent --no-pager -o cat >"$RUN/journal-rerun.log"
! grep -q 'Watchdog timeout' "$RUN/journal-rerun.log" || die "the watchdog killed the agent"
[[ $(agent NRestarts) == "$restarts" ]] || die "the service restarted by itself"
ok "second run changed=0, check mode changed=0; no watchdog timeout, no restart"

# ---------------------------------------------------------------------------------------------------------------
step "secrets without LoadCredential= (how systemd 237 on Ubuntu 18.04 gets them) work too"
main_pid=$(agent MainPID)
playbook directory-credentials -e mongo_backup_agent_credentials=directory
# A new drop-in needs a new process: the agent, idle, restarts itself at once.
wait_restarted "$main_pid"
vm_ssh root grep -qx 'Environment=CREDENTIALS_DIRECTORY=/etc/mongo-backup-agent/credentials' \
    /etc/systemd/system/mongo-backup-agent.service.d/ansible.conf || die "drop-in does not point at the directory"
[[ $(vm_ssh root stat -c '%a %U %G' /etc/mongo-backup-agent/credentials/azure-connection-string) == "640 root mongo-backup-agent" ]] \
    || die "credential file mode in directory mode"
[[ $(vm_ssh root systemctl is-active mongo-backup-agent) == active ]] || die "service not active in directory mode"
before=$(manifests | grep -c . || true)
vm_ssh mongo-backup-trigger run-now >"$RUN/kick-dir.out" 2>&1 || die "run-now in directory mode: $(cat "$RUN/kick-dir.out")"
(($(manifests | grep -c .) == before + 1)) || die "no new manifest in directory mode"
ok "with mongo_backup_agent_credentials=directory the agent reads its secret from the 0640 files and backs up"

# ---------------------------------------------------------------------------------------------------------------
step "purge removes the package, its configuration and the secrets"
vm_ssh root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q mongo-backup-agent >"$RUN/purge.log" 2>&1 \
    || die "purge failed: $(tail -n 20 "$RUN/purge.log")"
[[ $(vm_ssh root systemctl is-active mongo-backup-agent || true) != active ]] || die "service still active"
vm_ssh root sh -c '! test -e /etc/mongo-backup-agent && ! test -e /usr/bin/mongo-backup-agent' \
    || die "files left after purge: $(vm_ssh root ls -R /etc/mongo-backup-agent)"
vm_ssh root getent passwd mongo-backup-agent >/dev/null || die "purge removed the system user"
ok "purge stopped the service and removed /etc/mongo-backup-agent (credentials included); the users stay"

log "e2e done in $((SECONDS - started)) s"
echo "$passed passed, 0 failed"
