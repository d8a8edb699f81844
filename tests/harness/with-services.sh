#!/usr/bin/env bash
# Runs a command with the real test services up: a MongoDB-compatible server (SecantusDB, unless
# MBA_TEST_MONGODB_URI already points at a real mongod) and Azurite. Installs them on first use, starts each on a
# free 127.0.0.1 port with fresh storage, exports where they are, and stops them when the command ends.
#
# Exports: MBA_TEST_MONGODB_URI, MBA_TEST_MONGODB_PID (when it started the server: the bench counts its CPU),
#          MBA_SECANTUSD (binary, for tests that need a server of their own to stop),
#          MBA_AZURITE_BLOB (binary), MBA_TEST_AZURITE_BLOB_ENDPOINT (http://127.0.0.1:PORT/devstoreaccount1),
#          MBA_MONGO_TOOLS_DIR (stock mongodump/mongorestore/bsondump 100.18.0, checksums verified: the
#          compatibility tests and the bench's peer rows run them),
#          MBA_TEST_SMTP_PYTHON (a python with aiosmtpd: the notification tests start tests/harness/smtp-sink.py
#          with it, one sink per test, plain or with STARTTLS or SMTPS and a certificate of their own),
#          MBA_AGE (Debian's age CLI, the encryption tests' independent peer; age-keygen and zstd beside it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d /tmp/mba-services.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port, name, log
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "error: $2 did not start listening on 127.0.0.1:$1; its log follows" >&2; cat "$3" >&2; exit 1
}

# The Azure tests make a test CA with the openssl CLI and stop Azurite with /bin/kill (procps).
if ! command -v openssl >/dev/null || [ ! -x /bin/kill ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl procps) >&2
fi

# Assigned before export: `export X="$(cmd)"` would hide cmd's failure from `set -e` and run the suite anyway.
MBA_SECANTUSD="$(bash "$here/install-secantus.sh")"
MBA_MONGO_TOOLS_DIR="$(bash "$here/install-mongo-tools.sh")"
export MBA_SECANTUSD MBA_MONGO_TOOLS_DIR
if [ -z "${MBA_TEST_MONGODB_URI:-}" ]; then
  port="$(free_port)"
  mkdir -p "$work/secantus"
  "$MBA_SECANTUSD" --host 127.0.0.1 --port "$port" --storage-path "$work/secantus" --cache-size 512M \
    >"$work/secantus.log" 2>&1 &
  pids+=($!)
  wait_port "$port" secantusd-rs "$work/secantus.log"
  export MBA_TEST_MONGODB_URI="mongodb://127.0.0.1:$port/" MBA_TEST_MONGODB_PID="${pids[-1]}"
fi

export MBA_AZURITE_BLOB="$(bash "$here/install-azurite.sh")"
port="$(free_port)"
mkdir -p "$work/azurite"
"$MBA_AZURITE_BLOB" --blobHost 127.0.0.1 --blobPort "$port" --location "$work/azurite" --disableTelemetry --silent \
  --loose --skipApiVersionCheck >"$work/azurite.log" 2>&1 &
pids+=($!)
wait_port "$port" azurite-blob "$work/azurite.log"
export MBA_TEST_AZURITE_BLOB_ENDPOINT="http://127.0.0.1:$port/devstoreaccount1"

export MBA_TEST_SMTP_PYTHON="$(bash "$here/install-aiosmtpd.sh")"
export MBA_AGE="$(bash "$here/install-age.sh")"

echo "services: mongodb $MBA_TEST_MONGODB_URI, azurite $MBA_TEST_AZURITE_BLOB_ENDPOINT" >&2
"$@"
