#!/usr/bin/env bash
# Finds the stock MongoDB Database Tools 100.18.0 (mongodump, mongorestore, bsondump) the compatibility tests and
# `make bench` compare us with, checks them against their SHA256SUMS, caches them outside the work tree and prints
# the cached directory. Looked for in $MBA_MONGO_TOOLS_DIR when set (only there), else in
# <repo>/../shared/tools/mongo-tools, then in the cache (so a clone elsewhere on this machine still finds them). Missing or damaged tools fail loudly: no test is skipped.
# Also installs the zstd command line (apt) when missing: the tests pipe our zstd archive through `zstd -dc`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}"
VERSION="100.18.0"
CACHED="$CACHE/mongo-tools-$VERSION"
TOOLS=(mongodump mongorestore bsondump)

# A directory holding every tool and a SHA256SUMS that all of them (and nothing else) pass.
verified() {
  local dir="$1" tool
  [ -f "$dir/SHA256SUMS" ] || return 1
  for tool in "${TOOLS[@]}"; do
    [ -x "$dir/$tool" ] && grep -q " \*\?$tool\$" "$dir/SHA256SUMS" || return 1
  done
  (cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS >&2)
}

# A directory named explicitly is the only one looked at: falling back would test other tools than asked for.
if [ -n "${MBA_MONGO_TOOLS_DIR:-}" ]; then
  candidates=("$MBA_MONGO_TOOLS_DIR")
else
  candidates=("$here/../../../shared/tools/mongo-tools" "$CACHED")
fi

found=""
for dir in "${candidates[@]}"; do
  if [ -d "$dir" ] && verified "$dir"; then found="$(cd "$dir" && pwd)"; break; fi
  if [ -d "$dir" ]; then echo "install-mongo-tools: $dir: missing tools or checksum mismatch, ignored" >&2; fi
done
if [ -z "$found" ]; then
  cat >&2 <<EOF
error: the stock MongoDB Database Tools $VERSION (mongodump, mongorestore, bsondump with their SHA256SUMS) were not
found or failed their checksums; looked in: ${candidates[*]}.
Get them from the public repository mongodb/mongo-tools, tag $VERSION (the official release archive, or built from
source as ../shared/tools/mongo-tools/README.md describes), put the binaries and a SHA256SUMS of them in one directory
and point MBA_MONGO_TOOLS_DIR at it.
EOF
  exit 1
fi

# Refresh the cache unless it already holds exactly these tools (same SHA256SUMS, verified above or now).
if ! { cmp -s "$found/SHA256SUMS" "$CACHED/SHA256SUMS" && verified "$CACHED"; }; then
  mkdir -p "$CACHE"
  tmp="$(mktemp -d "$CACHE/.mongo-tools.XXXXXX")"
  cp "$found/SHA256SUMS" "${TOOLS[@]/#/$found/}" "$tmp/"
  for extra in LICENSE.md THIRD-PARTY-NOTICES README.md; do
    if [ -f "$found/$extra" ]; then cp "$found/$extra" "$tmp/"; fi
  done
  chmod -R u+w "$tmp"
  verified "$tmp"
  rm -rf "$CACHED"
  mv "$tmp" "$CACHED"
fi

if ! command -v zstd >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd) >&2
fi
echo "$CACHED"
