"""Static checks of terraform/: formatting with a real terraform binary, cross-references between blocks (python-hcl2),
and the cloud-init the VM boots with. `terraform validate` needs the providers, which cannot be downloaded here."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import infra_lib as lib

PROVIDER_PREFIXES = ("azurerm", "kubernetes", "tls")


# ---------------------------------------------------------------------------------------------------------------------
# terraform fmt

def terraform_fmt_check(directory: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1")
    argv = lib.offline([lib.tool("terraform", "terraform"), "fmt", "-check", "-recursive", "-diff", "-no-color"])
    return subprocess.run(argv, cwd=directory, env=env, capture_output=True, text=True, timeout=120)


def test_terraform_fmt_passes() -> None:
    out = terraform_fmt_check(lib.TERRAFORM)
    assert out.returncode == 0, f"terraform fmt -check -recursive found unformatted files:\n{out.stdout}{out.stderr}"


def test_terraform_fmt_detects_misformatting(tmp_path: Path) -> None:
    shutil.copytree(lib.TERRAFORM, tmp_path / "tf")
    path = tmp_path / "tf" / "outputs.tf"
    path.write_text(path.read_text().replace('  description = "Name of the AKS cluster."', '  description="Name of the AKS cluster."'))
    out = terraform_fmt_check(tmp_path / "tf")
    assert out.returncode != 0 and "outputs.tf" in out.stdout, "terraform fmt -check did not notice a misformatted file"


# ---------------------------------------------------------------------------------------------------------------------
# Cross-references (what `terraform validate` would catch first, short of provider schemas)

def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "__comments__":
                continue
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _code(text: str) -> Iterator[str]:
    """The expression parts of an HCL value: the inside of every ${…}, braces balanced."""
    i = 0
    while True:
        start = text.find("${", i)
        if start < 0:
            return
        depth, j = 1, start + 2
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        yield text[start + 2 : j - 1]
        i = j


_VAR = re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")
_LOCAL = re.compile(r"(?<![\w.])local\.([A-Za-z_][\w-]*)")
_DATA = re.compile(r"(?<![\w.])data\.([a-z][a-z0-9_]*)\.([A-Za-z_][\w-]*)")
_RESOURCE = re.compile(r"(?<![\w.])((?:%s)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)(\[)?" % "|".join(PROVIDER_PREFIXES))


def cross_reference_errors(files: dict[str, dict[str, Any]]) -> list[str]:
    """Every reference resolves, every declaration is used, counted resources are indexed. Empty list = fine."""
    declared_vars, declared_locals, declared_data = set(), set(), set()
    resources: dict[tuple[str, str], bool] = {}  # (type, name) -> has count/for_each
    for doc in files.values():
        for entry in doc.get("variable", []):
            declared_vars.update(lib.unquote(k) for k in entry if not k.startswith("__"))
        for entry in doc.get("locals", []):
            declared_locals.update(k for k in entry if not k.startswith("__"))
        for kind in ("resource", "data"):
            for entry in doc.get(kind, []):
                for rtype, by_name in entry.items():
                    for name, body in by_name.items():
                        key = (lib.unquote(rtype), lib.unquote(name))
                        if kind == "data":
                            declared_data.add(key)
                        else:
                            resources[key] = "count" in body or "for_each" in body

    errors: list[str] = []
    used_vars, used_locals = set(), set()
    for fname, doc in files.items():
        for text in _strings(doc):
            for code in _code(text):
                for m in _VAR.finditer(code):
                    used_vars.add(m.group(1))
                    if m.group(1) not in declared_vars:
                        errors.append(f"{fname}: var.{m.group(1)} is not declared")
                for m in _LOCAL.finditer(code):
                    used_locals.add(m.group(1))
                    if m.group(1) not in declared_locals:
                        errors.append(f"{fname}: local.{m.group(1)} is not declared")
                for m in _DATA.finditer(code):
                    if (m.group(1), m.group(2)) not in declared_data:
                        errors.append(f"{fname}: data.{m.group(1)}.{m.group(2)} is not declared")
                for m in _RESOURCE.finditer(code):
                    if code[: m.start()].endswith("data."):
                        continue
                    key = (m.group(1), m.group(2))
                    if key not in resources:
                        errors.append(f"{fname}: resource {key[0]}.{key[1]} is not declared")
                    elif resources[key] and not m.group(3):
                        errors.append(f"{fname}: {key[0]}.{key[1]} has count/for_each but is used without an index")
                    elif not resources[key] and m.group(3):
                        errors.append(f"{fname}: {key[0]}.{key[1]} has no count/for_each but is indexed")
    errors += [f"variable {v} is declared but never used" for v in sorted(declared_vars - used_vars)]
    errors += [f"local {v} is declared but never used" for v in sorted(declared_locals - used_locals)]
    return errors


def test_every_reference_resolves_and_every_declaration_is_used() -> None:
    assert cross_reference_errors(lib.terraform_files()) == []


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (("outputs.tf", "var.backup_prefix", "var.backup_prefx"), "var.backup_prefx is not declared"),
        (("storage.tf", "local.storage_account_name", "local.storage_acount_name"), "local.storage_acount_name is not declared"),
        (("outputs.tf", "azurerm_kubernetes_cluster.aks.name", "azurerm_kubernetes_cluster.akz.name"), "azurerm_kubernetes_cluster.akz is not declared"),
        (("providers.tf", "azurerm_kubernetes_cluster.aks.kube_config", "azurerm_kubernetes_cluster.main.kube_config"), "azurerm_kubernetes_cluster.main is not declared"),
        (("keys.tf", "data.azurerm_client_config.current.tenant_id", "data.azurerm_client_config.currnt.tenant_id"), "data.azurerm_client_config.currnt is not declared"),
        (("outputs.tf", "azurerm_public_ip.vm[0].ip_address", "azurerm_public_ip.vm.ip_address"), "used without an index"),
    ],
)
def test_cross_reference_check_catches_mistakes(tmp_path: Path, mutation: tuple[str, str, str], expected: str | None) -> None:
    import hcl2

    fname, old, new = mutation
    files = copy.deepcopy(lib.terraform_files())
    text = (lib.TERRAFORM / fname).read_text()
    assert old in text, f"mutation target {old!r} not in {fname}: update this test"
    (tmp_path / fname).write_text(text.replace(old, new))
    with open(tmp_path / fname, encoding="utf-8") as f:
        files[fname] = hcl2.load(f)
    errors = cross_reference_errors(files)
    assert errors, f"replacing {old} by {new} in {fname} went unnoticed"
    if expected:
        assert any(expected in e for e in errors), errors


def test_outputs_have_descriptions_and_existing_sources() -> None:
    outputs = lib.labelled("output", 1)
    assert outputs, "no outputs found"
    resources = set(lib.labelled("resource", 2))
    declared_vars = {k[0] for k in lib.labelled("variable", 1)}
    for (name,), body in outputs.items():
        assert lib.unquote(body.get("description", "")), f"output {name} has no description"
        assert "value" in body, f"output {name} has no value"
        refs = [c for c in _code(str(body["value"]))]
        assert refs, f"output {name} is a constant"
        for code in refs:
            for m in _RESOURCE.finditer(code):
                assert (m.group(1), m.group(2)) in resources, f"output {name}: {m.group(1)}.{m.group(2)} does not exist"
            for m in _VAR.finditer(code):
                assert m.group(1) in declared_vars, f"output {name}: var.{m.group(1)} does not exist"


def test_variables_have_descriptions_types_and_validations() -> None:
    variables = lib.labelled("variable", 1)
    assert len(variables) > 10
    for (name,), body in variables.items():
        assert lib.unquote(body.get("description", "")).strip(), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"
        if body["type"] != "bool":
            assert body.get("validation"), f"variable {name} has no validation block"
            for v in body["validation"]:
                assert lib.unquote(v["error_message"]).endswith("."), f"variable {name}: error_message must be a sentence"


def test_providers_are_pinned_and_cover_every_resource() -> None:
    required: dict[str, Any] = {}
    for _, entry in lib.blocks("terraform"):
        for rp in entry.get("required_providers", []):
            required.update({k: v for k, v in rp.items() if not k.startswith("__")})
    assert set(required) == set(PROVIDER_PREFIXES), f"required_providers: {sorted(required)}"
    for name, spec in required.items():
        assert lib.literal(spec["source"]) == f"hashicorp/{name}"
        assert re.fullmatch(r"(~> ?|= ?)\d+\.\d+(\.\d+)?", lib.literal(spec["version"])), f"{name} is not pinned: {spec}"
    for rtype, _ in lib.labelled("resource", 2):
        assert rtype.split("_")[0] in PROVIDER_PREFIXES, f"resource type {rtype} has no pinned provider"


# ---------------------------------------------------------------------------------------------------------------------
# Cloud-init and the bootstrap script the VM runs at first boot

_TEMPLATEFILE = re.compile(r'templatefile\("\$\{path\.module\}/([^"]+)",\s*\{(.*)\}\)', re.S)


def _templatefile_call(local_name: str) -> tuple[Path, set[str]]:
    expr = lib.locals_()[local_name]
    m = _TEMPLATEFILE.search(expr)
    assert m, f"local.{local_name} is not a templatefile() call: {expr}"
    keys = set(re.findall(r'"?(\w+)"?\s*=', m.group(2)))
    return lib.TERRAFORM / m.group(1), keys


@pytest.mark.parametrize("local_name", ["bootstrap_script", "cloud_init"])
def test_templatefile_passes_exactly_the_variables_the_template_uses(local_name: str) -> None:
    path, passed = _templatefile_call(local_name)
    assert path.is_file(), f"{path} does not exist"
    used = lib.template_names(path)
    assert used <= passed, f"{path.name} uses {sorted(used - passed)} which templatefile() does not pass (plan would fail)"
    assert passed <= used, f"templatefile() passes {sorted(passed - used)} which {path.name} never uses"


def _render_vm_templates(tmp_path: Path) -> tuple[str, str, str]:
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    bootstrap = lib.render_template(
        _templatefile_call("bootstrap_script")[0],
        {"mongodb_series": "4.4", "agent_deb_url": "https://example.invalid/mongo-backup-agent_0.1.0_amd64.deb",
         "agent_deb_sha256": "0" * 64, "data_disk_lun": 0},
    )
    cloud_init = lib.render_template(
        _templatefile_call("cloud_init")[0],
        {"host_key_private": key.read_text(), "host_key_public": Path(f"{key}.pub").read_text().strip(),
         "bootstrap_script": bootstrap},
    )
    return bootstrap, cloud_init, key.read_text()


def test_cloud_init_carries_the_host_key_and_the_bootstrap_script(tmp_path: Path) -> None:
    bootstrap, cloud_init, private_key = _render_vm_templates(tmp_path)
    assert cloud_init.startswith("#cloud-config\n")
    doc = yaml.safe_load(cloud_init)
    assert doc["ssh_keys"]["ed25519_private"] == private_key
    assert doc["ssh_keys"]["ed25519_public"].startswith("ssh-ed25519 ")
    assert doc["ssh_deletekeys"] is True and doc["ssh_genkeytypes"] == ["ed25519"]
    assert doc["ssh_pwauth"] is False
    (script,) = [f for f in doc["write_files"] if f["path"] == "/usr/local/sbin/mongo-vm-bootstrap"]
    assert script["content"] == bootstrap and script["permissions"] == "0700"
    assert doc["runcmd"] == [["/usr/local/sbin/mongo-vm-bootstrap"]]


def test_cloud_init_passes_cloud_inits_own_schema(tmp_path: Path) -> None:
    _, cloud_init, _ = _render_vm_templates(tmp_path)
    user_data = tmp_path / "user-data"
    user_data.write_text(cloud_init)
    ci = lib.TOOLS / "cloud-init" / "usr/lib/python3/dist-packages"
    assert ci.is_dir(), f"{ci} missing: run tests/infra/install-tools.sh"
    env = dict(os.environ, PYTHONPATH=str(ci))
    argv = lib.offline([lib.tool("tests", "python"), "-m", "cloudinit.cmd.main", "schema", "--config-file", str(user_data)])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Valid cloud-config" in out.stdout, f"cloud-init schema:\n{out.stdout}{out.stderr}"
    # The same validator refuses a broken document, so a pass above means something.
    user_data.write_text(cloud_init.replace("ssh_pwauth: false", "ssh_pwauth: 7"))
    bad = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "ssh_pwauth" in bad.stdout + bad.stderr


def test_bootstrap_script_is_valid_bash_and_shellcheck_clean(tmp_path: Path) -> None:
    bootstrap, _, _ = _render_vm_templates(tmp_path)
    script = tmp_path / "mongo-vm-bootstrap"
    script.write_text(bootstrap)
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, f"shellcheck:\n{out.stdout}{out.stderr}"


def test_bootstrap_waits_for_the_lun_terraform_attaches() -> None:
    _, passed = _templatefile_call("bootstrap_script")
    expr = lib.locals_()["bootstrap_script"]
    lun_passed = re.search(r"data_disk_lun\s*=\s*(\d+)", expr)
    assert lun_passed, "bootstrap_script must pass data_disk_lun as a number"
    attachment = lib.resource("azurerm_virtual_machine_data_disk_attachment", "mongo_data")
    assert attachment["lun"] == int(lun_passed.group(1))
