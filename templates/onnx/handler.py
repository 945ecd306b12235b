"""The onnx template: an onnxruntime session behind ``load`` / ``predict`` / ``infer_v2`` / ``predict_batch``.

Inputs are fed by the model's own input names; V2 tensors map directly (cast to the input's
type). JSON records or a 2-D list are stacked into the model's input when it has exactly one
(features in signature order), which is what skl2onnx produces for a tabular model.

Options (``options:`` in stack.yml, declared in template.yml):

* ``outputs``: ``{name: <onnx output> | <onnx output>:<column>}`` - the JSON answer is then a
  list of records; a skl2onnx classifier converted with ``zipmap=False`` gives
  ``{match: label, probability: "probabilities:1"}``; without it, the outputs the signature
  declares, matched to the model's by name, else by position (a load error when neither fits);
* ``threads``: onnxruntime's intra-op threads (default: onnxruntime's choice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import Field
from hydro_serving.errors import ConfigError, HandlerError, ValidationError, require_extra
from hydro_serving.sdk import LoadContext, ModelHandler
from hydro_serving.sdk.outputs import (
    answer_batch,
    concat_feeds,
    feed_rows,
    model_outputs_from_signature,
    parse_model_outputs,
    render_answer,
)
from hydro_serving.sdk.tabular import (
    cast_output,
    feature_order,
    matrix_from_tensors,
    table_from_json,
    to_matrix,
)

ONNX_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint64)": "uint64", "tensor(uint32)": "uint32", "tensor(uint16)": "uint16", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool", "tensor(string)": "string",
}



class _Input:
    """One model input: name, canonical dtype, shape (None for a symbolic dimension)."""

    def __init__(self, meta: Any) -> None:
        self.name: str = meta.name
        self.dtype: str = ONNX_TYPES.get(meta.type, "")
        self.shape: list[int | None] = [d if isinstance(d, int) and d > 0 else None for d in (meta.shape or [])]

    def check(self, array: Any, where: str) -> Any:
        """The array cast to this input's type, with rank and fixed dimensions checked (400 otherwise)."""
        import numpy as np

        if not self.dtype:
            raise ConfigError(f"model input '{self.name}' has an unsupported type", field="model")
        if array.ndim != len(self.shape):
            raise ValidationError(f"input '{self.name}' takes rank {len(self.shape)} (shape {self._fmt()}), got "
                                  f"shape {list(array.shape)}", field=where)
        for axis, (have, want) in enumerate(zip(array.shape, self.shape, strict=True)):
            if want is not None and have != want:
                raise ValidationError(f"input '{self.name}' takes {want} values on axis {axis} (shape "
                                      f"{self._fmt()}), got shape {list(array.shape)}", field=where)
        if self.dtype == "string":
            return array.astype(str).astype(object)
        if array.dtype.kind in ("U", "S", "O"):
            try:
                return array.astype(self.dtype)
            except (TypeError, ValueError):
                raise ValidationError(f"input '{self.name}' takes numbers ({self.dtype})", field=where) from None
        return array.astype(np.dtype(self.dtype), copy=False)

    def _fmt(self) -> str:
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"


