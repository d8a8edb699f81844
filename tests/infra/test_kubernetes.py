"""The rendered k8s/ overlay: the renderer agrees with kubectl kustomize, every object passes kubernetes-validate
--strict, the CronJob's security settings hold field by field, and the manifests agree with what Terraform creates."""

from __future__ import annotations

import copy
import ipaddress
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

import infra_lib as lib

# Versions to validate against: an older minor AKS still runs and the newest the validator knows.
K8S_VERSIONS = ["1.31.0", "1.37.0"]


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    import kustomize_render

    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches:\n  - path: x.yaml\n")
    with pytest.raises(kustomize_render.UnsupportedFeature):
        kustomize_render.render(str(tmp_path))


def test_renderer_matches_kubectl_kustomize() -> None:
    theirs = lib.kubectl_kustomize(lib.rendered_overlay_dir())
    if theirs is None:
        pytest.skip("kubectl is not installed here; the python renderer stands alone")

    def key(o: dict[str, Any]) -> tuple[str, str, str]:
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    ours = {key(o): o for o in lib.rendered()}
    assert ours == {key(o): o for o in theirs}


def test_overlay_needs_terraforms_values(tmp_path: Path) -> None:
    """Without target.env the overlay does not render: nothing falls back to placeholder addresses."""
    import kustomize_render

    shutil.copytree(lib.K8S, tmp_path / "k8s", ignore=shutil.ignore_patterns("target.env"))
    with pytest.raises(kustomize_render.RenderError, match="target.env"):
        kustomize_render.render(str(tmp_path / "k8s" / lib.OVERLAY))


def test_rendered_objects_are_the_expected_set() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in lib.rendered())
    assert kinds == [
        ("CronJob", "mongo-backup"),
        ("Namespace", "backup"),
        ("NetworkPolicy", "mongo-backup-kicker"),
        ("ServiceAccount", "mongo-backup-kicker"),
    ], "a new object needs its own checks here (and no Role/RoleBinding may appear: the kicker has no API rights)"
    text = yaml.safe_dump_all(list(lib.rendered()))
    assert "192.0.2." not in text, "a base placeholder address survived the overlay"
    assert "mongo-backup-overlay-values" not in text, "the local-config ConfigMap must not be applied"


# ---------------------------------------------------------------------------------------------------------------------
# kubernetes-validate --strict

def kubernetes_validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    argv = lib.offline([lib.tool("tests", "kubernetes-validate"), "--strict", "-k", version, str(path)])
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_rendered_object_passes_strict_schema_validation(tmp_path: Path, version: str) -> None:
    objects = list(lib.rendered())
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    out = kubernetes_validate(path, version)
    assert out.returncode == 0, out.stdout + out.stderr
    passed = [line for line in out.stdout.splitlines() if " passed for resource " in line]
    assert len(passed) == len(objects), out.stdout


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    cj = copy.deepcopy(lib.rendered_object("CronJob", "mongo-backup"))
    cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cj))
    out = kubernetes_validate(path, K8S_VERSIONS[-1])
    assert out.returncode != 0 and "securityContex" in out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------------------------------
# The CronJob, field by field

