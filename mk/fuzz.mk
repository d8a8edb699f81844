# Fuzzing the parsers of untrusted input: archives, manifests, configs (issue 4; fuzz/run.sh).
#   make fuzz-smoke   each target for 60 s (part of `make test`)
#   make fuzz-long    each target for 10 million executions (one core; hours; MBA_FUZZ_SANITIZER=none is ~6x faster)
.PHONY: fuzz-smoke fuzz-long
TEST_TARGETS += fuzz-smoke

fuzz-smoke:
	bash fuzz/run.sh

fuzz-long:
	MBA_FUZZ_SECS=0 MBA_FUZZ_RUNS=10000000 bash fuzz/run.sh
