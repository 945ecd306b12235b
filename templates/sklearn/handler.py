"""The sklearn template: a scikit-learn estimator behind ``load`` / ``predict`` / ``infer_v2`` / ``predict_batch``.

Options (``options:`` in stack.yml):

* ``method``: ``predict`` (default), ``predict_proba`` or ``decision_function``;
* ``outputs``: ``{name: label | proba | proba:<class> | decision}``; the JSON answer is then a
  list of records (``[{"match": 1, "probability": 0.93}]``), each value cast to the dtype the
  signature declares for that output; without it, a list with one prediction per row;
* ``skops_trusted``: types to trust when loading a ``.skops`` file.

Columns are ordered by the signature's inputs, else by the model's ``feature_names_in_``. Input
the model cannot take (wrong width, text where numbers belong) is the caller's 400, not a 500.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import Field
from hydro_serving.errors import ConfigError, HydroError, ValidationError, require_extra
from hydro_serving.runtime.api import LoadContext, find_model_file
from hydro_serving.runtime.tabular import (
    Table,
    as_rows,
    cast_output,
    feature_order,
    first_non_numeric,
    matrix_from_tensors,
    non_numeric_error,
    render_records,
    table_from_json,
    to_matrix,
)

METHODS = {"predict": "label", "predict_proba": "proba", "decision_function": "decision"}
KIND_METHOD = {kind: method for method, kind in METHODS.items()}


def _model_patterns() -> tuple[str, ...]:
    """The file patterns from this template's own template.yml (one source of truth with the builder)."""
    data = yaml.safe_load(Path(__file__).with_name("template.yml").read_text()) or {}
    return tuple(data.get("model_patterns") or ("*.joblib", "*.pkl"))


