"""infra/monitoring: the Alertmanager rules pass promtool (syntax and a unit test of when they fire), and
every metric the rules and the Grafana dashboard query is one the gateway really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import yaml
from prometheus_client import generate_latest

from hydro_serving.monitor.sampler import tap
from hydro_serving.monitor.service import Monitor
from hydro_serving.monitor.storage import SQLiteStore
from tests.conftest import unavailable

from .conftest import exchange, scoring_spec

INFRA = Path(__file__).resolve().parents[2] / "infra" / "monitoring"
METRIC = re.compile(r"\b(hydro_[a-z_]+)\b")
PROMQL_WORDS = {"by", "sum", "max", "rate", "label_values"}


def _exported(tmp_path: Path) -> set[str]:
    """Names in a real /metrics exposition after a window closed, a row failed, a sample was dropped."""
    monitor = Monitor(SQLiteStore(tmp_path / "m.db"), profile_loader=lambda spec: None, queue_size=1)
    spec = scoring_spec(rows=20)
    rng = np.random.default_rng(0)
    for _ in range(2):
        rows = [{"x": float(v), "y": 1.0, "plan": "a"} for v in rng.normal(size=20)]
        monitor.process([exchange(spec, rows)], 1.0)
    monitor.process([exchange(spec, [{"x": "bad", "y": 1.0, "plan": "a"}])], 1.0)
    monitor.quality("scoring", [1])
    monitor.metrics.quality.labels("scoring", "all", "accuracy").set(1)
    monitor.metrics.alerts.labels("scoring", "drift_started", "ok").inc()
    monitor.offer(tap({}), spec, b"[]", b"[]", 200)
    monitor.offer(tap({}), spec, b"[]", b"[]", 200)  # the queue holds one: this one is dropped
    text = generate_latest(monitor.metrics.registry).decode()
    monitor.store.close()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("hydro_")}


def _queried(texts: list[str]) -> set[str]:
    return {m for t in texts for m in METRIC.findall(t)} - PROMQL_WORDS


def test_rules_and_dashboard_query_only_exported_metrics(tmp_path: Path) -> None:
    exported = _exported(tmp_path)
    assert {"hydro_drift_score", "hydro_drift_p_value", "hydro_drift_detected", "hydro_rows_unhealthy_total",
            "hydro_monitor_samples_dropped_total"} <= exported
    rules = yaml.safe_load((INFRA / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads((INFRA / "grafana-dashboard.json").read_text())
    targets = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    variables = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = _queried(exprs + targets + variables)
    assert used and used <= exported, used - exported
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])


def test_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package 'prometheus')")
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        proc = subprocess.run([promtool, *args], cwd=INFRA, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout
