# Terraform, Kubernetes manifests and the SSH kick: static checks plus a real sshd (tests/infra/run.sh).
TEST_TARGETS += test-infra

.PHONY: test-infra
test-infra:
	bash tests/infra/run.sh
