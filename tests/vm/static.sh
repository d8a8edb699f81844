#!/usr/bin/env bash
# Static checks of the deployment pieces, no binary and no VM needed: the systemd unit (systemd-analyze verify prints
# nothing; systemd-analyze security rates it 2.0 or better; the hardening the issue asks for is there), shell scripts
# (shellcheck), the Debian changelog's version, the Ansible role (syntax, ansible-lint) and what its templates render
# (valid TOML, valid unit drop-in, restricted authorized_keys).
set -euo pipefail
LOG_TAG=static
# shellcheck source=tests/vm/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

need_apt systemd shellcheck dpkg-dev python3 iproute2 procps
need_vm_venv

UNIT=systemd/mongo-backup-agent.service
MAX_EXPOSURE=2.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A root holding the host's units (sysinit.target & co.), a stand-in for the binary and our unit: systemd-analyze
# verify resolves ExecStart= and dependencies inside it. The real binary is verified by tests/vm/check-deb.sh.
unit_root() { # unit_root DIR [DROPIN]
    local root=$1
    mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    printf '#!/bin/sh\nexit 0\n' >"$root/usr/bin/mongo-backup-agent"
    chmod 755 "$root/usr/bin/mongo-backup-agent"
    cp "$UNIT" "$root/usr/lib/systemd/system/"
    install -D -m 755 /bin/kill "$root/bin/kill" # ExecReload=
    if [[ -n ${2:-} ]]; then
        mkdir -p "$root/etc/systemd/system/mongo-backup-agent.service.d"
        cp "$2" "$root/etc/systemd/system/mongo-backup-agent.service.d/ansible.conf"
    fi
}
verify_unit() { # verify_unit ROOT: systemd-analyze verify exits 0 even on warnings, so any output is a failure
    local out
    out=$(systemd-analyze verify --root="$1" --man=no mongo-backup-agent.service 2>&1) || { echo "$out"; return 1; }
    [[ -z $out ]] || { echo "$out"; return 1; }
}
check_unit_verify() { unit_root "$work/root"; verify_unit "$work/root"; }
check_unit_security() {
    local out level
    out=$(systemd-analyze security --offline=yes --no-pager "$UNIT" 2>&1) || true
    level=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' <<<"$out")
    [[ -n $level ]] || { echo "$out"; return 1; }
    echo "exposure $level (limit $MAX_EXPOSURE)"
    log "systemd-analyze security: exposure level $level"
    awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l <= m) }' || { grep '✗' <<<"$out"; return 1; }
}
check_unit_directives() { # the hardening issue 6 names, each must stay even if the score allowed dropping it
    local want=(
        'Type=notify' 'User=mongo-backup-agent' 'StateDirectory=mongo-backup-agent'
        'RuntimeDirectory=mongo-backup-agent' 'Restart=on-failure' 'WatchdogSec=' 'TimeoutStopSec='
        # the trigger user (group mongo-backup-trigger) must traverse the directory to reach the socket
        'RuntimeDirectoryMode=0711'
        "ExecReload=/bin/kill -HUP \$MAINPID" # SIGHUP reloads the config
        # exit 75 (the daemon restarting itself once idle) is a restart, not a failure
        'SuccessExitStatus=75' 'RestartForceExitStatus=75'
        'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' 'NoNewPrivileges=yes'
        'CapabilityBoundingSet=$' 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6'
        'SystemCallFilter=@system-service' 'MemoryDenyWriteExecute=yes'
    )
    local absent=0 d
    for d in "${want[@]}"; do grep -q "^$d" "$UNIT" || { echo "missing: $d"; absent=1; }; done
    return $absent
}
check_shellcheck() {
    shellcheck -x packaging/*.sh packaging/debian/postinst packaging/debian/postrm tests/vm/*.sh
}
check_changelog_version() { # the .deb is <crate version>-1; lintian wants the changelog to say the same
    local crate deb
    crate=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
    deb=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
    [[ $deb == "$crate-1" ]] || { echo "packaging/debian/changelog says $deb, Cargo.toml $crate (want $crate-1)"; return 1; }
}
check_ansible_syntax() {
    (cd ansible && ansible-playbook -i inventory.example.ini site.yml --syntax-check)
}
check_ansible_lint() {
    (cd ansible && offline ansible-lint --offline --nocolor)
}
render() { # render OUTDIR LOAD_CREDENTIAL VARSFILE [ANSIBLE-PLAYBOOK ARGS...]
    mkdir -p "$1"
    ansible-playbook -i localhost, tests/vm/render-templates.yml -e "out=$1" -e "load_credential=$2" -e "@$3" "${@:4}"
}
check_templates() {
    cat >"$work/vars.yml" <<'VARS'
mongo_backup_agent_mongodb: {uri: "mongodb://backup@127.0.0.1:27017/?authSource=admin"}
mongo_backup_agent_backup: {compression: gzip, include: ["app.*"], exclude: ["app.cache"]}
mongo_backup_agent_storage: {kind: azure, account: "st\"quoted", container: backups, prefix: prod,
                             auth: connection-string, endpoint: null}
mongo_backup_agent_retention: {keep_hourly: 24, keep_daily: 7}
mongo_backup_agent_secrets: {azure-connection-string: "x", mongodb-password: "y"}
mongo_backup_agent_read_write_paths: [/srv/extra]
mongo_backup_agent_trigger_keys:
  - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA plain"
  - {key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB withfrom ", from: ["10.0.0.0/8", "192.0.2.1"]}
mongo_backup_agent_trigger_from: ["203.0.113.0/24"]
mongo_backup_agent_cluster: {enabled: true, priority: 0.5, lease_duration: "30s"}
VARS
    local mode
    for mode in true false; do
        render "$work/r-$mode" "$mode" "$work/vars.yml" || return 1
        python3 - "$work/r-$mode/config.toml" <<'PY' || return 1
import sys, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
assert set(cfg) == {"mongodb", "backup", "storage", "retention", "cluster"}, cfg
# member defaults to the inventory_hostname (localhost when rendering on the controller)
assert cfg["cluster"] == {"enabled": True, "member": "localhost", "priority": 0.5, "lease_duration": "30s"}, cfg
assert cfg["storage"] == {"kind": "azure", "account": 'st"quoted', "container": "backups", "prefix": "prod",
                          "auth": "connection-string"}, cfg["storage"]
assert cfg["backup"]["include"] == ["app.*"] and cfg["retention"]["keep_daily"] == 7, cfg
PY
        rm -rf "$work/root"
        unit_root "$work/root" "$work/r-$mode/ansible.conf"
        # LoadCredential= sources must exist for systemd to accept them: give it the files the role would write.
        mkdir -p "$work/root/etc/mongo-backup-agent/credentials" "$work/root/srv/extra"
        touch "$work/root/etc/mongo-backup-agent/credentials/"{azure-connection-string,mongodb-password}
        verify_unit "$work/root" || return 1
    done
    grep -qx 'LoadCredential=azure-connection-string:/etc/mongo-backup-agent/credentials/azure-connection-string' \
        "$work/r-true/ansible.conf" || { cat "$work/r-true/ansible.conf"; return 1; }
    ! grep -q "^LoadCredential" "$work/r-false/ansible.conf" || { cat "$work/r-false/ansible.conf"; return 1; }
    grep -qx 'Environment=CREDENTIALS_DIRECTORY=/etc/mongo-backup-agent/credentials' "$work/r-false/ansible.conf" \
        || { cat "$work/r-false/ansible.conf"; return 1; }
    local keys=$work/r-true/authorized_keys want
    want='restrict,from="203.0.113.0/24",command="/usr/bin/mongo-backup-agent trigger" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA plain
restrict,from="10.0.0.0/8,192.0.2.1",command="/usr/bin/mongo-backup-agent trigger" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB withfrom'
    [[ $(grep -v '^#' "$keys") == "$want" ]] || { cat "$keys"; return 1; }
}

check_example_inventory() { # the example inventory's variables render a config the agent's sections accept
    (cd ansible && ansible-inventory -i inventory.example.ini --host mongodb-prod-1) >"$work/example-vars.json"
    render "$work/r-example" true "$work/example-vars.json" >/dev/null
    python3 - "$work/r-example/config.toml" <<'PY'
import sys, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
assert cfg["storage"]["kind"] == "azure" and cfg["storage"]["auth"] == "managed-identity", cfg
assert set(cfg) <= {"mongodb", "backup", "storage", "retention", "schedule", "notify", "metrics", "daemon",
                    "restore"}, cfg
PY
    grep -q '^restrict,from="10.240.0.0/16",command="/usr/bin/mongo-backup-agent trigger" ssh-ed25519 ' \
        "$work/r-example/authorized_keys" || { cat "$work/r-example/authorized_keys"; return 1; }
}

check_replicaset_inventory() { # every member of the example replica set renders its own [cluster] section
    local host
    for host in mongo-1 mongo-2 mongo-3; do
        (cd ansible && ansible-inventory -i inventory.replicaset.example.yml --host "$host") >"$work/rs-$host.json"
        # Rendered as that host would be: the role names the member after its inventory_hostname.
        render "$work/rs-$host" true "$work/rs-$host.json" -e "inventory_hostname=$host" >/dev/null || return 1
        python3 - "$work/rs-$host/config.toml" "$host" <<'PY' || return 1
import sys, tomllib
cfg, host = tomllib.load(open(sys.argv[1], "rb")), sys.argv[2]
want = {"enabled": True, "member": host, "lease_duration": "15s", "poll_interval": "2s"}
if host == "mongo-3":
    want = {"enabled": True, "member": host, "priority": 2.0}
assert cfg["cluster"] == want, cfg["cluster"]
assert cfg["mongodb"]["uri"].endswith("?directConnection=true") and cfg["pitr"] == {"enabled": True}, cfg
PY
    done
}

check_member_names() { # the role refuses two hosts of a play under one member name, and accepts distinct ones
    python3 - ansible/roles/mongo_backup_agent/tasks/main.yml "$work/member-tasks.yml" <<'PY' || return 1
import sys, yaml
tasks = yaml.safe_load(open(sys.argv[1]))
wanted = [t for t in tasks if "member" in t["name"] and "replica set" in t["name"]]
assert len(wanted) == 2, [t["name"] for t in tasks]
yaml.safe_dump(wanted, open(sys.argv[2], "w"))
PY
    local run=(ansible-playbook -i "m1,m2,m3," tests/vm/check-member-names.yml -e "tasks_file=$work/member-tasks.yml")
    "${run[@]}" -e '{"mongo_backup_agent_cluster": {"enabled": true}}' >"$work/names-ok.log" 2>&1 \
        || { cat "$work/names-ok.log"; return 1; }
    if "${run[@]}" -e '{"mongo_backup_agent_cluster": {"enabled": true, "member": "same"}}' \
        >"$work/names-dup.log" 2>&1; then
        echo "three hosts named 'same' were accepted"; return 1
    fi
    grep -q "mongo_backup_agent_cluster.member 'same' is empty or used by more than one host" "$work/names-dup.log" \
        || { cat "$work/names-dup.log"; return 1; }
}

check "systemd-analyze verify prints nothing" check_unit_verify
check "systemd-analyze security <= $MAX_EXPOSURE" check_unit_security
check "unit keeps the required hardening" check_unit_directives
check "shellcheck" check_shellcheck
check "changelog version matches Cargo.toml" check_changelog_version
check "ansible-playbook --syntax-check" check_ansible_syntax
check "ansible-lint (production profile)" check_ansible_lint
check "role templates: TOML, unit drop-in, authorized_keys" check_templates
check "example inventory renders a valid config" check_example_inventory
check "replica-set example inventory renders each member's [cluster]" check_replicaset_inventory
check "role refuses two replica-set members under one name" check_member_names

checks_summary
