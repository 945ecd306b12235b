"""The tensorflow template: a Keras model (``.keras``/``.h5``) or a SavedModel behind ``load`` / ``predict``.

Both kinds become one thing at load: named, typed input tensors and named output tensors. A Keras
model is wrapped in a ``tf.function`` with its input signature (one trace, then graph speed: an eager
Keras call costs ~5x more per request); a SavedModel (``tf.saved_model.save`` or Keras
``model.export()``) is called through its ``serving_default`` signature, whose names it declares.

Inputs are fed by name: the signature's input names when declared, else the model's. JSON records,
one record, a columnar object or a 2-D list (one row per record, one column per scalar input, or the
rows of a single 2-D input) become tensors; when the model has one 2-D input ``[-1, k]`` and the
signature declares ``k`` scalar inputs, each record's values are stacked in signature order into it
(tabular features with names). Every value is checked against the input's dtype and shape before
TensorFlow sees it: a bad one is a 400 naming the input.

Options (``options:`` in stack.yml, declared in template.yml):

* ``outputs``: ``{name: <model output> | <model output>:<column>}`` (like the onnx template); the JSON
  answer is then a list of records. Without it, the outputs the signature declares (the model's
  by name, else by position), as records; with neither, a model with one output answers a list with
  one value per row (a ``[1]``-wide row becomes a scalar), several outputs a list of records;
* ``signature_name``: the SavedModel signature to serve (default ``serving_default``);
* ``threads``: TensorFlow's intra- and inter-op threads (default 1: a replica is one small process).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.signature import Field
from hydro_serving.errors import ConfigError, ValidationError, require_extra
from hydro_serving.sdk import LoadContext, ModelHandler
from hydro_serving.sdk.outputs import (
    answer_batch,
    concat_feeds,
    feed_rows,
    model_outputs_from_signature,
    parse_model_outputs,
    render_answer,
    select_outputs,
)
from hydro_serving.templates import Template

KERAS_FILES = ("*.keras", "*.h5")


@dataclass
class TensorInput:
    """One model input: name, canonical dtype, shape with -1 for an unknown dimension."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def check(self, array: Any, where: str) -> Any:
        """``array`` cast to this input's dtype, its rank and fixed dimensions checked (400 naming ``where``)."""
        import numpy as np

        if array.ndim == len(self.shape) - 1 and self.row_shape[-1:] == (1,):
            array = array.reshape(*array.shape, 1)  # scalar per record into a [-1, 1] input
        if array.ndim != len(self.shape) or any(w != -1 and h != w for h, w in zip(array.shape, self.shape,
                                                                                    strict=True)):
            raise ValidationError(f"input '{self.name}' takes shape {list(self.shape)}, got {list(array.shape)}",
                                  field=where)
        if self.dtype == "string":
            if array.dtype.kind not in "OUS":
                raise ValidationError(f"input '{self.name}' takes strings", field=where)
            return array.astype(str).astype(object)
        if array.dtype.kind in "OUS" or (array.dtype.kind == "b" and self.dtype != "bool"):
            raise ValidationError(f"input '{self.name}' takes numbers ({self.dtype}), got {array.dtype.name} "
                                  "values", field=where)
        if (self.dtype.startswith(("int", "uint")) and array.dtype.kind == "f"
                and not (np.all(np.isfinite(array)) and np.all(array == np.round(array)))):
            raise ValidationError(f"input '{self.name}' takes integers ({self.dtype})", field=where)
        return array.astype(np.dtype(self.dtype), copy=False)


def _canonical(tf_dtype: Any) -> str:
    name = getattr(tf_dtype, "name", str(tf_dtype))
    return "string" if name == "string" else name


def _shape(shape: Any) -> tuple[int, ...]:
    dims = list(shape) if shape is not None else []
    return tuple(-1 if d is None else int(d) for d in dims)


class _Engine:
    """Named tensors in, named arrays out, whatever the file was."""

    inputs: list[TensorInput]
    outputs: list[str]

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class _SavedModelEngine(_Engine):
    def __init__(self, tf: Any, path: Path, signature_name: str) -> None:
        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))  # kept: the signature holds only weak references
        signatures = self._loaded.signatures
        if signature_name not in signatures:
            known = ", ".join(signatures) or "none"
            raise ConfigError(f"the SavedModel at {path} has no signature '{signature_name}' (signatures: {known})",
                              field="options.signature_name")
        self._fn = signatures[signature_name]
        specs = self._fn.structured_input_signature[1]
        self.inputs = [TensorInput(name, _canonical(spec.dtype), _shape(spec.shape)) for name, spec in specs.items()]
        self._dtypes = {name: spec.dtype for name, spec in specs.items()}
        self.outputs = list(self._fn.structured_outputs)

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        tf = self._tf
        result = self._fn(**{n: tf.constant(v, dtype=self._dtypes[n]) for n, v in feeds.items()})
        return {name: result[name].numpy() for name in self.outputs}


