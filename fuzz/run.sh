#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input (mk/fuzz.mk): `make fuzz-smoke` runs each target for MBA_FUZZ_SECS (60)
# seconds; `make fuzz-long` runs each for MBA_FUZZ_RUNS executions. A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/; every fixed crash input becomes a regression test under tests/fixtures/fuzz/.
#
# cargo-fuzz is installed into the cache on first use. It passes nightly-only flags (-Zsanitizer=…) to rustc;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them (the fuzz build only, never the shipped binary).
# MBA_FUZZ_SANITIZER (address) picks the sanitizer: `none` runs ~6 times faster, which is what makes 10 million
# executions of archive_mutated fit in half an hour of one core; our crate has no unsafe code.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${MBA_FUZZ_SECS:-60}"
runs="${MBA_FUZZ_RUNS:--1}"
targets="${MBA_FUZZ_TARGETS:-archive_reader archive_mutated manifest config}"
sanitizer="${MBA_FUZZ_SANITIZER:-address}"
tools="${MBA_CACHE_DIR:-$HOME/.cache/mongo-backup-agent}/cargo-fuzz"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH" RUSTC_BOOTSTRAP=1

cargo fuzz build --fuzz-dir fuzz --sanitizer "$sanitizer"
for target in $targets; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  # Seeds: real mongodump archives, the reference config, a complete manifest.
  case "$target" in
    archive_reader) cp tests/fixtures/mongodump/*.archive "$corpus/" ;;
    config) cp packaging/config.example.toml "$corpus/" ;;
    manifest) cp fuzz/seeds/manifest/* "$corpus/" ;;
  esac
  echo "fuzz: $target for ${secs}s (runs ${runs}, sanitizer ${sanitizer})" >&2
  cargo fuzz run --fuzz-dir fuzz --sanitizer "$sanitizer" "$target" "$corpus" -- \
    -max_total_time="$secs" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
