"""The xgboost template: an XGBoost model in its native format behind ``load`` / ``predict`` / ``infer_v2``.

The file is loaded with ``xgboost.Booster`` whether it was saved by a Booster or by the sklearn
wrapper (``XGBClassifier.save_model``): the native format is portable across XGBoost versions,
pickles are not, and it carries the objective, which tells how to turn raw predictions into
labels and probabilities exactly as the sklearn wrapper does:

* ``binary:logistic`` gives P(class 1): probabilities are ``[1 - p, p]``, the label ``p > 0.5``;
* ``binary:logitraw`` gives a margin: ``p = sigmoid(margin)``; ``binary:hinge`` has no probabilities;
* ``multi:softprob`` gives one probability per class, ``multi:softmax`` the class (probabilities
  are the softmax of the margins); the label is the most probable class;
* anything else (``reg:*``, ``count:*``, ``survival:*``, ``rank:*``) is a regressor: the label is the value.

Options (``options:`` in stack.yml, declared in template.yml), the same as the sklearn template's where they overlap:

* ``method``: ``predict`` (default) or ``predict_proba``;
* ``outputs``: ``{name: label | proba | proba:<class>}``; the JSON answer is then a list of records,
  each value cast to the dtype the signature declares; without it, the outputs the
  signature declares (mapped by dtype and shape: sdk.outputs.outputs_from_signature), else a list with
  one prediction per row;
* ``classes``: the class labels in index order (the native format stores indices 0..k-1 only);
* ``threads``: XGBoost's threads per prediction (default 1: a replica is one small process).

Columns are ordered by the signature's inputs, else by the model's feature names. ``null`` is a
missing value (XGBoost learns where missing values go); text where numbers belong is a 400.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import Field
from hydro_serving.errors import ConfigError, require_extra
from hydro_serving.sdk import LoadContext
from hydro_serving.sdk.outputs import LabelProbaModel, labels_at
from hydro_serving.sdk.tabular import feature_order


def task_of(objective: str) -> str:
    """``binary``, ``multiclass`` or ``regression`` from an XGBoost objective name."""
    if objective.startswith("binary:"):
        return "binary"
    if objective.startswith("multi:"):
        return "multiclass"
    return "regression"


class XGBoostModel(LabelProbaModel):
    """One loaded Booster and the decisions taken once at load: task, method, outputs, feature order."""

    lang = "xgboost"
    dtype = "float32"  # XGBoost computes in float32

    def __init__(self) -> None:
        super().__init__()
        self.booster: Any = None

    # ---- load ----------------------------------------------------------------------------------

    def load_model(self, path: Path, context: LoadContext) -> None:
        xgb = require_extra("xgboost", "xgboost")
        options = context.options
        try:
            self.booster = xgb.Booster(model_file=str(path))
        except xgb.core.XGBoostError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise ConfigError(f"{path.name} is not an XGBoost model XGBoost can load: {first}", field="model") from None
        self.booster.set_param({"nthread": int(options.get("threads", 1))})
        learner = json.loads(self.booster.save_config())["learner"]
        self.objective = str(learner["objective"]["name"])
        self.task = task_of(self.objective)
        self.num_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
        self.plan_outputs(options)
        self.plan_declared_outputs(context.spec.signature)
        names = self.booster.feature_names
        self.features = feature_order(self.declared, names)
        self.width = int(self.booster.num_features()) or (len(self.features) if self.features else None)
        inputs = tuple(Field(str(n), "float64", (-1,)) for n in names or ())
        self.signature = Signature(inputs=inputs, outputs=self.reported_outputs)

    def require_proba(self, kind: str, where: str) -> None:
        """binary:hinge answers 0/1 only: like a regressor, it has no probabilities to give."""
        if kind == "proba" and (self.task == "regression" or self.objective == "binary:hinge"):
            raise ConfigError(f"{where}: the model ({self.objective}) gives no probabilities", field=where)

    # ---- inference -----------------------------------------------------------------------------

    def _raw(self, x: Any, margin: bool = False) -> Any:
        import numpy as np

        predict_type = "margin" if margin else "value"
        return np.asarray(self.booster.inplace_predict(x, missing=np.nan, validate_features=False,
                                                       predict_type=predict_type))

    def proba(self, x: Any) -> Any:
        """Class probabilities, shape ``[rows, classes]``, as XGBClassifier.predict_proba gives them."""
        import numpy as np

        if self.objective == "binary:logitraw":
            p = 1.0 / (1.0 + np.exp(-self._raw(x, margin=True).reshape(-1)))
            return np.stack([1.0 - p, p], axis=1)
        if self.task == "binary":
            p = self._raw(x).reshape(-1)
            return np.stack([1.0 - p, p], axis=1)
        if self.objective == "multi:softmax":
            margin = self._raw(x, margin=True).reshape(len(x), -1)
            e = np.exp(margin - margin.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return self._raw(x).reshape(len(x), -1)

    def label(self, x: Any) -> Any:
        if self.task == "regression":
            return self._raw(x)
        if self.objective == "binary:hinge" or self.objective == "multi:softmax":
            index = self._raw(x).reshape(-1).astype(int)
        else:
            index = self.proba(x).argmax(axis=1)
        return labels_at(self.classes, index)
