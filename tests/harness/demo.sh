#!/usr/bin/env bash
# `make demo`: on a fresh machine, start a local MongoDB-compatible server, seed a sample database, start the agent's
# daemon, back up through it with run-now, show status and list, verify the backup, restore it under another
# database name, and print counts before and after.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if [ "${1:-}" != "--inner" ]; then
  cargo build --release --manifest-path "$repo/Cargo.toml"
  exec bash "$here/with-services.sh" bash "$0" --inner
fi

cache="${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}"
venv="$cache/demo-venv"
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q pymongo; }
bin="$repo/target/release/mongo-backup-agent"
work="$(mktemp -d /tmp/mba-demo.XXXXXX)"
cat >"$work/config.toml" <<TOML
[mongodb]
uri = "$MBA_TEST_MONGODB_URI"
[backup]
include = ["demo_shop.*"]
[storage]
kind = "filesystem"
path = "$work/backups"
prefix = "demo"
[daemon]
socket = "$work/control.sock"
TOML

counts() { "$venv/bin/python" - "$MBA_TEST_MONGODB_URI" "$1" <<'PY'
import sys
from pymongo import MongoClient
db = MongoClient(sys.argv[1])[sys.argv[2]]
for name in sorted(db.list_collection_names()):
    print(f"  {sys.argv[2]}.{name}: {db[name].count_documents({})} documents")
PY
}

echo "== seeding demo_shop"
"$venv/bin/python" - "$MBA_TEST_MONGODB_URI" <<'PY'
import random, sys
from pymongo import MongoClient
db = MongoClient(sys.argv[1]).demo_shop
db.customers.insert_many([{"_id": i, "name": f"customer {i}", "tier": random.choice("abc")} for i in range(2000)])
db.orders.insert_many([{"customer": random.randrange(2000), "total": round(random.random() * 100, 2),
                        "items": [{"sku": f"sku-{random.randrange(500)}", "qty": random.randrange(1, 5)}
                                  for _ in range(random.randrange(1, 6))]} for _ in range(20000)])
db.orders.create_index([("customer", 1), ("total", -1)])
db.command("create", "big_spenders", viewOn="orders", pipeline=[{"$match": {"total": {"$gt": 90}}}])
PY
counts demo_shop
agent() { "$bin" --config "$work/config.toml" "$@"; }
echo "== serve (the daemon systemd would run)"
agent serve 2>"$work/daemon.log" &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do agent status >/dev/null 2>&1 && break; sleep 0.1; done
echo "== run-now"
agent run-now
echo "== status"
agent status
echo "== list"
agent list
echo "== verify latest"
agent verify latest
echo "== restore latest as demo_shop_restored"
# shellcheck disable=SC2016 # $c$ is the agent's rename wildcard, not a shell expansion
agent restore latest --nsFrom 'demo_shop.$c$' --nsTo 'demo_shop_restored.$c$'
echo "== counts before (demo_shop) and after (demo_shop_restored)"
counts demo_shop
counts demo_shop_restored
