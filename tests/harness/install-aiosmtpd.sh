#!/usr/bin/env bash
# Installs aiosmtpd (an SMTP server in Python) once into a venv in the cache dir; prints that venv's python, with
# which the notification tests run tests/harness/smtp-sink.py to receive the agent's e-mail on loopback.
set -euo pipefail
CACHE="${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}"
VERSION="1.4.6"
DIR="$CACHE/aiosmtpd-$VERSION"
PY="$DIR/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c 'import aiosmtpd' 2>/dev/null; then
  rm -rf "$DIR"
  # Debian ships venv's pip bootstrap (ensurepip) separately, in python3-venv: install it when a venv fails.
  if ! python3 -m venv "$DIR" >&2; then
    rm -rf "$DIR"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >&2
    python3 -m venv "$DIR" >&2
  fi
  "$DIR/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$VERSION" >&2
fi
echo "$PY"
