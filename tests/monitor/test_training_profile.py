"""A store model's training profile is the reference: the manifest's profile, read by a real gateway from a real
store (a directory store), checks every sampled row and tests the first window already."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from hydro_serving.store import open_store

FEATURES = ["a", "b", "c"]
SIGNATURE = {"inputs": [{"name": n, "dtype": "float64", "shape": [-1]} for n in FEATURES],
             "outputs": [{"name": "label", "dtype": "int64", "shape": [-1]},
                         {"name": "p", "dtype": "float64", "shape": [-1]}]}


def _rows(rng: np.random.Generator, n: int, shift_c: float = 0.0) -> list[dict[str, float]]:
    x = rng.normal([0.0, 5.0, 10.0 + shift_c], [1.0, 2.0, 1.0], size=(n, 3)).round(5)
    return [dict(zip(FEATURES, map(float, r), strict=True)) for r in x]


@pytest.mark.slow
def test_store_profile_is_the_reference(gateway_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_url = f"file://{tmp_path / 'store'}"
    rng = np.random.default_rng(0)
    train = _rows(rng, 2000)
    x = np.array([[r[f] for f in FEATURES] for r in train])
    y = (x[:, 0] + 0.1 * x[:, 2] > 1.0).astype(int)
    model = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression().fit(x, y), model)
    csv = tmp_path / "train.csv"
    csv.write_text("a,b,c\n" + "".join(f"{r['a']},{r['b']},{r['c']}\n" for r in train))
    manifest = open_store(store_url).upload(model, "scorer", framework="sklearn", signature=SIGNATURE,
                                             training_data=csv)
    assert len(manifest.training_profile["columns"][0]["sample"]) == 1000

    monkeypatch.setenv("HYDRO_STORE", store_url)  # the gateway (and so its monitor) reads this store
    gateway = gateway_factory()
    gateway.deploy({"name": "scorer", "lang": "sklearn", "model": "scorer:1", "signature": SIGNATURE,
                    "environment": {"HYDRO_STORE": store_url},
                    "options": {"method": "predict_proba", "outputs": {"label": "label", "p": "proba:1"}},
                    "scale": {"min": 0, "max": 1, "idle": 300, "concurrency": 8},
                    "monitoring": {"sample": 1.0, "window": {"rows": 100, "time": "1h"}}})
    first = _rows(rng, 100)
    first[0] = {"a": 50.0, "b": 5.0, "c": 10.0}  # far outside the training range
    for batch in (first, _rows(rng, 100, shift_c=3.0)):
        for i in range(0, 100, 20):
            status, _, body = gateway.invoke("scorer", batch[i:i + 20])
            assert status == 200, body
    gateway.wait_for(lambda: len(gateway.admin("GET", "/system/monitoring/scorer")[1]["windows"]) == 2,
                     timeout=60, what="2 windows")
    view = gateway.admin("GET", "/system/monitoring/scorer?window=1")[1]
    one, two = view["windows"]
    lo, hi = x.min(axis=0), x.max(axis=0)
    outside = [r for r in first if any(not lo[i] <= r[f] <= hi[i] for i, f in enumerate(FEATURES))]
    assert one["reference"] == "profile" and not one["drift"] and one["unhealthy"] == len(outside) >= 1
    assert {f["field"] for f in view["window"]["fields"]} == set(FEATURES)  # tested against training at once
    assert two["drifted_fields"] == ["c"]
    flagged = gateway.admin("GET", "/system/monitoring/scorer/rows?window=1&unhealthy=true")[1]["rows"]
    assert len(flagged) == len(outside)
    assert all(f["check"] == "out_of_range" and "training range" in f["detail"] for r in flagged
               for f in r["failures"])
    assert any(r["inputs"]["a"] == 50.0 and r["failures"][0]["field"] == "a" for r in flagged)
    hist = gateway.admin("GET", "/system/monitoring/scorer/histograms?window=2")[1]["histograms"]
    c = next(h for h in hist if h["field"] == "c")
    assert sum(c["reference"]) == 1000 and sum(c["production"]) == 100  # training sample vs window, same bins
    assert c["production"][-1] > 50  # the shifted window piles up above the training's top decile
