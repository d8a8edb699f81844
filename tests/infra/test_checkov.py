"""checkov over terraform/, k8s/ (manifests and the kicker Dockerfile) and the rendered overlay, offline. Every
finding must be listed in checkov-skips.txt with a reason, and every listed check must still fail somewhere."""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

import infra_lib as lib

SKIPS_FILE = Path(__file__).with_name("checkov-skips.txt")


def accepted_skips() -> dict[str, str]:
    skips: dict[str, str] = {}
    for n, line in enumerate(SKIPS_FILE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"(CKV2?_[A-Z0-9]+_\d+)\s+(\S.{15,})", line)
        assert m, f"checkov-skips.txt:{n}: expected 'ID  reason (a sentence)', got {line!r}"
        assert m.group(1) not in skips, f"checkov-skips.txt:{n}: {m.group(1)} listed twice"
        skips[m.group(1)] = m.group(2)
    return skips


def checkov(target: Path, frameworks: list[str]) -> list[dict[str, Any]]:
    """checkov's JSON reports for one directory, run without network and without its platform download."""
    argv = lib.offline([
        lib.tool("checkov", "checkov"), "--directory", str(target), "--framework", *frameworks,
        "--skip-download", "--output", "json", "--soft-fail", "--quiet",
    ])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "BC_SKIP_MAPPING": "TRUE", "HOME": "/tmp"})
    assert out.returncode == 0, f"checkov crashed on {target}:\n{out.stderr[-4000:]}"
    doc = json.loads(out.stdout)
    reports = doc if isinstance(doc, list) else [doc]
    assert all("results" in r for r in reports), f"checkov found nothing to scan in {target}: {out.stdout[:500]}"
    return reports


def findings(reports: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(c["check_id"], c["resource"], c["file_path"]) for r in reports for c in r["results"]["failed_checks"]]


@functools.lru_cache(maxsize=None)
def _rendered_dir() -> Path:
    out = Path(lib.rendered_overlay_dir()).parent.parent.parent / "rendered"
    out.mkdir(exist_ok=True)
    (out / "manifests.yaml").write_text(yaml.safe_dump_all(list(lib.rendered())))
    return out


@functools.lru_cache(maxsize=None)
def all_findings() -> dict[str, list[tuple[str, str, str]]]:
    targets = {
        "terraform/": (lib.TERRAFORM, ["terraform"]),
        "k8s/": (lib.K8S, ["kubernetes", "dockerfile"]),
        "rendered overlay": (_rendered_dir(), ["kubernetes"]),
    }
    result = {}
    for name, (path, frameworks) in targets.items():
        reports = checkov(path, frameworks)
        passed = sum(r["summary"]["passed"] for r in reports)
        assert passed > 10, f"checkov ran only {passed} passing checks on {name}: is it scanning anything?"
        assert {r["check_type"] for r in reports} == set(frameworks), f"{name}: {[r['check_type'] for r in reports]}"
        result[name] = findings(reports)
    return result


def test_skip_file_is_well_formed() -> None:
    assert accepted_skips()


def test_every_finding_is_an_accepted_skip() -> None:
    skips = accepted_skips()
    new = [f"{target}: {cid} {res} ({path})" for target, fs in all_findings().items()
           for cid, res, path in fs if cid not in skips]
    assert not new, "checkov findings without an entry in checkov-skips.txt:\n" + "\n".join(new)


def test_no_stale_skips() -> None:
    failing = {cid for fs in all_findings().values() for cid, _, _ in fs}
    stale = sorted(set(accepted_skips()) - failing)
    assert not stale, f"these checks pass now; remove them from checkov-skips.txt: {stale}"


def test_checkov_flags_a_weakened_manifest(tmp_path: Path) -> None:
    """The scan above would also catch a regression: weaken the CronJob and checkov must object."""
    cj = copy.deepcopy(lib.rendered_object("CronJob", "mongo-backup"))
    c = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["allowPrivilegeEscalation"] = True
    c["securityContext"]["readOnlyRootFilesystem"] = False
    del c["resources"]["limits"]
    (tmp_path / "cronjob.yaml").write_text(yaml.safe_dump(cj))
    ids = {cid for cid, _, _ in findings(checkov(tmp_path, ["kubernetes"]))}
    assert {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_11", "CKV_K8S_13"} <= ids, sorted(ids)
