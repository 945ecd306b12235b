"""The monolith of the pipeline case: both product-matching stages (features, classifier) in one process.

The same feature code the ``pm-features`` function runs (``functions/pm-features/features.py``,
loaded by the demo's own loader) and the same random forest ``pm-classifier`` serves, answering
the same records, so the two-stage pipeline is compared with what one hand-written app would do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import joblib
import numpy as np
from flask import Flask, jsonify, request

from hydro_serving.demo.paths import load_features


def create_app() -> Flask:
    """Load the features module and the classifier folder named by ``BENCH_MODEL_DIR`` once per worker."""
    folder = Path(os.environ["BENCH_MODEL_DIR"])
    model = joblib.load(folder / "model.joblib")
    names = [f["name"] for f in json.loads((folder / "signature.json").read_text())["inputs"]]
    features = load_features()
    app = Flask("bench-flask-monolith")

    @app.post("/")
    def match():
        pairs = request.get_json(force=True)
        records = [features.pair_features(p["Title1"], p.get("ItemSpecifics1"), p["Title2"], p.get("ItemSpecifics2"))
                   for p in pairs]
        x = np.asarray([[r[n] for n in names] for r in records], dtype=np.float64)
        proba = model.predict_proba(x)
        labels = model.classes_[proba.argmax(axis=1)]
        return jsonify([{"match": bool(label), "probability": float(p)} for label, p in zip(labels, proba[:, 1],
                                                                                            strict=True)])

    @app.get("/ready")
    def ready():
        return "ok"

    return app
