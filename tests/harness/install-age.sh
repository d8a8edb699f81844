#!/usr/bin/env bash
# Installs Debian's `age` CLI (and zstd) if missing: the independent peer of the encryption tests (tests/encryption.rs
# decrypts what the agent wrote with `age -d`, and restores what `age -e` encrypted). Prints the path of `age`.
set -euo pipefail
if ! command -v age >/dev/null || ! command -v age-keygen >/dev/null || ! command -v zstd >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age zstd) >&2
fi
command -v age
