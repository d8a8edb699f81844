#!/usr/bin/env bash
# `make test-infra`: installs the checking tools (tests/infra/install-tools.sh, cached in $MBA_CACHE_DIR/infra) and runs
# the infra suite: terraform fmt, python-hcl2 cross-references, cloud-init schema, shellcheck, the kustomize render,
# kubernetes-validate --strict, the CronJob's security fields, checkov with its accepted skips, and the CronJob's ssh
# command against a real sshd with the agent's `trigger` as forced command and its `serve` daemon behind it (run it under
# tests/harness/with-services.sh, as `make test-infra` does, for MongoDB). Extra arguments go to pytest (-k, -x, …).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

MBA_INFRA_TOOLS="$(bash "$here/install-tools.sh" | tail -n 1)"
export MBA_INFRA_TOOLS
# Bytecode caches go to the tools cache: none in the work tree, and checkov does not recompile on every run.
export PYTHONPYCACHEPREFIX="$MBA_INFRA_TOOLS/pycache"

cd "$here"
exec "$MBA_INFRA_TOOLS/venv-tests/bin/python" -m pytest -p no:cacheprovider -ra "$@" .
