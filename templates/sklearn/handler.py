"""The sklearn template: a scikit-learn estimator behind ``load_model``, ``predict``, ``infer_v2``, ``predict_batch``.

Options (``options:`` in stack.yml, declared in template.yml):

* ``method``: ``predict`` (default), ``predict_proba`` or ``decision_function``;
* ``outputs``: ``{name: label | proba | proba:<class> | decision}``; the JSON answer is then a
  list of records (``[{"match": 1, "probability": 0.93}]``), each value cast to the dtype the
  signature declares for that output; without it, the outputs the
  signature declares (mapped by dtype and shape: sdk.outputs.outputs_from_signature), else a list with
  one prediction per row;
* ``skops_trusted``: types to trust when loading a ``.skops`` file.

Columns are ordered by the signature's inputs, else by the model's ``feature_names_in_``. Input
the model cannot take (wrong width, text where numbers belong) is the caller's 400, not a 500.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import Field
from hydro_serving.errors import ConfigError, ValidationError, require_extra
from hydro_serving.sdk import LoadContext, ModelHandler
from hydro_serving.sdk.outputs import (
    answer_batch,
    compute_outputs,
    outputs_from_signature,
    parse_method,
    parse_outputs,
    render_answer,
    reported_outputs,
)
from hydro_serving.sdk.tabular import (
    Table,
    feature_order,
    first_non_numeric,
    matrix_from_tensors,
    non_numeric_error,
    refuse_missing,
    table_from_json,
    to_matrix,
)

log = logging.getLogger("hydro.runtime")
METHODS = {"predict": "label", "predict_proba": "proba", "decision_function": "decision"}
KIND_METHOD = {kind: method for method, kind in METHODS.items()}


def allows_nan(model: Any) -> bool:
    """Whether an estimator takes NaN (HistGradientBoosting, trees since 1.4, imputing pipelines): its tags say.

    Used for a load-time warning only: the model itself decides per request, and a null it refuses
    becomes a 400 naming the cell.
    """
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:  # a Pipeline takes what its first step takes
        return allows_nan(steps[0][1])
    try:
        return bool(model.__sklearn_tags__().input_tags.allow_nan)  # scikit-learn >= 1.6
    except AttributeError:
        pass
    try:
        return bool(model._get_tags().get("allow_nan", False))  # older releases
    except AttributeError:
        return False


class SklearnModel(ModelHandler):
    """One loaded estimator and the decisions taken once at load: method, outputs, feature order."""

    def __init__(self) -> None:
        self.model: Any = None
        self.method = "predict"
        self.outputs: dict[str, tuple[str, Any]] | None = None
        self.features: list[str] | None = None
        self.width: int | None = None
        self.allow_strings = True
        self.allows_nan = False
        self.declared: Signature | None = None
        self.signature: Signature | None = None

    # ---- load ----------------------------------------------------------------------------------

    def load_model(self, path: Path, context: LoadContext) -> None:
        require_extra("sklearn", "sklearn")
        self.model = self._read(path, context)
        options = context.options
        self.method = parse_method(options, METHODS, self._require_kind)
        if options.get("outputs") is not None:
            self.outputs = parse_outputs(options["outputs"], tuple(KIND_METHOD), getattr(self.model, "classes_", []),
                                         self._require_kind)
        self.declared = context.spec.signature
        classes = list(getattr(self.model, "classes_", []))
        if self.outputs is None:  # the signature's declared outputs are the answer (README "Outputs")
            self.outputs = outputs_from_signature(self.declared, METHODS[self.method], classes, self._require_kind)
        model_names = getattr(self.model, "feature_names_in_", None)
        self.features = feature_order(self.declared, list(model_names) if model_names is not None else None)
        width = getattr(self.model, "n_features_in_", None)
        self.width = int(width) if width is not None else (len(self.features) if self.features else None)
        if self.declared is not None and self.declared.inputs:
            self.allow_strings = any(f.dtype in ("string", "bytes") for f in self.declared.inputs)
        inputs = tuple(Field(str(n), "float64", (-1,)) for n in model_names) if model_names is not None else ()
        reported = () if self.outputs is not None else reported_outputs(self.method, METHODS[self.method], classes)
        self.signature = Signature(inputs=inputs, outputs=reported)
        self.allows_nan = allows_nan(self.model)
        nullable = [f.name for f in (self.declared.inputs if self.declared is not None else ()) if f.nullable]
        if nullable and not self.allows_nan:  # a null then fails in the model: the caller's 400, naming it
            log.warning("function %s: inputs %s are declared nullable but %s does not accept missing values; "
                        "a null is refused", context.spec.name, ", ".join(nullable), type(self.model).__name__)
        # Callers send lists, not DataFrames; a model fitted on a DataFrame warns about that on every call.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def _read(self, path: Path, context: LoadContext) -> Any:
        if path.suffix == ".skops":
            sio = require_extra("skops.io", "skops")
            trusted = list(context.options.get("skops_trusted") or [])
            untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in trusted]
            if untrusted:
                raise ConfigError(f"{path.name} holds types that are not trusted: {', '.join(untrusted)}; list "
                                  f"them in options.skops_trusted if you trust this file",
                                  field="options.skops_trusted")
            return sio.load(path, trusted=trusted)
        import joblib

        return joblib.load(path)

    def _require_kind(self, kind: str, where: str) -> None:
        method = KIND_METHOD[kind]
        if not callable(getattr(self.model, method, None)):
            raise ConfigError(f"{where}: the model ({type(self.model).__name__}) has no {method}()", field=where)

    # ---- inference -----------------------------------------------------------------------------

    def matrix(self, payload: Any) -> tuple[Any, Table]:
        table = table_from_json(payload, self.features, self.width)
        return to_matrix(table, allow_strings=self.allow_strings), table

    def compute(self, x: Any, table: Table | None = None) -> dict[str, Any]:
        """``{output name: array with one entry per row}`` from one framework call per method needed."""
        def run(kind: str) -> Any:
            try:
                return getattr(self.model, KIND_METHOD[kind])(x)
            except (ValueError, TypeError) as exc:
                raise self._input_error(exc, table) from None

        return compute_outputs(self.outputs, (self.method, METHODS[self.method]), run, self.declared)

    def _input_error(self, exc: Exception, table: Table | None) -> ValidationError:
        reason = " ".join(str(exc).split())[:300]
        bad = first_non_numeric(table) if table is not None else None
        if bad is not None:
            return non_numeric_error(table, bad, reason)  # type: ignore[arg-type]
        if table is not None and "nan" in reason.lower():  # a null the model cannot take: name the cell
            try:
                refuse_missing(table, type(self.model).__name__)
            except ValidationError as named:
                return named
        return ValidationError(f"the model cannot take this input: {reason}", field="$")

    def render(self, columns: dict[str, Any]) -> Any:
        """Records (one object per row) when outputs are named, else one prediction per row."""
        return render_answer(columns, named=self.outputs is not None)

    def predict(self, payload: Any) -> Any:
        x, table = self.matrix(payload)
        return self.render(self.compute(x, table))

    def infer_v2(self, arrays: dict[str, Any]) -> dict[str, Any]:
        x = matrix_from_tensors(arrays, self.features, self.width)
        return self.compute(x)

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        """Many requests in one framework call; a request's bad input fails only that request.

        When someone's rows spoil the merged call, each request runs alone (with its parsed table,
        so the error names the right cell).
        """
        import numpy as np

        return answer_batch(payloads, self.matrix, lambda item: self.compute(*item), self.render,
                            merge=lambda items: (np.concatenate([x for x, _ in items]), None),
                            rows=lambda item: len(item[0]), alone_on_error=True)
