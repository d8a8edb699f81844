#!/usr/bin/env bash
# Installs Azurite (the Azure Storage emulator) once into the cache dir; prints the azurite-blob path.
set -euo pipefail
CACHE="${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}"
VERSION="3.35.0"
DIR="$CACHE/azurite-$VERSION"
BIN="$DIR/node_modules/.bin/azurite-blob"
if [ ! -x "$BIN" ]; then
  mkdir -p "$DIR"
  (cd "$DIR" && npm install --silent --no-audit --no-fund "azurite@$VERSION") >&2
fi
echo "$BIN"
