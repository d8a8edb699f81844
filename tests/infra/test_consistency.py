"""Terraform creates what the manifests refer to, under the same names: the namespace, the Secret and its keys, the
ConfigMap and its keys, the host key alias, the trigger user, the SSH port, the overlay's values."""

from __future__ import annotations

import re
from typing import Any

import yaml

import infra_lib as lib


def _pod() -> dict[str, Any]:
    return lib.rendered_object("CronJob", "mongo-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_namespace_matches_terraform() -> None:
    loc = lib.locals_()
    ns = lib.rendered_object("Namespace", "backup")
    assert lib.literal(loc["k8s_namespace"]) == ns["metadata"]["name"]
    # Same labels on both sides, so neither `terraform apply` nor `kubectl apply -k` undoes the other's.
    assert lib.mapping(loc["k8s_namespace_labels"]) == ns["metadata"]["labels"]
    tf_ns = lib.resource("kubernetes_namespace_v1", "backup")
    assert tf_ns["metadata"][0]["labels"] == "${local.k8s_namespace_labels}"
    for obj in lib.rendered():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == ns["metadata"]["name"], obj["metadata"]


def test_secret_name_and_keys_match_terraform() -> None:
    loc = lib.locals_()
    secret = lib.resource("kubernetes_secret_v1", "ssh")
    assert secret["metadata"][0]["name"] == "${local.k8s_ssh_secret_name}"
    tf_keys = set(lib.mapping(secret["data"]))
    (volume,) = [v for v in _pod()["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == lib.literal(loc["k8s_ssh_secret_name"])
    wanted = {i["key"] for i in volume["secret"]["items"]}
    assert wanted <= tf_keys, f"the CronJob mounts {sorted(wanted - tf_keys)} which Terraform's Secret lacks"
    assert {"id_ed25519", "known_hosts", "host"} <= tf_keys
    assert lib.mapping(secret["data"])["id_ed25519"] == "${tls_private_key.trigger.private_key_openssh}"
    assert lib.mapping(secret["data"])["known_hosts"] == "${local.known_hosts}"


def test_configmap_name_and_keys_match_terraform() -> None:
    loc = lib.locals_()
    cm = lib.resource("kubernetes_config_map_v1", "target")
    assert cm["metadata"][0]["name"] == "${local.k8s_target_cm_name}"
    tf_data = lib.mapping(cm["data"])
    refs = [e["valueFrom"]["configMapKeyRef"] for e in lib.cronjob_container()["env"]]
    assert refs, "the CronJob reads its target from the ConfigMap"
    for ref in refs:
        assert ref["name"] == lib.literal(loc["k8s_target_cm_name"])
        assert ref["key"] in tf_data, f"ConfigMap key {ref['key']} is not written by Terraform"
        # Only the member list may be missing (a ConfigMap from before it existed): try-members then uses host.
        assert ref.get("optional") in ((None, False) if ref["key"] != "hosts" else (True,)), ref
    # host is the first member, hosts all of them in the order the CronJob tries them (test_terraform evaluates both).
    assert tf_data["host"] == "${local.mongo_vm_private_ip}"
    assert tf_data["hosts"] == '${join(" ", local.mongo_member_ips)}'


def test_known_hosts_pins_every_member_under_the_alias() -> None:
    loc = lib.locals_()
    assert loc["known_hosts"] == (
        '${join("", [for i in range(var.vm_count) : "${local.ssh_host_key_alias} '
        '${trimspace(tls_private_key.vm_host_ed25519[i].public_key_openssh)}\\n"])}'
    )
    # Each member boots with its own key, the one known_hosts lists at the same index.
    cloud_init = loc["cloud_init"]
    assert "for i in range(var.vm_count) :" in cloud_init
    assert "host_key_private = tls_private_key.vm_host_ed25519[i].private_key_openssh" in cloud_init
    assert "host_key_public = trimspace(tls_private_key.vm_host_ed25519[i].public_key_openssh)" in cloud_init


def test_ssh_target_matches_terraform() -> None:
    loc = lib.locals_()
    cmd = lib.cronjob_container()["command"]
    # known_hosts names the VM by this alias; the CronJob must look it up under the same name.
    assert f"HostKeyAlias={lib.literal(loc['ssh_host_key_alias'])}" in cmd
    assert cmd[-2] == f"{lib.literal(loc['trigger_user'])}@{{member}}"
    # The port the CronJob dials, the port Terraform publishes, the port the NetworkPolicy and the NSG open.
    env = {e["name"]: e["valueFrom"]["configMapKeyRef"]["key"] for e in lib.cronjob_container()["env"]}
    port_key = env[cmd[cmd.index("-p") + 1].strip("$()")]
    assert lib.mapping(lib.resource("kubernetes_config_map_v1", "target")["data"])[port_key] == "${tostring(local.mongo_ssh_port)}"
    np = lib.rendered_object("NetworkPolicy", "mongo-backup-kicker")
    assert np["spec"]["egress"][1]["ports"][0]["port"] == loc["mongo_ssh_port"] == 22


def test_forced_command_is_the_packaged_agent() -> None:
    loc = lib.locals_()
    assert lib.literal(loc["trigger_forced_command"]) == "/usr/bin/mongo-backup-agent trigger"
    line = loc["trigger_authorized_key"]
    assert line.startswith('"restrict,from=\\"${var.aks_subnet_cidr}\\",command=\\"${local.trigger_forced_command}\\" ')


def test_overlay_reads_exactly_what_terraform_writes() -> None:
    overlay = (lib.K8S / lib.OVERLAY / "kustomization.yaml").read_text()
    read = set(re.findall(r"fieldPath: data\.(\w+)", overlay))
    outputs = lib.labelled("output", 1)
    written = set(re.findall(r"^\s*([A-Z_]+)=", str(outputs[("kustomize_env",)]["value"]).replace("\\n", "\n"), re.M))
    assert read and read == written, f"overlay reads {sorted(read)}, terraform output kustomize_env writes {sorted(written)}"
    # The NetworkPolicy's block is the members' (the VM's /32, or the three members' /30: test_terraform evaluates it).
    assert "MONGO_VM_CIDR=${local.mongo_members_cidr}" in str(outputs[("kustomize_env",)]["value"])
    env_lines = [line for line in (lib.K8S / lib.OVERLAY / ".gitignore").read_text().splitlines() if not line.startswith("#")]
    assert env_lines == ["target.env"], "target.env is generated per environment and must stay out of git"


def test_ansible_vars_feed_the_role() -> None:
    """terraform output ansible_vars only sets variables the Ansible role declares, with the role's storage keys."""
    defaults = yaml.safe_load((lib.REPO / "ansible/roles/mongo_backup_agent/defaults/main.yml").read_text())
    value = lib.labelled("output", 1)[("ansible_vars",)]["value"]
    assert isinstance(value, dict), value
    names = {lib.unquote(k) for k in value if not k.startswith("__")}
    assert names and names <= set(defaults), f"not role variables: {sorted(names - set(defaults))}"
    storage = lib.mapping(value["mongo_backup_agent_storage"])
    assert set(storage) == set(defaults["mongo_backup_agent_storage"]), (storage, defaults["mongo_backup_agent_storage"])
    assert storage["kind"] == "azure" and storage["auth"] == "managed-identity"
