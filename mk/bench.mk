# Benchmarks against the physical limits of this machine (issue 4) and against stock mongodump/mongorestore
# (issue 15, the peer table): not part of `make test`.
#   make bench                      1 GiB data set, 3 interleaved rounds
#   make bench MBA_BENCH_MIB=5120   the 5 GiB run (peak RSS must match the 1 GiB run)
.PHONY: bench
export MBA_BENCH_MIB MBA_BENCH_ROUNDS MBA_BENCH_SEED MBA_BENCH_CASES

bench:
	bash tests/bench/run.sh
