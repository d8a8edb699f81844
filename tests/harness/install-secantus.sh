#!/usr/bin/env bash
# Installs the SecantusDB server (secantusd-rs) used as the MongoDB-compatible test server.
# Built once into a cache directory outside the work tree and reused by later runs.
set -euo pipefail
CACHE="${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}"
VERSION="0.5.3-beta.196"
BIN="$CACHE/secantus-$VERSION/bin/secantusd-rs"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
if ! command -v cmake >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake) >&2
fi
mkdir -p "$CACHE"
cargo install secantus-mdb --version "$VERSION" --locked --ignore-rust-version \
  --root "$CACHE/secantus-$VERSION" >&2
echo "$BIN"
