"""Ground truth joined to sampled predictions: classification or regression metrics per window and variant.

A label is joined to the prediction of the same request id and row. The task is read from the
labels: numbers that are not all integers make a regression (MAE, RMSE); bools, strings and
integers a classification (accuracy; precision and recall of the positive class for two classes,
macro-averaged over classes otherwise). Predictions that do not compare (a string against a
number) count as wrong, they are not dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _norm(value: Any) -> Any:
    """Labels and predictions in one vocabulary: ``True``/``1``/``"1"``/``"true"`` are the same class."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes"):
            return 1
        if low in ("false", "no"):
            return 0
        try:
            return int(low)
        except ValueError:
            return value
    return value


def _norm_bool(value: Any) -> Any:
    return 0 if value is False else _norm(value)


def is_regression(labels: Sequence[Any]) -> bool:
    numbers = [v for v in labels if isinstance(v, int | float) and not isinstance(v, bool)]
    return bool(numbers) and len(numbers) == len(labels) and any(
        isinstance(v, float) and not v.is_integer() for v in numbers)


def metrics(pairs: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
    """``{"task", "n", ...}`` for ``(prediction, label)`` pairs."""
    if not pairs:
        return {"n": 0}
    labels = [label for _, label in pairs]
    if is_regression(labels):
        errors = []
        for pred, label in pairs:
            p = pred if isinstance(pred, int | float) and not isinstance(pred, bool) else math.nan
            errors.append(float(p) - float(label))
        finite = [e for e in errors if math.isfinite(e)]
        if not finite:
            return {"task": "regression", "n": len(pairs), "mae": None, "rmse": None}
        return {"task": "regression", "n": len(pairs), "compared": len(finite),
                "mae": sum(abs(e) for e in finite) / len(finite),
                "rmse": math.sqrt(sum(e * e for e in finite) / len(finite))}
    preds = [_norm_bool(p) for p, _ in pairs]
    truth = [_norm_bool(t) for t in labels]
    correct = sum(1 for p, t in zip(preds, truth, strict=True) if p == t)
    classes = sorted({str(t) for t in truth} | {str(p) for p in preds})
    out: dict[str, Any] = {"task": "classification", "n": len(pairs), "accuracy": correct / len(pairs)}

    def precision_recall(cls: str) -> tuple[float, float]:
        tp = sum(1 for p, t in zip(preds, truth, strict=True) if str(p) == cls and str(t) == cls)
        pp = sum(1 for p in preds if str(p) == cls)
        ap = sum(1 for t in truth if str(t) == cls)
        return (tp / pp if pp else 0.0), (tp / ap if ap else 0.0)

    if set(classes) <= {"0", "1"}:
        out["precision"], out["recall"] = precision_recall("1")
    else:
        pr = [precision_recall(c) for c in classes]
        out["precision"] = sum(p for p, _ in pr) / len(pr)
        out["recall"] = sum(r for _, r in pr) / len(pr)
        out["average"] = "macro"
    return out