class _KerasEngine(_Engine):
    def __init__(self, tf: Any, path: Path) -> None:
        import keras

        self.model = keras.saving.load_model(str(path), compile=False)
        tensors = list(getattr(self.model, "inputs", None) or [])
        if not tensors:
            raise ConfigError(f"the Keras model in {path.name} has no defined inputs (build it with keras.Input)",
                              field="model")
        self.inputs = [TensorInput(t.name, _canonical(t.dtype), _shape(t.shape)) for t in tensors]
        names = getattr(self.model, "output_names", None)
        count = len(self.model.outputs)
        if not names or len(names) != count:  # a Sequential model: its last layer names its output
            names = [self.model.layers[-1].name] if count == 1 else [f"output_{i}" for i in range(count)]
        self.outputs = [str(n) for n in names]
        specs = [tf.TensorSpec([None if d == -1 else d for d in i.shape], i.dtype if i.dtype != "string" else tf.string,
                               name=i.name) for i in self.inputs]
        model = self.model

        def call(*args: Any) -> Any:
            return model(args[0] if len(args) == 1 else list(args), training=False)

        self._fn = tf.function(call, input_signature=specs)

    def __call__(self, feeds: dict[str, Any]) -> dict[str, Any]:
        result = self._fn(*[feeds[i.name] for i in self.inputs])
        if isinstance(result, Mapping):
            values = [result[k] for k in result]
        elif isinstance(result, list | tuple):
            values = list(result)
        else:
            values = [result]
        return {name: value.numpy() for name, value in zip(self.outputs, values, strict=True)}


def find_model(path: Path) -> tuple[str, Path]:
    """``("savedmodel", dir)`` or ``("keras", file)`` for a model path (a file, or a folder holding one)."""
    if path.is_file():
        if path.suffix in (".keras", ".h5"):
            return "keras", path
        if path.name == "saved_model.pb":
            return "savedmodel", path.parent
        raise ConfigError(f"{path.name} is not a Keras (.keras, .h5) file or a SavedModel", field="model")
    if not path.is_dir():
        raise ConfigError(f"model path {path} does not exist", field="model")
    saved = sorted({p.parent for p in path.rglob("saved_model.pb")})
    keras_files = sorted({p for pattern in KERAS_FILES for p in path.rglob(pattern) if p.is_file()})
    if len(saved) + len(keras_files) == 1:
        return ("savedmodel", saved[0]) if saved else ("keras", keras_files[0])
    found = [str(p.relative_to(path)) for p in [*saved, *keras_files]]
    raise ConfigError(f"expected one SavedModel or one .keras/.h5 file in {path}, found "
                      f"{', '.join(found) or 'none'}", field="model")


