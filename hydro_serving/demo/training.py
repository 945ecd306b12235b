"""Train, judge and save the two product-matching classifiers of the demo.

* ``pm-classifier`` (``lang: sklearn``): a random forest saved with joblib;
* ``pm-classifier-gb`` (``lang: onnx``): gradient-boosted trees converted with skl2onnx, the
  "other framework" of the 10% production experiment.

Both read the features of ``functions/pm-features/features.py`` (loaded by path, so serving runs
the same code) and are judged on pairs of product lines held out of training (see
:mod:`hydro_serving.demo.pairs`). The ONNX model is judged through onnxruntime, i.e. as served.
Each model folder gets ``signature.json`` (feature names in, ``match``/``probability`` out),
``training-data.csv`` (the features and label, for the store's profile) and ``metrics.json``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydro_serving.demo.pairs import Pair, generate
from hydro_serving.demo.paths import load_features

DEFAULT_SEED = 5
SKLEARN_NAME = "pm-classifier"
ONNX_NAME = "pm-classifier-gb"


@dataclass(frozen=True)
class Metrics:
    """Scores on held-out pairs; ``match`` is the positive class."""

    pairs: int
    accuracy: float
    precision: float
    recall: float
    f1: float

    def line(self) -> str:
        return (f"accuracy {self.accuracy:.3f}, precision {self.precision:.3f}, recall {self.recall:.3f} "
                f"on {self.pairs} held-out pairs")


@dataclass(frozen=True)
class Dataset:
    names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_pairs: list[Pair]


@dataclass(frozen=True)
class TrainResult:
    sklearn_dir: Path
    onnx_dir: Path
    sklearn_metrics: Metrics
    onnx_metrics: Metrics
    train_pairs: int
    test_pairs: int


def build_dataset(seed: int = DEFAULT_SEED, test_fraction: float = 0.25) -> Dataset:
    """Generate the pairs and compute their features with the serving code."""
    features = load_features()
    train, test = generate(seed, test_fraction)

    def matrix(pairs: list[Pair]) -> np.ndarray:
        rows = features.feature_matrix([(p.left.title, p.left.specifics, p.right.title, p.right.specifics)
                                        for p in pairs])
        return np.asarray(rows, dtype=np.float64)

    return Dataset(
        names=tuple(features.FEATURE_NAMES),
        x_train=matrix(train), y_train=np.asarray([p.label for p in train], dtype=np.int64),
        x_test=matrix(test), y_test=np.asarray([p.label for p in test], dtype=np.int64),
        test_pairs=test,
    )


def score(y_true: np.ndarray, y_pred: np.ndarray) -> Metrics:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    return Metrics(
        pairs=len(y_true),
        accuracy=round(float(accuracy_score(y_true, y_pred)), 4),
        precision=round(float(precision_score(y_true, y_pred, zero_division=0)), 4),
        recall=round(float(recall_score(y_true, y_pred, zero_division=0)), 4),
        f1=round(float(f1_score(y_true, y_pred, zero_division=0)), 4),
    )


def train_sklearn(data: Dataset, seed: int = DEFAULT_SEED) -> Any:
    """A random forest: robust to the -1 "unknown" codes and unscaled features, no tuning needed."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=120, min_samples_leaf=2, max_depth=14, random_state=seed, n_jobs=1)
    return model.fit(data.x_train, data.y_train)


def train_gradient_boosting(data: Dataset, seed: int = DEFAULT_SEED) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=150, max_depth=3, learning_rate=0.1, random_state=seed)
    return model.fit(data.x_train, data.y_train)


def to_onnx(model: Any, n_features: int) -> bytes:
    """The model as ONNX: outputs ``label`` (int64) and ``probabilities`` (float32, [N, 2]), no ZipMap."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(model, initial_types=[("features", FloatTensorType([None, n_features]))],
                          options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    return onx.SerializeToString()


def onnx_predict(model_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(match)) from the ONNX model through onnxruntime: the model as it is served."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["label", "probabilities"], {"features": x.astype(np.float32)})
    return np.asarray(labels), np.asarray(probabilities)[:, 1]


def classifier_signature(names: tuple[str, ...]) -> dict[str, Any]:
    """Inputs: one float64 per feature (a value per pair); outputs: the demo's answer per pair."""
    return {
        "inputs": [{"name": n, "dtype": "float64", "shape": [-1], "profile": "numerical"} for n in names],
        "outputs": [
            {"name": "match", "dtype": "bool", "shape": [-1]},
            {"name": "probability", "dtype": "float64", "shape": [-1]},
        ],
    }


def write_training_csv(path: Path, names: tuple[str, ...], x: np.ndarray, y: np.ndarray) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*names, "match"])
        for row, label in zip(x.tolist(), y.tolist(), strict=True):
            writer.writerow([f"{v:.6g}" for v in row] + [int(label)])


def _write_folder(folder: Path, names: tuple[str, ...], data: Dataset, metrics: Metrics, extra: dict[str, Any]
                  ) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "signature.json").write_text(json.dumps(classifier_signature(names), indent=2) + "\n")
    write_training_csv(folder / "training-data.csv", names, data.x_train, data.y_train)
    (folder / "metrics.json").write_text(json.dumps({**asdict(metrics), **extra}, indent=2) + "\n")


def train_all(out_dir: Path, seed: int = DEFAULT_SEED) -> TrainResult:
    """Train both variants into ``out_dir/pm-classifier`` and ``out_dir/pm-classifier-gb``."""
    import joblib

    data = build_dataset(seed)
    forest = train_sklearn(data, seed)
    forest_metrics = score(data.y_test, forest.predict(data.x_test))
    sk_dir = out_dir / SKLEARN_NAME
    sk_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(forest, sk_dir / "model.joblib")
    info = {"seed": seed, "train_pairs": len(data.y_train), "features": list(data.names)}
    _write_folder(sk_dir, data.names, data, forest_metrics, {**info, "model": "RandomForestClassifier"})

    boosted = train_gradient_boosting(data, seed)
    onnx_bytes = to_onnx(boosted, len(data.names))
    labels, _ = onnx_predict(onnx_bytes, data.x_test)
    onnx_metrics = score(data.y_test, labels)
    gb_dir = out_dir / ONNX_NAME
    gb_dir.mkdir(parents=True, exist_ok=True)
    (gb_dir / "model.onnx").write_bytes(onnx_bytes)
    _write_folder(gb_dir, data.names, data, onnx_metrics, {**info, "model": "GradientBoostingClassifier (ONNX)"})
    return TrainResult(sk_dir, gb_dir, forest_metrics, onnx_metrics, len(data.y_train), len(data.y_test))
