"""Issue 15's acceptance, end to end with real processes: the demo pipeline, 2000 pairs like its training data,
then 2000 pairs whose right-hand listings changed (longer titles, no ItemSpecifics).

A real gateway runs pm-features, both classifiers (trained in the test) and the router; monitoring samples
every request of the router and of pm-features. Expected: the first window becomes the reference (no
training profile for text inputs), the next ones show no drift, every window after the change flags exactly
``Title2`` and ``ItemSpecifics2``; the webhook receiver (a real HTTP server) gets one ``drift_started``;
``hydro monitor`` prints it. The data and the request order are seeded, so the statistics are the same on
every run.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.demo.pairs import generate
from hydro_serving.demo.training import train_all
from hydro_serving.stack import load_stack
from tests.gateway_fixtures import Gateway

from .test_gateway_monitoring import Receiver

REPO = Path(__file__).resolve().parents[2]
WINDOW = 500
PER_REQUEST = 10
MARKETING = ["Brand New", "Factory Sealed", "Free Shipping", "Fast Dispatch", "Best Price", "Original Box",
             "Authentic", "Great Gift", "Limited Offer", "Top Rated Seller"]


def _pairs() -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(2000 pairs like the training data, 2000 pairs whose second listing changed)."""
    normal = [p.as_request() for seed in (5, 6) for p in generate(seed)[0]][:2000]
    rng = random.Random(15)
    source = [p.as_request() for seed in (7, 8) for p in generate(seed)[0]][:2000]
    drifted = []
    for pair in source:
        extra = " ".join(rng.sample(MARKETING, 4))
        drifted.append({**pair, "Title2": f"{pair['Title2']} - {extra}", "ItemSpecifics2": ""})
    return normal, drifted


def _specs(models: Any, receiver: Receiver) -> list[dict[str, Any]]:
    stack = load_stack(REPO / "stack.yml")
    features = stack.function("pm-features").resolved(stack.root).to_dict()
    features["monitoring"] = {"sample": 1.0, "window": {"rows": WINDOW, "time": "1h"}}
    sk = stack.function("pm-classifier").to_dict()
    sk["model"] = str(models.sklearn_dir)
    gb = stack.function("pm-classifier-gb").to_dict()
    gb["model"] = str(models.onnx_dir)
    router = stack.function("product-matching").to_dict()
    router["monitoring"] = {"sample": 1.0, "window": {"rows": WINDOW, "time": "1h"}, "alert": receiver.url}
    return [features, sk, gb, router]


@pytest.mark.slow
def test_demo_pipeline_drift_acceptance(gateway: Gateway, tmp_path: Path) -> None:
    models = train_all(tmp_path / "models")
    receiver = Receiver()
    try:
        for spec in _specs(models, receiver):
            gateway.deploy(spec)
        normal, drifted = _pairs()
        for pairs in (normal, drifted):
            for i in range(0, len(pairs), PER_REQUEST):
                status, _, body = gateway.invoke("product-matching", pairs[i:i + PER_REQUEST], timeout=120)
                assert status == 200, body
        for name in ("product-matching", "pm-features"):
            gateway.wait_for(lambda n=name: len(gateway.admin("GET", f"/system/monitoring/{n}?limit=50")[1]
                                                ["windows"]) == 8, timeout=120, what=f"8 windows of {name}")
            windows = gateway.admin("GET", f"/system/monitoring/{name}?limit=50")[1]["windows"]
            assert [w["rows"] for w in windows] == [WINDOW] * 8
            assert windows[0]["baseline"] and windows[0]["reference"] == "window"
            assert [w["drift"] for w in windows[1:4]] == [False] * 3, windows
            assert [w["drifted_fields"] for w in windows[1:4]] == [[]] * 3
            assert [w["drifted_fields"] for w in windows[4:]] == [["Title2", "ItemSpecifics2"]] * 4, windows
            assert all(w["drift"] and w["drift_share"] == 0.5 for w in windows[4:])
        gateway.wait_for(lambda: receiver.received, what="the webhook")
        view = gateway.admin("GET", "/system/monitoring/product-matching")[1]
        assert view["drifting"] and view["window"]["variants"] is not None  # both classifiers served the window
        assert set(view["window"]["variant_rows"]) <= {"pm-classifier", "pm-classifier-gb"}
        proc = subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", "monitor", "product-matching",
                               "--gateway", gateway.url, "--state", str(gateway.state_dir)],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        receiver.close()
    assert [m["event"] for m in receiver.received] == ["drift_started"]
    assert receiver.received[0]["window"] == 5
    assert receiver.received[0]["drifted_fields"] == ["Title2", "ItemSpecifics2"]
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "window 8: 500 rows vs first window after deploy; DATASET DRIFT: 2 of 4 fields" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and len(line.split()) > 6}
    assert lines["Title2"].endswith("YES") and lines["ItemSpecifics2"].endswith("YES")
    assert lines["Title1"].endswith("no") and lines["ItemSpecifics1"].endswith("no")
    (tmp_path / "hydro-monitor.txt").write_text(out)
    print(out)