def cronjob_problems(cj: dict[str, Any]) -> list[str]:
    """Every way the rendered CronJob departs from issue 7's requirements; empty when it meets them all."""
    problems: list[str] = []

    def expect(path: str, actual: Any, wanted: Any | Callable[[Any], bool]) -> None:
        ok = wanted(actual) if callable(wanted) else actual == wanted
        if not ok:
            problems.append(f"{path} = {actual!r}")

    spec = cj.get("spec", {})
    expect("metadata.namespace", cj["metadata"].get("namespace"), "backup")
    expect("spec.schedule", spec.get("schedule"), "0 * * * *")
    expect("spec.concurrencyPolicy", spec.get("concurrencyPolicy"), "Forbid")
    expect("spec.suspend", spec.get("suspend", False), False)
    expect("spec.startingDeadlineSeconds", spec.get("startingDeadlineSeconds"), lambda v: isinstance(v, int) and 0 < v < 3600)
    expect("spec.successfulJobsHistoryLimit", spec.get("successfulJobsHistoryLimit"), lambda v: isinstance(v, int) and 1 <= v <= 10)
    expect("spec.failedJobsHistoryLimit", spec.get("failedJobsHistoryLimit"), lambda v: isinstance(v, int) and 1 <= v <= 10)

    job = spec.get("jobTemplate", {}).get("spec", {})
    expect("job.backoffLimit", job.get("backoffLimit"), lambda v: isinstance(v, int) and 0 <= v <= 6)
    # Below one hour: with Forbid, a stuck run would otherwise block the next hour's.
    expect("job.activeDeadlineSeconds", job.get("activeDeadlineSeconds"), lambda v: isinstance(v, int) and 0 < v < 3600)

    pod = job.get("template", {}).get("spec", {})
    expect("pod.restartPolicy", pod.get("restartPolicy"), "OnFailure")
    expect("pod.automountServiceAccountToken", pod.get("automountServiceAccountToken"), False)
    expect("pod.serviceAccountName", pod.get("serviceAccountName"), "mongo-backup-kicker")
    for host_ns in ("hostNetwork", "hostPID", "hostIPC"):
        expect(f"pod.{host_ns}", pod.get(host_ns, False), False)
    psc = pod.get("securityContext", {})
    expect("pod.securityContext.runAsNonRoot", psc.get("runAsNonRoot"), True)
    expect("pod.securityContext.runAsUser", psc.get("runAsUser"), lambda v: isinstance(v, int) and v >= 10000)
    expect("pod.securityContext.runAsGroup", psc.get("runAsGroup"), lambda v: isinstance(v, int) and v >= 10000)
    expect("pod.securityContext.fsGroup", psc.get("fsGroup"), psc.get("runAsGroup"))
    expect("pod.securityContext.seccompProfile.type", psc.get("seccompProfile", {}).get("type"), "RuntimeDefault")

    containers = pod.get("containers", [])
    expect("pod.containers (count)", len(containers), 1)
    expect("pod.initContainers", pod.get("initContainers", []), [])
    for c in containers[:1]:
        sc = c.get("securityContext", {})
        expect("container.securityContext.runAsNonRoot", sc.get("runAsNonRoot"), True)
        expect("container.securityContext.runAsUser", sc.get("runAsUser", psc.get("runAsUser")), psc.get("runAsUser"))
        expect("container.securityContext.privileged", sc.get("privileged"), False)
        expect("container.securityContext.allowPrivilegeEscalation", sc.get("allowPrivilegeEscalation"), False)
        expect("container.securityContext.readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem"), True)
        expect("container.securityContext.capabilities.drop", sc.get("capabilities", {}).get("drop"), ["ALL"])
        expect("container.securityContext.capabilities.add", sc.get("capabilities", {}).get("add", []), [])
        expect("container.securityContext.seccompProfile.type", sc.get("seccompProfile", {}).get("type"), "RuntimeDefault")
        expect("container.image", c.get("image"), lib.TEST_KICKER_IMAGE)
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                expect(f"container.resources.{kind}.{r}", res.get(kind, {}).get(r), lambda v: v is not None)
        expect("container.ports", c.get("ports", []), [])
        mounts = c.get("volumeMounts", [])
        expect("container.volumeMounts", [(m["name"], m["mountPath"], m.get("readOnly")) for m in mounts], [("ssh", "/secrets", True)])

        cmd = c.get("command", [])
        # try-members, then the ssh command it runs per member: no shell anywhere.
        expect("container.command[:2] (members in order, no shell)", cmd[:2], [TRY_MEMBERS, "ssh"])
        expect("container.args", c.get("args"), None)
        pairs = [f"{a} {b}" for a, b in zip(cmd, cmd[1:])]
        for wanted in ("-i /secrets/id_ed25519", "-o UserKnownHostsFile=/secrets/known_hosts",
                       "-o StrictHostKeyChecking=yes", "-o BatchMode=yes"):
            expect(f"container.command has {wanted!r}", wanted in pairs, True)
        expect("container.command tail", cmd[-2:], ["mongo-backup-trigger@{member}", "run-now"])
        env = {e["name"]: e.get("valueFrom", {}).get("configMapKeyRef", {}) for e in c.get("env", [])}
        expect("container.env MBA_TARGET_HOSTS", env.get("MBA_TARGET_HOSTS"),
               {"name": "mongo-backup-target", "key": "hosts", "optional": True})
        expect("container.env MONGO_VM_HOST (single-host fallback)", env.get("MONGO_VM_HOST"),
               {"name": "mongo-backup-target", "key": "host"})
        for bad in ("StrictHostKeyChecking=no", "StrictHostKeyChecking=accept-new", "UserKnownHostsFile=/dev/null"):
            expect(f"container.command has no {bad}", any(bad in a for a in cmd), False)

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    expect("pod.volumes", sorted(volumes), ["ssh"])
    secret = volumes.get("ssh", {}).get("secret", {})
    expect("volume ssh secretName", secret.get("secretName"), "mongo-backup-ssh")
    expect("volume ssh defaultMode", secret.get("defaultMode"), 0o400)
    expect("volume ssh items", sorted(i["key"] for i in secret.get("items", [])), ["id_ed25519", "known_hosts"])
    expect("volume ssh item modes", [i.get("mode") for i in secret.get("items", []) if i.get("mode") not in (None, 0o400)], [])
    return problems


def test_cronjob_meets_every_requirement() -> None:
    assert cronjob_problems(lib.rendered_object("CronJob", "mongo-backup")) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        node: Any = obj
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return mutate


def _replace_arg(cj: dict[str, Any], old: str, new: str) -> None:
    cmd = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    cmd[cmd.index(old)] = new


