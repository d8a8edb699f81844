"""Shared helpers of the infra tests: where things are, the parsed Terraform, the rendered manifests."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import hcl2
import yaml

import kustomize_render

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
K8S = REPO / "k8s"
OVERLAY = "overlays/aks"
TOOLS = Path(os.environ.get("MBA_INFRA_TOOLS", Path(os.environ.get("MBA_CACHE_DIR", Path.home() / ".cache/mongo-backup-agent")) / "infra"))

# Values the tests put in the overlay's target.env, standing in for `terraform output -raw kustomize_env`.
TEST_KICKER_IMAGE = "registry.example.test/mongo-backup-kicker@sha256:" + "ab" * 32
TEST_VM_CIDR = "10.42.16.4/32"


def tool(venv: str, name: str) -> str:
    path = TOOLS / f"venv-{venv}" / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run tests/infra/install-tools.sh (make test-infra does)")
    return str(path)


def offline(argv: list[str]) -> list[str]:
    """Run argv in a fresh network namespace with only loopback up, so a tool that phones home fails fast."""
    script = 'ip link set lo up && exec "$@"'
    return ["unshare", "--net", "--", "sh", "-c", script, "sh", *argv]


# ---------------------------------------------------------------------------------------------------------------------
# Terraform, as python-hcl2 sees it

def unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals with their quotes ("\"x\""); strip them, and keys likewise."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return json.loads(value) if "\\" in value else value[1:-1]
    return value


def literal(value: Any) -> Any:
    """A literal string value (no interpolation), unquoted; fails on an expression."""
    if isinstance(value, (int, float, bool)):
        return value
    assert isinstance(value, str) and value.startswith('"') and "${" not in value, f"not a literal: {value!r}"
    return unquote(value)


@functools.lru_cache(maxsize=None)
def terraform_files() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(TERRAFORM.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        with open(path, encoding="utf-8") as f:
            out[str(path.relative_to(TERRAFORM))] = hcl2.load(f)
    return out


def blocks(kind: str) -> Iterator[tuple[str, Any]]:
    """(file, block body) for every top-level block of a kind ("resource", "variable", …)."""
    for name, doc in terraform_files().items():
        for entry in doc.get(kind, []):
            yield name, entry


def labelled(kind: str, depth: int) -> dict[tuple[str, ...], dict[str, Any]]:
    """Top-level blocks by their labels: depth 1 for variable/output, 2 for resource/data."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for _, entry in blocks(kind):
        stack = [((), entry)]
        while stack:
            labels, node = stack.pop()
            if len(labels) == depth:
                out[labels] = node
                continue
            for key, value in node.items():
                if key.startswith("__"):
                    continue
                stack.append((labels + (unquote(key),), value))
    return out


def locals_() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _, entry in blocks("locals"):
        out.update({k: v for k, v in entry.items() if not k.startswith("__")})
    return out


def resource(rtype: str, name: str) -> dict[str, Any]:
    return labelled("resource", 2)[(rtype, name)]


def mapping(value: Any) -> dict[str, Any]:
    """A literal HCL map ({ "a" = "b" }) as a dict with unquoted keys and values."""
    assert isinstance(value, dict), f"not a literal map: {value!r}"
    return {unquote(k): unquote(v) for k, v in value.items() if not k.startswith("__")}


# ---------------------------------------------------------------------------------------------------------------------
# Kustomize rendering

@functools.lru_cache(maxsize=None)
def rendered_overlay_dir() -> str:
    """A copy of k8s/ whose overlay has a target.env with test values, as `terraform output` would write it."""
    root = tempfile.mkdtemp(prefix="mba-k8s-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copytree(K8S, os.path.join(root, "k8s"), ignore=shutil.ignore_patterns("target.env"))
    with open(os.path.join(root, "k8s", OVERLAY, "target.env"), "w", encoding="utf-8") as f:
        f.write(f"# test values\nMONGO_VM_CIDR={TEST_VM_CIDR}\nKICKER_IMAGE={TEST_KICKER_IMAGE}\n")
    return os.path.join(root, "k8s", OVERLAY)


@functools.lru_cache(maxsize=None)
def rendered() -> tuple[dict[str, Any], ...]:
    return tuple(kustomize_render.render(rendered_overlay_dir()))


def rendered_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in rendered() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in the rendered overlay, found {len(found)}"
    return found[0]


def kubectl_kustomize(directory: str) -> list[dict[str, Any]] | None:
    """`kubectl kustomize DIR` when kubectl exists on this machine, else None."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    out = subprocess.run(offline([kubectl, "kustomize", directory]), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


def cronjob_container() -> dict[str, Any]:
    cj = rendered_object("CronJob", "mongo-backup")
    containers = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the kicker pod has exactly one container"
    return containers[0]


# ---------------------------------------------------------------------------------------------------------------------
# templatefile(), enough of it for the two templates in terraform/templates

_INTERP = re.compile(r"(?<!\$)\$\{([^{}]*)\}")


def render_template(path: Path, values: dict[str, Any]) -> str:
    """Render a Terraform template that uses only ${name} and ${jsonencode(name)}; anything else is an error."""
    text = path.read_text(encoding="utf-8")
    assert "%{" not in text.replace("%%{", ""), f"{path}: template directives are not supported by this renderer"

    def sub(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        fn = re.fullmatch(r"jsonencode\((\w+)\)", expr)
        name = fn.group(1) if fn else expr
        assert re.fullmatch(r"\w+", name), f"{path}: unsupported interpolation ${{{expr}}}"
        assert name in values, f"{path}: ${{{expr}}} is not passed to templatefile()"
        return json.dumps(values[name]) if fn else str(values[name])

    out = _INTERP.sub(sub, text)
    return out.replace("$${", "${").replace("%%{", "%{")


def template_names(path: Path) -> set[str]:
    names = set()
    for m in _INTERP.finditer(path.read_text(encoding="utf-8")):
        expr = m.group(1).strip()
        fn = re.fullmatch(r"jsonencode\((\w+)\)", expr)
        names.add(fn.group(1) if fn else expr)
    return names
