#!/usr/bin/env bash
# Checks the .deb that `make deb` builds (or the one given as $1): lintian clean at error and warning level (warnings
# only silenced by the commented packaging/debian/lintian-overrides), no symbol newer than GLIBC_2.27 so it runs on
# Ubuntu 18.04, Depends that 18.04 can satisfy, the files and modes the package promises, and the packaged unit
# verified and rated against the packaged binary.
set -euo pipefail
LOG_TAG=check-deb
# shellcheck source=tests/vm/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

need_apt lintian binutils systemd dpkg-dev man-db procps
MAX_GLIBC=2.27
MAX_EXPOSURE=2.0

deb=${1:-}
if [[ -z $deb ]]; then
    deb=$(bash packaging/build-deb.sh | tail -n 1)
fi
[[ -f $deb ]] || die "no package at '$deb'"
log "checking $deb"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

dpkg-deb -x "$deb" "$work/pkg"
dpkg-deb -e "$deb" "$work/control"
bin=$work/pkg/usr/bin/mongo-backup-agent
crate_version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)

check_lintian() {
    # lintian warns that it runs as root; that line is not a finding.
    lintian --fail-on error,warning --display-level '>=warning' "$deb" 2>&1 | grep -v 'running with root privileges'
    return "${PIPESTATUS[0]}"
}
check_glibc() {
    local newest
    newest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    echo "newest GLIBC symbol version: $newest (limit $MAX_GLIBC)"
    log "binary needs GLIBC_$newest at most"
    [[ $(printf '%s\n%s\n' "$newest" "$MAX_GLIBC" | sort -V | tail -n 1) == "$MAX_GLIBC" ]] || {
        objdump -T "$bin" | grep -E "GLIBC_$newest" | head; return 1; }
}
check_needed_libs() { # only libraries every glibc system has; libgcc_s is covered by Depends
    local lib bad=0
    for lib in $(objdump -p "$bin" | awk '/NEEDED/ {print $2}'); do
        case $lib in
            libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1 | ld-linux-x86-64.so.2) ;;
            libgcc_s.so.1) grep -q 'libgcc1' "$work/control/control" || { echo "needs $lib, Depends lacks libgcc1"; bad=1; } ;;
            *) echo "unexpected shared library: $lib"; bad=1 ;;
        esac
    done
    return $bad
}
check_depends() { # every libc6 (>= X) in Depends must be satisfiable by Ubuntu 18.04's 2.27
    local depends v
    depends=$(sed -n 's/^Depends: //p' "$work/control/control")
    echo "Depends: $depends"
    v=$(sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p' <<<"$depends")
    [[ -n $v ]] || { echo "no libc6 (>= X) dependency"; return 1; }
    [[ $(printf '%s\n%s\n' "$v" "$MAX_GLIBC" | sort -V | tail -n 1) == "$MAX_GLIBC" ]] || { echo "libc6 >= $v"; return 1; }
    ! grep -qE 'libgcc-s1($|,)' <<<"$depends" || grep -q 'libgcc1' <<<"$depends" || { echo "libgcc-s1 alone: not on 18.04"; return 1; }
    grep -qE '(^|, )ca-certificates($|,)' <<<"$depends" || { echo "no ca-certificates: the HTTPS client finds no CA roots"; return 1; }
}
check_compression() { # Ubuntu 18.04's dpkg (1.19) reads gzip and xz members, not zstd
    local members
    members=$(ar t "$deb" | tr '\n' ' ')
    echo "members: $members"
    [[ $members =~ ^debian-binary\ control\.tar\.(gz|xz)\ data\.tar\.(gz|xz)\ $ ]]
}
check_binary_runs() {
    local out
    out=$("$bin" --version)
    echo "$out"
    grep -qF "$crate_version" <<<"$out"
}
check_contents() {
    local bad=0 f
    want_mode() { # want_mode MODE PATH
        local m
        m=$(dpkg-deb -c "$deb" | awk -v p="./$2" '$NF == p {print $1}')
        [[ $m == "$1" ]] || { echo "$2: mode '$m', want $1"; bad=1; }
    }
    want_mode -rwxr-xr-x usr/bin/mongo-backup-agent
    want_mode -rw-r----- etc/mongo-backup-agent/config.toml
    want_mode -rw-r--r-- usr/lib/systemd/system/mongo-backup-agent.service
    want_mode -rw-r--r-- usr/share/man/man1/mongo-backup-agent.1.gz
    want_mode -rw-r--r-- usr/share/bash-completion/completions/mongo-backup-agent
    want_mode -rw-r--r-- usr/share/zsh/vendor-completions/_mongo-backup-agent
    want_mode -rw-r--r-- usr/share/fish/vendor_completions.d/mongo-backup-agent.fish
    want_mode -rw-r--r-- usr/share/doc/mongo-backup-agent/changelog.Debian.gz
    want_mode -rw-r--r-- usr/share/doc/mongo-backup-agent/copyright
    grep -qx /etc/mongo-backup-agent/config.toml "$work/control/conffiles" || { echo "config.toml is not a conffile"; bad=1; }
    cmp "$work/pkg/etc/mongo-backup-agent/config.toml" packaging/config.example.toml || bad=1
    cmp "$work/pkg/usr/lib/systemd/system/mongo-backup-agent.service" systemd/mongo-backup-agent.service || bad=1
    for f in postinst postrm prerm; do [[ -x $work/control/$f ]] || { echo "no $f"; bad=1; }; done
    grep -q 'adduser --system' "$work/control/postinst" || { echo "postinst creates no user"; bad=1; }
    return $bad
}
check_man_page() { # renders without groff warnings and documents the daemon and the trigger
    local text
    text=$(MANWIDTH=100 man --warnings -l "$work/pkg/usr/share/man/man1/mongo-backup-agent.1.gz" 2>"$work/man.err")
    [[ ! -s $work/man.err ]] || { cat "$work/man.err"; return 1; }
    if ! grep -q 'serve' <<<"$text" || ! grep -q 'trigger' <<<"$text"; then echo "man page lacks serve/trigger"; return 1; fi
}
check_completions() {
    grep -q 'mongo-backup-agent' "$work/pkg/usr/share/bash-completion/completions/mongo-backup-agent" &&
        bash -n "$work/pkg/usr/share/bash-completion/completions/mongo-backup-agent" &&
        grep -q 'run-now' "$work/pkg/usr/share/bash-completion/completions/mongo-backup-agent"
}
check_packaged_unit() { # against the packaged binary, in a root with the host's units
    local root=$work/root out level
    mkdir -p "$root/usr/lib/systemd"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    cp -a "$work/pkg/." "$root/"
    install -D -m 755 /bin/kill "$root/bin/kill" # ExecReload=
    out=$(systemd-analyze verify --root="$root" --man=no mongo-backup-agent.service 2>&1) || { echo "$out"; return 1; }
    [[ -z $out ]] || { echo "$out"; return 1; }
    out=$(systemd-analyze security --offline=yes --no-pager --root="$root" mongo-backup-agent.service 2>&1) || true
    level=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' <<<"$out")
    echo "exposure $level"
    [[ -n $level ]] && awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l <= m) }'
}

check "lintian --fail-on error,warning" check_lintian
check "objdump -T: no GLIBC symbol newer than $MAX_GLIBC" check_glibc
check "shared libraries present on any glibc system" check_needed_libs
check "Depends installable on Ubuntu 18.04" check_depends
check "archive members readable by Ubuntu 18.04's dpkg" check_compression
check "packaged binary runs and reports $crate_version" check_binary_runs
check "contents, modes and conffile" check_contents
check "man page renders cleanly" check_man_page
check "shell completions" check_completions
check "packaged unit: verify silent, exposure <= $MAX_EXPOSURE" check_packaged_unit

checks_summary
