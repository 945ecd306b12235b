"""The models the cases serve, trained on this machine and cached under ``bench/.cache/models``.

* ``iris``: the iris-size LogisticRegression of the hop, peer and batching cases (one joblib file
  every server loads, so all of them run the very same estimator);
* ``demo``: the product-matching demo's classifiers, trained by the demo's own training code
  (:func:`hydro_serving.demo.training.train_all`), for the pipeline and cold-start cases.

Training is deterministic (fixed seeds), so a cache hit and a fresh training give the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache" / "models"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def iris_model(cache: Path = CACHE) -> Path:
    """The folder holding ``model.joblib`` (a LogisticRegression fit on iris)."""
    folder = cache / "iris"
    path = folder / "model.joblib"
    if not path.exists():
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        x, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=1000).fit(x, y)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        joblib.dump(model, tmp)
        tmp.replace(path)
    return folder


def demo_models(cache: Path = CACHE) -> Path:
    """The folder of the demo's sklearn classifier (``model.joblib`` + ``signature.json``)."""
    root = cache / "demo"
    sk_dir = root / "pm-classifier"
    if not (sk_dir / "model.joblib").exists() or not (sk_dir / "signature.json").exists():
        from hydro_serving.demo.training import train_all

        result = train_all(root)
        sk_dir = result.sklearn_dir
        (root / "location.json").write_text(json.dumps({"sklearn_dir": str(sk_dir)}))
    elif (root / "location.json").exists():
        sk_dir = Path(json.loads((root / "location.json").read_text())["sklearn_dir"])
    return sk_dir
