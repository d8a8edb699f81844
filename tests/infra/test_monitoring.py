"""The shipped Prometheus alert rules and Grafana dashboard: promtool checks and unit-tests the rules, and every
series they and the dashboard use is one the agent exports (the agent's own scrape is checked against the same list
in tests/pitr.rs)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring/prometheus/mongo-backup-agent.rules.yml"
DASHBOARD = ROOT / "monitoring/grafana/mongo-backup-agent.json"
METRICS_SOURCE = ROOT / "src/metrics/mod.rs"


def exported() -> set[str]:
    """Series names the agent renders: each `family("name", …)` call in src/metrics/mod.rs."""
    names = re.findall(r'family\(\s*"([a-z_]+)"', METRICS_SOURCE.read_text())
    return {f"mongo_backup_agent_{n}" for n in names}


def used(text: str) -> set[str]:
    return set(re.findall(r"mongo_backup_agent_[a-z_]+", text))


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 6 rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    here = Path(__file__).parent / "monitoring"
    out = subprocess.run(["promtool", "test", "rules", "alerts.test.yml"], cwd=here, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    broken = RULES.read_text().replace("> 5 * mongo_backup_agent_pitr_chunk_span_seconds", "> 50 * mongo_backup_agent_pitr_chunk_span_seconds")
    (tmp_path / "rules.yml").write_text(broken)
    test = (Path(__file__).parent / "monitoring/alerts.test.yml").read_text()
    (tmp_path / "t.yml").write_text(test.replace("../../../monitoring/prometheus/mongo-backup-agent.rules.yml", "rules.yml"))
    out = subprocess.run(["promtool", "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "MongoBackupPitrLagging" in out.stdout + out.stderr


def test_rules_and_dashboard_use_only_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for source, text in [("rules", RULES.read_text()), ("dashboard", exprs)]:
        unknown = used(text) - exported()
        assert not unknown, f"{source} use series the agent does not export: {sorted(unknown)}"
    assert used(exprs) >= {"mongo_backup_agent_pitr_lag_seconds", "mongo_backup_agent_pitr_oplog_window_seconds"}
