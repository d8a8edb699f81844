#!/usr/bin/env bash
# Installs aiosmtpd (an SMTP server in Python) once into a venv in the cache dir; prints that venv's python, which
# the notification tests run as `python -m aiosmtpd` to receive the agent's e-mail on loopback.
set -euo pipefail
CACHE="${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}"
VERSION="1.4.6"
DIR="$CACHE/aiosmtpd-$VERSION"
PY="$DIR/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c 'import aiosmtpd' 2>/dev/null; then
  rm -rf "$DIR"
  # Debian ships venv (and the pip it bootstraps) separately from python3.
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >&2
  fi
  python3 -m venv "$DIR" >&2
  "$DIR/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==$VERSION" >&2
fi
echo "$PY"
