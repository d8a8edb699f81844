# mongo-backup-agent: build, test and demo entry points.
# `make test` installs every tool and service it needs on a fresh Debian 12 machine, starts them, runs every suite
# and stops what it started. Each area of the repo contributes its suites through a fragment in mk/ that appends
# its target to TEST_TARGETS, so areas can be worked on independently.

SHELL := /bin/bash
.DEFAULT_GOAL := build
export MBA_CACHE_DIR ?= $(HOME)/.cache/mongo-backup-agent

TEST_TARGETS := test-rust

.PHONY: build test test-rust demo lint

build:
	cargo build --release

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --lib --no-default-features -- -D warnings

include $(wildcard mk/*.mk)

test: $(TEST_TARGETS)

# Rust unit and integration tests against a real MongoDB-compatible server (SecantusDB, or MBA_TEST_MONGODB_URI).
test-rust:
	bash tests/harness/with-services.sh cargo test --all-targets --no-fail-fast

demo:
	bash tests/harness/demo.sh
