"""The baseline of the hop case: a minimal Flask app that calls ``predict()``, as a user would write it.

Served by ``gunicorn -w 2 -k gthread --threads 4 'bench.apps.flask_iris:create_app()'``. It does
nothing the platform does (no validation, metrics, limits): it is the floor the platform's extra
hops are measured against.
"""

from __future__ import annotations

import os

import joblib
import numpy as np
from flask import Flask, jsonify, request


def create_app() -> Flask:
    """Load the model named by ``BENCH_MODEL`` (a joblib file) once per worker."""
    model = joblib.load(os.environ["BENCH_MODEL"])
    app = Flask("bench-flask-iris")

    @app.post("/")
    def predict():
        rows = np.asarray(request.get_json(force=True), dtype=np.float64)
        return jsonify(model.predict(rows).tolist())

    @app.get("/ready")
    def ready():
        return "ok"

    return app
