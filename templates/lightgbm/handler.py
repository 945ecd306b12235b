"""The lightgbm template: a LightGBM model in its text format behind ``load`` / ``predict`` / ``infer_v2``.

The file is loaded with ``lightgbm.Booster`` whether it was saved by a Booster or by the sklearn
wrapper (``LGBMClassifier.booster_.save_model``): the text format is LightGBM's portable one and it
carries the objective, which tells how to turn raw predictions into labels and probabilities exactly
as the sklearn wrapper does:

* ``binary`` (and ``cross_entropy``) gives P(class 1): probabilities are ``[1 - p, p]``, the label
  ``p > 0.5``;
* ``multiclass`` (softmax) gives one probability per class, ``multiclassova`` one sigmoid per class
  (not normalised, as LGBMClassifier.predict_proba returns them); the label is the most probable class;
* anything else (``regression``, ``poisson``, ``lambdarank``, ...) is a regressor: the label is the value.

Options (``options:`` in stack.yml, declared in template.yml), the same as the sklearn template's where they overlap:

* ``method``: ``predict`` (default) or ``predict_proba``;
* ``outputs``: ``{name: label | proba | proba:<class>}``; the JSON answer is then a list of records,
  each value cast to the dtype the signature declares; without it, the outputs the
  signature declares (mapped by dtype and shape: sdk.outputs.outputs_from_signature), else a list with
  one prediction per row;
* ``classes``: the class labels in index order (the text format stores indices 0..k-1 only);
* ``threads``: LightGBM's threads per prediction (default 1: a replica is one small process).

Columns are ordered by the signature's inputs, else by the model's feature names (LightGBM's
generated ``Column_<i>`` names do not count). ``null`` is a missing value; text where numbers
belong is a 400.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import Field
from hydro_serving.errors import ConfigError, require_extra
from hydro_serving.sdk import LoadContext
from hydro_serving.sdk.outputs import LabelProbaModel, labels_at
from hydro_serving.sdk.tabular import feature_order

_GENERATED_NAME = re.compile(r"^Column_[0-9]+$")



def read_header(path: Path) -> dict[str, str]:
    """The ``key=value`` lines before the first tree: objective, num_class, feature_names, ..."""
    header: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("Tree=") or line.startswith("tree_sizes="):
                break
            key, sep, value = line.partition("=")
            if sep:
                header[key] = value
    return header


def task_of(objective: str) -> str:
    """``binary``, ``multiclass`` or ``regression`` from the first word of a LightGBM objective."""
    name = objective.split(" ", 1)[0]
    if name in ("binary", "cross_entropy", "xentropy"):
        return "binary"
    if name in ("multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr"):
        return "multiclass"
    return "regression"


class LightGBMModel(LabelProbaModel):
    """One loaded LightGBM Booster and the decisions taken once at load: task, method, outputs, feature order."""

    lang = "lightgbm"
    dtype = "float64"  # LightGBM computes in float64

    def __init__(self) -> None:
        super().__init__()
        self.booster: Any = None
        self.threads = 1
        self._lock = threading.Lock()  # one prediction at a time: a Booster is not documented as thread-safe

    # ---- load ----------------------------------------------------------------------------------

    def load_model(self, path: Path, context: LoadContext) -> None:
        lgb = require_extra("lightgbm", "lightgbm")
        options = context.options
        header = read_header(path)
        if "objective" not in header:
            raise ConfigError(f"{path.name} is not a LightGBM text model (no objective= line before the trees)",
                              field="model")
        try:
            self.booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise ConfigError(f"{path.name} is not a LightGBM model LightGBM can load: {first}",
                              field="model") from None
        self.threads = int(options.get("threads", 1))
        self.objective = header["objective"]
        self.task = task_of(self.objective)
        self.num_class = int(self.booster.num_model_per_iteration()) if self.task == "multiclass" else 0
        self.plan_outputs(options)
        self.plan_declared_outputs(context.spec.signature)
        names = [str(n) for n in self.booster.feature_name()]
        if all(_GENERATED_NAME.match(n) for n in names):
            names = []
        self.features = feature_order(self.declared, names or None)
        self.width = int(self.booster.num_feature()) or (len(self.features) if self.features else None)
        inputs = tuple(Field(n, "float64", (-1,)) for n in names or ())
        self.signature = Signature(inputs=inputs, outputs=self.reported_outputs)

    # ---- inference -----------------------------------------------------------------------------

    def _raw(self, x: Any) -> Any:
        import numpy as np

        with self._lock:
            return np.asarray(self.booster.predict(x, num_threads=self.threads, validate_features=False))

    def proba(self, x: Any) -> Any:
        """Class probabilities, shape ``[rows, classes]``, as LGBMClassifier.predict_proba gives them."""
        import numpy as np

        if self.task == "binary":
            p = self._raw(x).reshape(-1)
            return np.stack([1.0 - p, p], axis=1)
        return self._raw(x).reshape(len(x), -1)

    def label(self, x: Any) -> Any:
        if self.task == "regression":
            return self._raw(x)
        index = self.proba(x).argmax(axis=1)
        return labels_at(self.classes, index)
