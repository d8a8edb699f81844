# Long randomized runs, not part of `make test`.
#   make soak                          the point-in-time differential (tests/point_in_time.rs) over seeds 1..200, then
#                                      continuous archiving (tests/pitr.rs) with writers for minutes and 80 marks
#   make soak MBA_PITR_SEEDS=500..700  other seeds (a range a..b, or a list 3,17,42)
.PHONY: soak

soak:
	MBA_PITR_SEEDS="$${MBA_PITR_SEEDS:-1..201}" bash tests/harness/with-services.sh \
	  cargo test --test point_in_time random_writers -- --nocapture
	MBA_PITR_MARKS="$${MBA_PITR_MARKS:-80}" bash tests/harness/with-services.sh \
	  cargo test --test pitr restoring_to_any_mark -- --nocapture
