# Terraform, Kubernetes manifests and the SSH kick: static checks plus a real sshd in front of the real agent
# (tests/infra/run.sh). Runs under tests/harness/with-services.sh: the SSH tests start `serve` against its MongoDB.
TEST_TARGETS += test-infra

.PHONY: test-infra
test-infra:
	bash tests/harness/with-services.sh bash tests/infra/run.sh