class OnnxModel(ModelHandler):
    """One onnxruntime session and the feeding/rendering rules decided at load."""

    def __init__(self) -> None:
        self.session: Any = None
        self.inputs: list[_Input] = []
        self.output_names: list[str] = []
        self.outputs: dict[str, tuple[str, str | None]] | None = None
        self.declared: Signature | None = None
        self.features: list[str] | None = None
        self.width: int | None = None
        self.signature: Signature | None = None
        self._errors: tuple[type[BaseException], ...] = ()

    # ---- load ----------------------------------------------------------------------------------

    def load_model(self, path: Path, context: LoadContext) -> None:
        ort = require_extra("onnxruntime", "onnx")
        options = context.options
        session_options = ort.SessionOptions()
        if options.get("threads"):
            session_options.intra_op_num_threads = int(options["threads"])
        self.session = ort.InferenceSession(str(path), sess_options=session_options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [_Input(meta) for meta in self.session.get_inputs()]
        self.output_names = [meta.name for meta in self.session.get_outputs()]
        if options.get("outputs") is not None:
            # the column stays text: a ZipMap output is keyed by class, not indexed
            self.outputs = parse_model_outputs(options["outputs"], self.output_names, noun="onnx output",
                                               int_columns=False)
        self.declared = context.spec.signature
        if self.outputs is None:  # the signature's declared outputs are the answer (README "Outputs")
            self.outputs = model_outputs_from_signature(self.declared, self.output_names)
        if len(self.inputs) == 1:
            only = self.inputs[0]
            self.width = only.shape[1] if len(only.shape) == 2 else None
            self.features = feature_order(self.declared, None)
        from onnxruntime.capi import onnxruntime_pybind11_state as state

        self._errors = tuple(getattr(state, n) for n in ("InvalidArgument", "InvalidGraph") if hasattr(state, n))
        reported = () if self.outputs is not None else tuple(
            Field(o.name, o.dtype or "float32", tuple(d or -1 for d in o.shape) or None)
            for o in map(_Input, self.session.get_outputs()) if o.dtype)  # a ZipMap (a map) has no tensor type
        self.signature = Signature(
            inputs=tuple(Field(i.name, i.dtype or "float32", tuple(d or -1 for d in i.shape)) for i in self.inputs),
            outputs=reported)

    # ---- inference -----------------------------------------------------------------------------

    def feeds_from_json(self, payload: Any) -> dict[str, Any]:
        import numpy as np

        if len(self.inputs) == 1:
            only = self.inputs[0]
            table = table_from_json(payload, self.features, self.width)
            matrix = to_matrix(table, dtype="float64", allow_strings=only.dtype == "string")
            return {only.name: only.check(matrix, "$")}
        names = [i.name for i in self.inputs]
        table = table_from_json(payload, names)  # records or columns keyed by the model's input names
        feeds = {}
        for j, model_input in enumerate(self.inputs):
            column = np.array([row[j] for row in table.rows], dtype=object)
            if model_input.dtype != "string":
                column = to_matrix(_column_table(table, j), dtype="float64")[:, 0]
            if len(model_input.shape) == 2:
                column = column.reshape(-1, 1)
            feeds[model_input.name] = model_input.check(column, model_input.name)
        return feeds

    def feeds_from_tensors(self, arrays: dict[str, Any]) -> dict[str, Any]:
        if len(self.inputs) == 1:
            only = self.inputs[0]
            if only.name in arrays and len(arrays) == 1:
                return {only.name: only.check(arrays[only.name], "inputs[0]")}
            if len(arrays) == 1:  # one tensor for a one-input model: any name will do
                (array,) = arrays.values()
                return {only.name: only.check(array, "inputs[0]")}
            return {only.name: only.check(matrix_from_tensors(arrays, self.features, self.width), "inputs")}
        unknown = [n for n in arrays if n not in {i.name for i in self.inputs}]
        if unknown:
            raise ValidationError(f"unknown input tensor '{unknown[0]}' (model inputs: "
                                  f"{', '.join(i.name for i in self.inputs)})", field="inputs")
        feeds = {}
        for model_input in self.inputs:
            if model_input.name not in arrays:
                raise ValidationError(f"missing input tensor '{model_input.name}'", field="inputs")
            feeds[model_input.name] = model_input.check(arrays[model_input.name], "inputs")
        return feeds

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """``{onnx output name: value}``; onnxruntime's complaints about the input are the caller's 400."""
        try:
            values = self.session.run(None, feeds)
        except self._errors as exc:
            reason = " ".join(str(exc).split())[:300]
            raise ValidationError(f"the model cannot take this input: {reason}", field="$") from None
        return dict(zip(self.output_names, values, strict=True))

    def select(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The named outputs of ``options.outputs`` (columns picked, cast to the signature), or all outputs."""
        if self.outputs is None:
            return raw
        out = {}
        for name, (source, column) in self.outputs.items():
            values = raw[source]
            if column is not None:
                values = _pick_column(values, column, name)
            out[name] = values if isinstance(values, list) else cast_output(name, values, self.declared)
        return out

    def render(self, raw: dict[str, Any]) -> Any:
        return render_answer(self.select(raw), named=self.outputs is not None)

    def predict(self, payload: Any) -> Any:
        return self.render(self.run(self.feeds_from_json(payload)))

    def infer_v2(self, arrays: dict[str, Any]) -> dict[str, Any]:
        return self.select(self.run(self.feeds_from_tensors(arrays)))

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        """Many requests in one session run when the model has one batched input; else one by one.

        Per-row outputs that are lists (a ZipMap's dicts) cannot be cut by rows, and a merged run the
        model refuses must blame the right request: both run each request alone.
        """
        return answer_batch(payloads, self.feeds_from_json, self.run, self.render, merge=concat_feeds,
                            rows=feed_rows, alone_on_error=True,
                            splittable=lambda merged: not any(isinstance(v, list) for v in merged.values()))


def _column_table(table: Any, j: int) -> Any:
    from hydro_serving.sdk.tabular import Table

    names = [table.features[j]] if table.features else None
    return Table([[row[j]] for row in table.rows], names, table.from_records)


def _pick_column(values: Any, column: str, name: str) -> Any:
    if isinstance(values, list):  # ZipMap: a list of {class: probability}
        try:
            return [next(v for k, v in row.items() if str(k) == column) for row in values]
        except StopIteration:
            raise HandlerError(f"options.outputs.{name}: no key '{column}' in the model's output",
                              field=f"options.outputs.{name}") from None
    try:
        return values[:, int(column)]
    except (ValueError, IndexError):
        raise HandlerError(f"options.outputs.{name}: column '{column}' is not a column index of an output with "
                          f"shape {list(values.shape)}", field=f"options.outputs.{name}") from None