class TensorFlowModel(ModelHandler):
    """A Keras model or SavedModel, and the feeding and rendering rules decided at load."""

    def __init__(self) -> None:
        self.engine: _Engine | None = None
        self.declared: Signature | None = None
        self.signature: Signature | None = None
        self.names: list[str] = []  # request input names, in order
        self.assembled: TensorInput | None = None  # the one 2-D input that named scalar features fill
        self.outputs: dict[str, tuple[str, int | None]] | None = None
        self.squeeze: set[str] = set()

    # ---- load ----------------------------------------------------------------------------------

    def locate_model(self, model_dir: Path, template: Template) -> Path:
        """The model path as given: a SavedModel is a folder, so :func:`find_model` decides in ``load_model``."""
        return model_dir

    def load_model(self, path: Path, context: LoadContext) -> None:
        options = context.options
        kind, path = find_model(path)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the import: TensorFlow reads it once
        tf = require_extra("tensorflow", "tensorflow")
        threads = int(options.get("threads", 1))
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process (a second load): keep its settings
            pass
        if kind == "savedmodel":
            self.engine = _SavedModelEngine(tf, path, str(options.get("signature_name", "serving_default")))
        else:
            self.engine = _KerasEngine(tf, path)
        self.declared = context.spec.signature if context.spec.signature else None
        self._plan_inputs()
        self.outputs = (parse_model_outputs(options["outputs"], self.engine.outputs)
                        if options.get("outputs") is not None else None)
        if self.outputs is None:  # the signature's declared outputs are the answer (README "Outputs")
            self.outputs = model_outputs_from_signature(self.declared, self.engine.outputs)
        self.squeeze = self._squeezed()

    def _plan_inputs(self) -> None:
        engine = self.engine
        assert engine is not None
        model_names = [i.name for i in engine.inputs]
        declared = list(self.declared.inputs) if self.declared and self.declared.inputs else []
        if declared and {f.name for f in declared} == set(model_names):
            self.names = [f.name for f in declared]
        elif declared:
            only = engine.inputs[0] if len(engine.inputs) == 1 else None
            if (only is None or len(only.shape) != 2 or only.shape[1] != len(declared)
                    or any(f.row_shape not in (None, ()) for f in declared)):
                raise ConfigError(f"the signature's inputs ({', '.join(f.name for f in declared)}) are not the model's "
                                  f"inputs ({', '.join(model_names)}), nor {len(declared)} scalar features of one "
                                  f"[-1, {len(declared)}] input", field="signature.inputs")
            self.assembled = only
            self.names = [f.name for f in declared]
        else:
            self.names = model_names
        if self.declared is None or not self.declared.inputs:
            self.signature = Signature(inputs=tuple(Field(i.name, i.dtype, i.shape) for i in engine.inputs))

    def _squeezed(self) -> set[str]:
        """Outputs whose ``[1]``-wide rows are sent as scalars: unless the signature declares them ``[-1, 1]``."""
        keep = set()
        if self.declared is not None:
            keep = {f.name for f in self.declared.outputs if f.shape is not None and len(f.shape) >= 2}
        return {n for n in self._output_names() if n not in keep}

    def _output_names(self) -> list[str]:
        assert self.engine is not None
        return list(self.outputs) if self.outputs is not None else list(self.engine.outputs)

    # ---- requests -> tensors -------------------------------------------------------------------

    def feeds_from_json(self, payload: Any) -> dict[str, Any]:
        """Named arrays for the model from any JSON layout; each value checked against its input."""
        import numpy as np

        columns = self._columns(payload)
        assert self.engine is not None
        if self.assembled is not None:
            for name, values in columns.items():
                columns[name] = self._array(values, name, 1)
            matrix = np.stack([columns[n].reshape(-1) for n in self.names], axis=1)
            return {self.assembled.name: self.assembled.check(matrix, "$")}
        return {i.name: i.check(self._array(columns[i.name], i.name, len(i.shape)), i.name) for i in self.engine.inputs}

    def _columns(self, payload: Any) -> dict[str, list[Any]]:
        """``{input name: list of per-row values}`` from records, one record, columns or a 2-D list."""
        names = self.names
        rank = {n: self._row_rank(n) for n in names}
        if isinstance(payload, list):
            if not payload:
                raise ValidationError("the request holds no rows", field="$")
            if all(isinstance(r, Mapping) for r in payload):
                out: dict[str, list[Any]] = {n: [] for n in names}
                for i, record in enumerate(payload):
                    for n in names:
                        if n not in record:
                            raise ValidationError(f"missing input '{n}' in record [{i}]", field=f"[{i}].{n}")
                        self._check_row(record[n], n, f"[{i}].{n}")
                        out[n].append(record[n])
                return out
            if all(isinstance(r, list) for r in payload):
                if len(names) == 1:
                    return {names[0]: payload}
                for i, row in enumerate(payload):
                    if len(row) != len(names):
                        raise ValidationError(f"row {i} has {len(row)} values but the model takes {len(names)} inputs "
                                              f"({', '.join(names)})", field=f"[{i}]")
                return {n: [row[j] for row in payload] for j, n in enumerate(names)}
            raise ValidationError("send a list of records, one record, a columnar object or a 2-D list of rows",
                                  field="$")
        if isinstance(payload, Mapping):
            missing = [n for n in names if n not in payload]
            if missing:
                raise ValidationError(f"missing input '{missing[0]}'", field=missing[0])
            batched = {n: _rank(payload[n]) > rank[n] for n in names}
            if len(set(batched.values())) != 1:
                odd = next(n for n in names if batched[n] != batched[names[0]])
                raise ValidationError(f"'{odd}': send one row per input (one record) or a list of rows per input "
                                      f"(columns), not a mix", field=odd)
            return {n: (payload[n] if batched[n] else [payload[n]]) for n in names}
        raise ValidationError(f"the request must be a JSON list or object, got {type(payload).__name__}", field="$")

    def _check_row(self, value: Any, name: str, where: str) -> None:
        """One record's value against its input's row shape, so the error names the record."""
        assert self.engine is not None
        if self.assembled is not None:
            want: tuple[int, ...] = ()
        else:
            want = next(i for i in self.engine.inputs if i.name == name).row_shape
        have = _shape_of(value)
        if have is None:
            raise ValidationError(f"{where}: rows of different lengths", field=where)
        if want == (1,) and have == ():
            return
        if len(have) != len(want) or any(w != -1 and h != w for h, w in zip(have, want, strict=True)):
            raise ValidationError(f"{where}: input '{name}' takes rows of shape {list(want)}, got {list(have)}",
                                  field=where)

    def _row_rank(self, name: str) -> int:
        assert self.engine is not None
        if self.assembled is not None:
            return 0
        spec = next(i for i in self.engine.inputs if i.name == name)
        return len(spec.row_shape) if spec.row_shape != (1,) else 0

    @staticmethod
    def _array(values: Any, name: str, rank: int) -> Any:
        import numpy as np

        if any(isinstance(v, Mapping) for v in _leaves(values)):
            raise ValidationError(f"input '{name}' takes numbers or strings, not objects", field=name)
        try:
            array = np.array(values, dtype=object)
        except ValueError:
            raise ValidationError(f"input '{name}': rows have different shapes", field=name) from None
        leaves = list(_leaves(values))
        if any(v is None for v in leaves):
            raise ValidationError(f"input '{name}' has a null value", field=name)
        if leaves and all(isinstance(v, str) for v in leaves):
            return array
        if any(isinstance(v, str) for v in leaves):
            raise ValidationError(f"input '{name}' mixes strings and numbers", field=name)
        if any(isinstance(v, bool) for v in leaves):
            return array.astype(bool) if all(isinstance(v, bool) for v in leaves) else array
        try:
            return array.astype(np.float64) if any(isinstance(v, float) for v in leaves) else array.astype(np.int64)
        except (TypeError, ValueError):
            raise ValidationError(f"input '{name}': rows have different shapes", field=name) from None

    def feeds_from_tensors(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        import numpy as np

        assert self.engine is not None
        if self.assembled is not None:
            if len(arrays) == 1 and next(iter(arrays.values())).ndim == 2:
                return {self.assembled.name: self.assembled.check(next(iter(arrays.values())), "inputs[0]")}
            missing = [n for n in self.names if n not in arrays]
            if missing:
                raise ValidationError(f"missing input tensor '{missing[0]}'", field="inputs")
            matrix = np.stack([np.asarray(arrays[n]).reshape(len(arrays[n]), -1)[:, 0] for n in self.names], axis=1)
            return {self.assembled.name: self.assembled.check(matrix, "inputs")}
        if len(self.engine.inputs) == 1 and len(arrays) == 1:
            (array,) = arrays.values()
            only = self.engine.inputs[0]
            return {only.name: only.check(array, "inputs[0]")}
        unknown = [n for n in arrays if n not in {i.name for i in self.engine.inputs}]
        if unknown:
            raise ValidationError(f"unknown input tensor '{unknown[0]}' (inputs: {', '.join(self.names)})",
                                  field="inputs")
        feeds = {}
        order = list(arrays)  # the request's order, so inputs[i] points at the caller's tensor
        for spec in self.engine.inputs:
            if spec.name not in arrays:
                raise ValidationError(f"missing input tensor '{spec.name}'", field="inputs")
            feeds[spec.name] = spec.check(arrays[spec.name], f"inputs[{order.index(spec.name)}]")
        return feeds

    # ---- tensors -> answers --------------------------------------------------------------------

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        assert self.engine is not None
        raw = self.engine(feeds)
        if self.outputs is None:
            return raw
        return select_outputs(self.outputs, raw.__getitem__, self.declared)

    def _json_ready(self, columns: dict[str, Any]) -> dict[str, Any]:
        return {n: (v.reshape(-1) if n in self.squeeze and v.ndim == 2 and v.shape[1] == 1 else v)
                for n, v in columns.items()}

    def render(self, columns: dict[str, Any]) -> Any:
        return render_answer(self._json_ready(columns), named=self.outputs is not None)

    def predict(self, payload: Any) -> Any:
        return self.render(self.run(self.feeds_from_json(payload)))

    def infer_v2(self, arrays: dict[str, Any]) -> dict[str, Any]:
        out = self.run(self.feeds_from_tensors(arrays))
        if self.declared is not None and self.declared.outputs:  # the declared shape decides, as for JSON
            return self._json_ready(out)
        return out

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        """Many requests in one model call; a request's bad input fails only that request."""
        return answer_batch(payloads, self.feeds_from_json, self.run, self.render, merge=concat_feeds,
                            rows=feed_rows)


def _rank(value: Any) -> int:
    rank = 0
    while isinstance(value, list):
        rank += 1
        if not value:
            break
        value = value[0]
    return rank


def _shape_of(value: Any) -> tuple[int, ...] | None:
    """The shape of a nested JSON list, or None when it is ragged."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = [_shape_of(v) for v in value]
    if inner[0] is None or any(s != inner[0] for s in inner):
        return None
    return (len(value), *inner[0])


def _leaves(value: Any) -> Any:
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value
