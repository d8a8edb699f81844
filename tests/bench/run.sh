#!/usr/bin/env bash
# `make bench`: installs the command-line tools the limits are measured with (zstd, pigz, GNU time) if missing,
# builds the release binary, and runs the pipeline bench (tests/bench/pipeline) and the point-in-time bench
# (tests/bench/pitr) with the real services up. The peer rows run the stock mongo-tools the harness provides
# (MBA_MONGO_TOOLS_DIR).
# Settings pass through the environment: MBA_BENCH_MIB (1024; 5120 for the 5 GiB run), MBA_BENCH_ROUNDS (3),
# MBA_BENCH_SEED, MBA_BENCH_CASES. Output: the table on stdout, target/bench/bench-<MiB>.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v zstd >/dev/null || missing+=(zstd)
command -v pigz >/dev/null || missing+=(pigz)
command -v gzip >/dev/null || missing+=(gzip)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >&2
fi

cargo build --release --bin mongo-backup-agent
exec bash tests/harness/with-services.sh cargo bench --bench pipeline --bench pitr
