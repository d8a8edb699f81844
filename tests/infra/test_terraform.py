"""Static checks of terraform/: formatting with a real terraform binary, cross-references between blocks (python-hcl2),
and the cloud-init the VM boots with. `terraform validate` needs the providers, which cannot be downloaded here."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shlex
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
    """Every reference resolves, every declaration is used, counted resources are indexed. Empty list = fine. `moved`
    blocks are left out: their `from` names an address that no longer exists on purpose (test_moved_blocks_…)."""
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
        for text in _strings({k: v for k, v in doc.items() if k != "moved"}):
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


def _render_bootstrap(replica_set_name: str) -> str:
    return lib.render_template(
        _templatefile_call("bootstrap_script")[0],
        {"mongodb_series": "4.4", "agent_deb_url": "https://example.invalid/mongo-backup-agent_0.1.0_amd64.deb",
         "agent_deb_sha256": "0" * 64, "data_disk_lun": 0, "replica_set_name": replica_set_name},
    )


def _render_vm_templates(tmp_path: Path, replica_set_name: str = "") -> tuple[str, str, str]:
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    bootstrap = _render_bootstrap(replica_set_name)
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


@pytest.mark.parametrize("replica_set_name", ["", "rs0"])
def test_cloud_init_passes_cloud_inits_own_schema(tmp_path: Path, replica_set_name: str) -> None:
    _, cloud_init, _ = _render_vm_templates(tmp_path, replica_set_name)
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


@pytest.mark.parametrize("replica_set_name", ["", "rs0"])
def test_bootstrap_script_is_valid_bash_and_shellcheck_clean(tmp_path: Path, replica_set_name: str) -> None:
    bootstrap, _, _ = _render_vm_templates(tmp_path, replica_set_name)
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


# ---------------------------------------------------------------------------------------------------------------------
# Members: vm_count 1 (the single VM of before, unchanged) or 3 (a replica set across zones). members.tf reads variables
# only, so a real terraform evaluates it for each count; python-hcl2 checks that every per-member resource takes its
# name, address and zone from it.

MEMBER_VARIABLES = ("vm_count", "mongo_subnet_cidr", "mongodb_replica_set_name")
MEMBER_LOCALS = ("mongo_members", "mongo_member_ips", "mongo_vm_private_ip", "mongo_members_nsg_prefix",
                 "mongo_members_cidr", "mongodb_replica_set_name", "mongodb_replica_set_config")


def evaluate_members(tmp_path: Path, vm_count: int) -> subprocess.CompletedProcess[str]:
    """`terraform apply` of members.tf with the real declarations of the variables it reads; the locals come back as the
    JSON output `members`. The values go in through a tfvars file: terraform 1.0 (what the suite has offline) checks -var
    values before converting them to the declared type (hashicorp/terraform#29899)."""
    text = (lib.TERRAFORM / "variables.tf").read_text()
    blocks = []
    for name in MEMBER_VARIABLES:
        m = re.search(r'^variable "%s" \{\n.*?^\}\n' % name, text, re.M | re.S)
        assert m, f"variables.tf has no variable {name}"
        # terraform 1.0 wants error messages to start with a capital letter; 1.5 (required_version) does not.
        blocks.append(re.sub(r'(error_message\s*=\s*")(\w)', lambda g: g.group(1) + g.group(2).upper(), m.group(0)))
    work = tmp_path / f"members-{vm_count}"
    work.mkdir()
    (work / "variables.tf").write_text("\n".join(blocks))
    shutil.copy(lib.TERRAFORM / "members.tf", work / "members.tf")
    outputs = ",\n".join(f"    {name} = local.{name}" for name in MEMBER_LOCALS)
    (work / "outputs.tf").write_text(f'output "members" {{\n  value = {{\n{outputs}\n  }}\n}}\n')
    (work / "test.tfvars").write_text(f"vm_count = {vm_count}\n")
    env = dict(os.environ, CHECKPOINT_DISABLE="1", TF_IN_AUTOMATION="1")
    tf = lib.tool("terraform", "terraform")
    script = f'{tf} init -input=false -no-color >/dev/null && {tf} apply -auto-approve -input=false -no-color ' \
             f'-var-file=test.tfvars >/dev/null && {tf} output -json members'
    return subprocess.run(lib.offline(["sh", "-c", script]), cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


def members(tmp_path: Path, vm_count: int) -> dict[str, Any]:
    out = evaluate_members(tmp_path, vm_count)
    assert out.returncode == 0, f"terraform could not evaluate members.tf for vm_count = {vm_count}:\n{out.stderr}"
    return json.loads(out.stdout)


def test_one_vm_is_the_single_vm_of_before(tmp_path: Path) -> None:
    m = members(tmp_path, 1)
    # The address and the NSG destination of earlier versions (cidrhost(mongo_subnet_cidr, 4), without /32).
    assert m["mongo_members"] == [{"suffix": "", "private_ip": "10.42.16.4", "zone": None}], m
    assert m["mongo_vm_private_ip"] == m["mongo_members_nsg_prefix"] == "10.42.16.4"
    assert m["mongo_member_ips"] == ["10.42.16.4"]
    assert m["mongo_members_cidr"] == "10.42.16.4/32"
    assert m["mongodb_replica_set_name"] == "" and m["mongodb_replica_set_config"] is None


def test_three_vms_are_a_replica_set_across_zones(tmp_path: Path) -> None:
    m = members(tmp_path, 3)
    assert m["mongo_members"] == [
        {"suffix": "", "private_ip": "10.42.16.4", "zone": "1"},
        {"suffix": "-2", "private_ip": "10.42.16.5", "zone": "2"},
        {"suffix": "-3", "private_ip": "10.42.16.6", "zone": "3"},
    ], m
    assert m["mongo_member_ips"] == ["10.42.16.4", "10.42.16.5", "10.42.16.6"]
    # The NSG prefix and the NetworkPolicy CIDR hold every member and nothing outside the MongoDB subnet.
    block = ipaddress.ip_network(m["mongo_members_cidr"])  # strict: a real network address
    assert ipaddress.ip_network(m["mongo_members_nsg_prefix"]) == block
    subnet = ipaddress.ip_network("10.42.16.0/28")
    assert block.subnet_of(subnet) and all(ipaddress.ip_address(ip) in block for ip in m["mongo_member_ips"])
    assert block.num_addresses == 4
    assert m["mongodb_replica_set_name"] == "rs0"
    assert json.loads(m["mongodb_replica_set_config"]) == {
        "_id": "rs0",
        "members": [{"_id": 0, "host": "10.42.16.4:27017"}, {"_id": 1, "host": "10.42.16.5:27017"},
                    {"_id": 2, "host": "10.42.16.6:27017"}],
    }


@pytest.mark.parametrize("vm_count", [0, 2, 4])
def test_other_vm_counts_are_refused(tmp_path: Path, vm_count: int) -> None:
    out = evaluate_members(tmp_path, vm_count)
    assert out.returncode != 0, f"vm_count = {vm_count} was accepted:\n{out.stdout}"
    assert "vm_count must be 1 (one vm) or 3" in " ".join(out.stderr.split()).lower(), out.stderr


def test_tfvars_example_names_a_valid_vm_count() -> None:
    import hcl2

    with open(lib.TERRAFORM / "terraform.tfvars.example", encoding="utf-8") as f:
        example = hcl2.load(f)
    assert example.get("vm_count") in (1, 3), example.get("vm_count")


# Every resource there is one of per member, and the name it had before vm_count existed.
PER_MEMBER = {
    ("tls_private_key", "vm_host_ed25519"): None,
    ("azurerm_network_interface", "mongo"): "nic-${var.name_prefix}-mongo",
    ("azurerm_linux_virtual_machine", "mongo"): "vm-${var.name_prefix}-mongo",
    ("azurerm_managed_disk", "mongo_data"): "disk-${var.name_prefix}-mongo-data",
    ("azurerm_virtual_machine_data_disk_attachment", "mongo_data"): None,
    ("azurerm_role_assignment", "vm_backup_container"): None,
}
SUFFIX = "${local.mongo_members[count.index].suffix}"


def test_every_per_member_resource_is_counted_and_keeps_its_old_name() -> None:
    for (rtype, name), old_name in PER_MEMBER.items():
        body = lib.resource(rtype, name)
        assert body.get("count") == "${var.vm_count}", f"{rtype}.{name} count = {body.get('count')}"
        if old_name is not None:
            assert body["name"] == f'"{old_name}{SUFFIX}"', f"{rtype}.{name} name = {body['name']}"
    pip = lib.resource("azurerm_public_ip", "vm")
    assert pip["count"] == "${var.vm_public_ip_enabled ? var.vm_count : 0}"
    assert pip["name"] == f'"pip-${{var.name_prefix}}-mongo{SUFFIX}"'
    vm = lib.resource("azurerm_linux_virtual_machine", "mongo")
    assert vm["os_disk"][0]["name"] == f'"osdisk-${{var.name_prefix}}-mongo{SUFFIX}"'
    assert vm["zone"] == lib.resource("azurerm_managed_disk", "mongo_data")["zone"] == "${local.mongo_members[count.index].zone}"
    assert vm["custom_data"] == "${base64encode(local.cloud_init[count.index])}"
    assert vm["network_interface_ids"] == ["${azurerm_network_interface.mongo[count.index].id}"]
    nic = lib.resource("azurerm_network_interface", "mongo")["ip_configuration"][0]
    assert nic["private_ip_address"] == "${local.mongo_members[count.index].private_ip}"
    assert nic["public_ip_address_id"] == "${var.vm_public_ip_enabled ? azurerm_public_ip.vm[count.index].id : null}"
    attachment = lib.resource("azurerm_virtual_machine_data_disk_attachment", "mongo_data")
    assert attachment["managed_disk_id"] == "${azurerm_managed_disk.mongo_data[count.index].id}"
    assert attachment["virtual_machine_id"] == "${azurerm_linux_virtual_machine.mongo[count.index].id}"
    role = lib.resource("azurerm_role_assignment", "vm_backup_container")
    assert role["principal_id"] == "${azurerm_linux_virtual_machine.mongo[count.index].identity[0].principal_id}"
    assert lib.unquote(role["role_definition_name"]) == "Storage Blob Data Contributor"


def test_moved_blocks_keep_the_single_vm_at_index_0() -> None:
    """Each resource that gained count is moved from its old address to index 0, so vm_count = 1 plans no change and
    vm_count = 3 adds two members instead of replacing the VM and its data disk."""
    moved = {(m["from"], m["to"]) for _, m in lib.blocks("moved")}
    assert moved == {(f"${{{t}.{n}}}", f"${{{t}.{n}[0]}}") for t, n in PER_MEMBER}, moved


def test_nsg_admits_the_members_and_lets_them_replicate_only_among_themselves() -> None:
    nsg = lib.resource("azurerm_network_security_group", "mongo")
    static = nsg["security_rule"]
    dynamic = {lib.unquote(r["content"][0]["name"]): r for d in nsg["dynamic"] for r in [d['"security_rule"']]}
    to_members = [r for r in static if r["destination_address_prefix"] != '"*"']
    to_members += [r["content"][0] for r in dynamic.values()]
    assert {lib.unquote(r["name"]) for r in to_members} == {
        "allow-ssh-from-aks", "allow-mongodb-from-aks", "allow-ssh-from-operators", "allow-mongodb-between-members"}
    assert all(r["destination_address_prefix"] == "${local.mongo_members_nsg_prefix}" for r in to_members), to_members
    rule = dynamic["allow-mongodb-between-members"]
    # Only with a replica set: a single VM's NSG keeps exactly its rules of before.
    assert rule["for_each"] == "${var.vm_count > 1 ? [1] : []}"
    content = rule["content"][0]
    assert content["source_address_prefix"] == "${local.mongo_members_nsg_prefix}"
    assert content["destination_port_range"] == "${tostring(local.mongo_port)}"
    assert lib.unquote(content["access"]) == "Allow" and lib.unquote(content["protocol"]) == "Tcp"
    (deny,) = [r for r in static if lib.unquote(r["name"]) == "deny-all-other-inbound"]
    assert int(content["priority"]) < int(deny["priority"])


# The package's /etc/mongod.conf for mongodb-org 4.4 on Ubuntu, which the bootstrap script edits.
PACKAGE_MONGOD_CONF = """\
# mongod.conf

# for documentation of all options, see:
#   http://docs.mongodb.org/manual/reference/configuration-options/

# Where and how to store data.
storage:
  dbPath: /var/lib/mongodb
  journal:
    enabled: true
#  engine:
#  wiredTiger:

# where to write logging data.
systemLog:
  destination: file
  logAppend: true
  path: /var/log/mongodb/mongod.log

# network interfaces
net:
  port: 27017
  bindIp: 127.0.0.1


# how the process runs
processManagement:
  timeZoneInfo: /usr/share/zoneinfo

#security:

#operationProfiling:

#replication:

#sharding:
"""


def _run_replica_set_step(tmp_path: Path, replica_set_name: str) -> tuple[str, list[str]]:
    """The bootstrap script's mongod.conf step, cut out of the rendered script and run twice against a copy of the
    package's mongod.conf, with a systemctl that only records its arguments. Returns the file and the calls."""
    script = _render_bootstrap(replica_set_name)
    m = re.search(r'^if \[ -n "\$replica_set_name" \].*?^fi$', script, re.M | re.S)
    assert m, "the bootstrap script has no replica set step"
    conf = tmp_path / "mongod.conf"
    conf.write_text(PACKAGE_MONGOD_CONF)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$*" >>{calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    step = m.group(0).replace("/etc/mongod.conf", str(conf))
    assert str(conf) in step, "the step no longer edits /etc/mongod.conf: update this test"
    program = f"set -euo pipefail\nreplica_set_name={shlex.quote(replica_set_name)}\n{step}\n"
    for _ in range(2):  # the script is safe to run again
        out = subprocess.run(["bash", "-c", program], env=dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin"),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    return conf.read_text(), calls.read_text().splitlines() if calls.exists() else []


def test_a_replica_set_member_gets_its_set_name_and_keeps_listening_on_loopback(tmp_path: Path) -> None:
    text, calls = _run_replica_set_step(tmp_path, "rs0")
    conf = yaml.safe_load(text)
    assert conf["replication"] == {"replSetName": "rs0"}, text
    # Binding the private address waits for the keyFile (docs/scaling.md): never an unauthenticated mongod on the net.
    assert conf["net"] == {"port": 27017, "bindIp": "127.0.0.1"}
    assert "security" not in conf
    assert text.count("replication:") - text.count("#replication:") == 1, "a second run appended again"
    assert calls == ["try-restart mongod"], calls


def test_a_single_vm_keeps_the_packages_mongod_conf(tmp_path: Path) -> None:
    text, calls = _run_replica_set_step(tmp_path, "")
    assert text == PACKAGE_MONGOD_CONF and calls == []