class SklearnModel:
    """One loaded estimator and the decisions taken once at load: method, outputs, feature order."""

    def __init__(self) -> None:
        self.model: Any = None
        self.method = "predict"
        self.outputs: dict[str, tuple[str, Any]] | None = None
        self.features: list[str] | None = None
        self.width: int | None = None
        self.allow_strings = True
        self.declared: Signature | None = None
        self.signature: Signature | None = None

    # ---- load ----------------------------------------------------------------------------------

    def load(self, model_dir: Path | None, context: LoadContext) -> None:
        require_extra("sklearn", "sklearn")
        if model_dir is None:
            raise ConfigError(f"function '{context.spec.name}' (lang sklearn) needs 'model'", field="model")
        path = find_model_file(model_dir, _model_patterns(), "sklearn")
        self.model = self._read(path, context)
        options = dict(context.options)
        unknown = sorted(set(options) - {"method", "outputs", "skops_trusted"})
        if unknown:
            raise ConfigError(f"unknown option '{unknown[0]}' for lang sklearn (options: method, outputs, "
                              f"skops_trusted)", field=f"options.{unknown[0]}")
        self.method = str(options.get("method", "predict"))
        if self.method not in METHODS:
            raise ConfigError(f"options.method must be one of {', '.join(METHODS)}, got '{self.method}'",
                              field="options.method")
        self._require_method(self.method, "options.method")
        if options.get("outputs") is not None:
            self.outputs = self._parse_outputs(options["outputs"])
        self.declared = context.spec.signature
        model_names = getattr(self.model, "feature_names_in_", None)
        self.features = feature_order(self.declared, list(model_names) if model_names is not None else None)
        width = getattr(self.model, "n_features_in_", None)
        self.width = int(width) if width is not None else (len(self.features) if self.features else None)
        if self.declared is not None and self.declared.inputs:
            self.allow_strings = any(f.dtype in ("string", "bytes") for f in self.declared.inputs)
        if self.declared is None and model_names is not None:
            self.signature = Signature(inputs=tuple(Field(str(n), "float64", (-1,)) for n in model_names))
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

    def _require_method(self, method: str, where: str) -> None:
        if not callable(getattr(self.model, method, None)):
            raise ConfigError(f"{where}: the model ({type(self.model).__name__}) has no {method}()", field=where)

    def _parse_outputs(self, raw: Any) -> dict[str, tuple[str, Any]]:
        if not isinstance(raw, dict) or not raw:
            raise ConfigError("options.outputs must map output names to label, proba, proba:<class> or decision",
                              field="options.outputs")
        parsed: dict[str, tuple[str, Any]] = {}
        for name, spec in raw.items():
            where = f"options.outputs.{name}"
            kind, _, cls = str(spec).partition(":")
            if kind not in KIND_METHOD or (cls and kind != "proba"):
                raise ConfigError(f"{where} must be label, proba, proba:<class> or decision, got '{spec}'",
                                  field=where)
            self._require_method(KIND_METHOD[kind], where)
            column = None
            if cls:
                classes = [str(c) for c in getattr(self.model, "classes_", [])]
                if cls not in classes:
                    raise ConfigError(f"{where}: class '{cls}' is not one of the model's classes "
                                      f"({', '.join(classes) or 'none'})", field=where)
                column = classes.index(cls)
            parsed[str(name)] = (kind, column)
        return parsed

    # ---- inference -----------------------------------------------------------------------------

    def matrix(self, payload: Any) -> tuple[Any, Table]:
        table = table_from_json(payload, self.features, self.width)
        return to_matrix(table, allow_strings=self.allow_strings), table

    def compute(self, x: Any, table: Table | None = None) -> dict[str, Any]:
        """``{output name: array with one entry per row}`` from one framework call per method needed."""
        results: dict[str, Any] = {}

        def run(kind: str) -> Any:
            if kind not in results:
                try:
                    results[kind] = getattr(self.model, KIND_METHOD[kind])(x)
                except (ValueError, TypeError) as exc:
                    raise self._input_error(exc, table) from None
            return results[kind]

        if self.outputs is None:
            return {self.method: run(METHODS[self.method])}
        out = {}
        for name, (kind, column) in self.outputs.items():
            values = run(kind)
            out[name] = self._cast(name, values[:, column] if column is not None else values)
        return out

    def _input_error(self, exc: Exception, table: Table | None) -> ValidationError:
        reason = " ".join(str(exc).split())[:300]
        bad = first_non_numeric(table) if table is not None else None
        if bad is not None:
            return non_numeric_error(table, bad, reason)  # type: ignore[arg-type]
        return ValidationError(f"the model cannot take this input: {reason}", field="$")

    def _cast(self, name: str, values: Any) -> Any:
        return cast_output(name, values, self.declared)

    @staticmethod
    def render(columns: dict[str, Any], records: bool) -> Any:
        """Records (one object per row) when outputs are named, else one prediction per row."""
        if not records:
            (values,) = columns.values()
            return as_rows(values)
        return render_records(columns)

    def predict(self, payload: Any) -> Any:
        x, table = self.matrix(payload)
        return self.render(self.compute(x, table), self.outputs is not None)

    def infer_v2(self, arrays: dict[str, Any]) -> dict[str, Any]:
        x = matrix_from_tensors(arrays, self.features, self.width)
        return self.compute(x)

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        """Many requests in one framework call; a request's bad input fails only that request."""
        import numpy as np

        results: list[Any] = [None] * len(payloads)
        parsed: list[tuple[int, Any, Table]] = []
        for i, payload in enumerate(payloads):
            try:
                x, table = self.matrix(payload)
            except HydroError as exc:
                results[i] = exc
                continue
            parsed.append((i, x, table))
        if not parsed:
            return results
        records = self.outputs is not None
        try:
            merged = self.compute(np.concatenate([x for _, x, _ in parsed]))
        except ValidationError:  # someone's rows spoil the merged call: run each alone to blame the right one
            for i, x, table in parsed:
                try:
                    results[i] = self.render(self.compute(x, table), records)
                except Exception as exc:
                    results[i] = exc
            return results
        start = 0
        for i, x, _ in parsed:
            stop = start + len(x)
            results[i] = self.render({k: v[start:stop] for k, v in merged.items()}, records)
            start = stop
        return results