POD = "spec.jobTemplate.spec.template.spec"
# Where k8s/kicker/Dockerfile installs k8s/kicker/try-members.
TRY_MEMBERS = "/usr/local/bin/try-members"
BREAKAGES = {
    "schedule": _set("spec.schedule", "*/5 * * * *"),
    "concurrency": _set("spec.concurrencyPolicy", "Allow"),
    "no deadline": _set("spec.jobTemplate.spec.activeDeadlineSeconds", KeyError),
    "restart never": _set(f"{POD}.restartPolicy", "Never"),
    "token mounted": _set(f"{POD}.automountServiceAccountToken", True),
    "root": _set(f"{POD}.securityContext.runAsNonRoot", False),
    "privileged": _set(f"{POD}.containers.0.securityContext.privileged", True),
    "escalation": _set(f"{POD}.containers.0.securityContext.allowPrivilegeEscalation", True),
    "writable root": _set(f"{POD}.containers.0.securityContext.readOnlyRootFilesystem", False),
    "caps": _set(f"{POD}.containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}),
    "seccomp": _set(f"{POD}.containers.0.securityContext.seccompProfile", {"type": "Unconfined"}),
    "no limits": _set(f"{POD}.containers.0.resources", {"requests": {"cpu": "10m", "memory": "16Mi"}}),
    "key mode": _set(f"{POD}.volumes.0.secret.defaultMode", 0o644),
    "tofu": lambda cj: _replace_arg(cj, "StrictHostKeyChecking=yes", "StrictHostKeyChecking=accept-new"),
    "no pinned known_hosts": lambda cj: _replace_arg(cj, "UserKnownHostsFile=/secrets/known_hosts", "UserKnownHostsFile=/dev/null"),
    "shell": _set(f"{POD}.containers.0.command", ["sh", "-c", "ssh mongo-backup-trigger@$(MONGO_VM_HOST) run-now"]),
    "one member only": lambda cj: cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"].pop(0),
    "member list ignored": _set(f"{POD}.containers.0.env.0.valueFrom.configMapKeyRef.key", "host"),
    "hostNetwork": _set(f"{POD}.hostNetwork", True),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_cronjob_check_notices_a_breakage(breakage: str) -> None:
    cj = copy.deepcopy(lib.rendered_object("CronJob", "mongo-backup"))
    BREAKAGES[breakage](cj)
    assert cronjob_problems(cj), f"breaking '{breakage}' went unnoticed"


# ---------------------------------------------------------------------------------------------------------------------
# The other objects

def test_namespace_enforces_restricted_pod_security() -> None:
    labels = lib.rendered_object("Namespace", "backup")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_service_account_has_no_token_and_no_rights() -> None:
    sa = lib.rendered_object("ServiceAccount", "mongo-backup-kicker")
    assert sa["automountServiceAccountToken"] is False
    assert not [o for o in lib.rendered() if o["kind"] in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}]


def test_network_policy_allows_only_dns_and_ssh_to_the_vm() -> None:
    np = lib.rendered_object("NetworkPolicy", "mongo-backup-kicker")
    spec = np["spec"]
    pod_labels = lib.rendered_object("CronJob", "mongo-backup")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items(), "the policy must select the kicker pods"
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    assert spec.get("ingress", []) == []
    dns, ssh = spec["egress"]
    assert sorted((p["protocol"], p["port"]) for p in dns["ports"]) == [("TCP", 53), ("UDP", 53)]
    (dns_peer,) = dns["to"]
    assert dns_peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
    assert dns_peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert ssh["ports"] == [{"protocol": "TCP", "port": 22}]
    assert ssh["to"] == [{"ipBlock": {"cidr": lib.TEST_VM_CIDR}}]
    assert ipaddress.ip_network(lib.TEST_VM_CIDR).num_addresses == 1


def test_kicker_dockerfile_user_matches_the_pod() -> None:
    text = (lib.K8S / "kicker" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert ":" in base and not base.endswith(":latest"), f"base image must be pinned: {base}"
    (user,) = re.findall(r"^USER\s+(\S+)", text, re.M)
    uid, gid = (int(x) for x in user.split(":"))
    installs = re.findall(r"apt-get install ([^&\\\n]*)", text)
    # The script the CronJob's command starts is this repository's k8s/kicker/try-members, root-owned, executable.
    copies = re.findall(r"^COPY\s+(.+)$", text, re.M)
    assert copies == [f"--chmod=0755 try-members {TRY_MEMBERS}"], copies
    assert lib.cronjob_container()["command"][0] == TRY_MEMBERS
    assert (lib.K8S / "kicker" / "try-members").stat().st_mode & 0o777 == 0o755
    assert [i.split() for i in installs] == [["-y", "--no-install-recommends", "openssh-client"]], installs
    assert re.search(rf"useradd --uid {uid} --gid {gid} ", text)
    psc = lib.rendered_object("CronJob", "mongo-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (uid, gid, gid)


def test_try_members_is_valid_bash_and_shellcheck_clean() -> None:
    script = lib.K8S / "kicker" / "try-members"
    assert script.read_text().startswith("#!/bin/bash\n")
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, f"shellcheck:\n{out.stdout}{out.stderr}"
