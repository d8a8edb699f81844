# The VM side (issue 6): the .deb, the hardened systemd unit, the Ansible role, and their tests.
#   make deb             build target/debian/mongo-backup-agent_<version>_amd64.deb (glibc 2.27, cargo-zigbuild)
#   make test-vm-static  unit verify + security score, shellcheck, ansible-lint, role templates (no binary, no VM)
#   make test-deb        build the .deb, then lintian, glibc symbol versions, contents, packaged unit
#   make e2e             boot Debian 12 in systemd-nspawn, deploy with the role over SSH, kick backups over SSH
.PHONY: deb test-vm-static test-deb e2e

deb:
	bash packaging/build-deb.sh

test-vm-static:
	bash tests/vm/static.sh

test-deb:
	bash tests/vm/check-deb.sh

e2e:
	bash tests/harness/with-services.sh bash tests/vm/e2e.sh

# All of them on a cold machine too: each script installs its own tools (zig and cargo-zigbuild in a venv, cargo-deb,
# lintian, debootstrap, systemd-container, ansible) and caches them and the Debian root under MBA_CACHE_DIR.
TEST_TARGETS += test-vm-static test-deb e2e
