"""Cached models keep serving with the S3 server stopped (issue 14 point 1), through a real gateway.

The store is a private Ceph RADOS Gateway started for this test (shared/tools/s3-up.sh), so it can be
stopped without touching the shared one at :7480. With it down: cold starts of a pinned version and of
an alias are served from the cache; a redeploy keeps the pin the last deploy resolved (with a warning)
instead of dropping it, so replicas keep loading exactly that version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.conftest import SHARED_TOOLS, free_port, unavailable

pytestmark = [pytest.mark.s3, pytest.mark.slow]

ROW = [[5.1, 3.5, 1.4, 0.2]]


@pytest.fixture
def private_rgw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Ceph RGW of this test alone; ``stop()`` stops it (s3-down.sh: by the pid files in its own folder)."""
    script = SHARED_TOOLS / "s3-up.sh"
    if not script.exists() or os.geteuid() != 0:
        unavailable(f"a private S3 server needs {script} and root; CI has both")
    data = tmp_path / "rgw"
    out = subprocess.run(["bash", str(script), str(data), str(free_port()), str(free_port())],
                         capture_output=True, text=True, timeout=300, check=False)
    if out.returncode != 0:
        pytest.fail(f"s3-up.sh failed: {out.stderr[-2000:]}")
    for token in out.stdout.strip().split("export", 1)[-1].split():
        key, _, value = token.partition("=")
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HYDRO_STORE", "s3://offline-models/team")
    state = {"up": True}

    def stop() -> None:
        if state["up"]:
            subprocess.run(["bash", str(SHARED_TOOLS / "s3-down.sh"), str(data)], check=False, timeout=60)
            state["up"] = False

    yield stop
    stop()
    shutil.rmtree(data, ignore_errors=True)


def _spec(name: str, model: str) -> dict[str, Any]:
    return {"name": name, "lang": "sklearn", "model": model, "scale": {"min": 0, "max": 1, "idle": 1}}


def test_cached_models_serve_with_the_store_stopped(private_rgw: Any, gateway_factory: Any, tmp_path: Path) -> None:
    from hydro_serving.store import open_store

    x, y = load_iris(return_X_y=True)
    model = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), model)
    store = open_store()
    store.upload(model, "iris")
    store.set_alias("iris", 1, "production")

    gw = gateway_factory()
    pins = {}
    for name, ref in (("pinned", "iris:1"), ("aliased", "iris:production")):
        gw.deploy(_spec(name, ref))
        status, _, body = gw.invoke(name, ROW)
        assert status == 200 and body == [0], body  # cached now
        pins[name] = gw.status(name)["modelPin"]
        assert pins[name].startswith("iris:1@sha256:")

    private_rgw()  # the S3 server is gone from here on
    gw.wait_for(lambda: gw.replica_pids() == [], timeout=30, what="scale to zero")
    gw.restart()

    for name, ref in (("pinned", "iris:1"), ("aliased", "iris:production")):
        # a redeploy with the store down keeps the pin of the last deploy: nothing changes
        status, out = gw.admin("PUT", "/system/functions", {"service": name, "hydro": _spec(name, ref)})
        assert status == 202, out
        assert out["modelPin"] == pins[name] and out["changed"] is False, out
        status, _, body = gw.invoke(name, ROW)  # a cold start from the cache, no request to the store
        assert status == 200 and body == [0], (name, body, gw.log()[-3000:])
    assert "keeping the pin iris:1@sha256:" in gw.log()

    # a model the cache never saw cannot be served: a clear error, not a hang or a traceback
    status, out = gw.admin("POST", "/system/functions", {"service": "never", "hydro": _spec("never", "iris:7")})
    assert status == 202, out  # the store cannot say whether it exists: deployed unpinned, with a warning
    status, _, body = gw.invoke("never", ROW)
    assert status in (502, 503) and "Traceback" not in str(body), body
    assert body["function"] == "never"
