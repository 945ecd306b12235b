"""What a model template answers with: ``options.method`` / ``options.outputs`` / ``options.classes``, shared.

Model templates differ in how they compute (a Booster, an estimator, an onnxruntime session, a
Keras model) but not in what a user may ask for: the same ``method``, the same
``outputs: {name: label | proba | proba:<class>}``, the same class labels, the same answer shapes
(one value per row, or records when outputs are named), the same way a batch of requests is
split back into answers. Written once here so that these options mean the same thing and fail
with the same messages in every template; the templates keep only the framework calls.

Everything here is plain data and numpy: no framework is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydro_serving.errors import ConfigError, HydroError, ValidationError
from hydro_serving.sdk.model import ModelHandler
from hydro_serving.sdk.tabular import (
    as_rows,
    cast_output,
    matrix_from_tensors,
    render_records,
    table_from_json,
    to_matrix,
)

KindCheck = Callable[[str, str], None]  # (kind, option path) -> raises ConfigError when the model cannot give it
Outputs = dict[str, tuple[str, Any]]  # output name -> (kind or model output, column or None)


def describe_kinds(kinds: Sequence[str]) -> str:
    """``label, proba or proba:<class>`` (the words of an error message) for the output kinds a template has."""
    words = [w for kind in kinds for w in ((kind, f"{kind}:<class>") if kind == "proba" else (kind,))]
    return ", ".join(words[:-1]) + " or " + words[-1]


def parse_method(options: Mapping[str, Any], methods: Mapping[str, str], check: KindCheck) -> str:
    """``options.method`` (default ``predict``), refused unless the model can give that kind of output."""
    method = str(options.get("method", "predict"))
    if method not in methods:
        raise ConfigError(f"options.method must be one of {', '.join(methods)}, got '{method}'",
                          field="options.method")
    check(methods[method], "options.method")
    return method


def parse_outputs(raw: Any, kinds: Sequence[str], classes: Sequence[Any], check: KindCheck) -> Outputs:
    """``options.outputs`` -> ``{output name: (kind, column index or None)}``, checked once at load.

    ``check(kind, where)`` raises when the model cannot give ``kind`` (a regressor asked for
    ``proba``), so a wrong option fails the load instead of every request. ``proba:<class>`` picks
    one column of the probabilities; the class is matched by its text because YAML and JSON give
    ``1`` where the model may hold ``1`` or ``"1"``.
    """
    described = describe_kinds(kinds)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"options.outputs must map output names to {described}", field="options.outputs")
    parsed: Outputs = {}
    for name, spec in raw.items():
        where = f"options.outputs.{name}"
        kind, _, cls = str(spec).partition(":")
        if kind not in kinds or (cls and kind != "proba"):
            raise ConfigError(f"{where} must be {described}, got '{spec}'", field=where)
        check(kind, where)
        column = None
        if cls:
            labels = [str(c) for c in classes]
            if cls not in labels:
                raise ConfigError(f"{where}: class '{cls}' is not one of the model's classes "
                                  f"({', '.join(labels) or 'none'})", field=where)
            column = labels.index(cls)
        parsed[str(name)] = (kind, column)
    return parsed


FLOAT_DTYPES = ("float16", "float32", "float64")


def outputs_from_signature(declared: Any, method_kind: str, classes: Sequence[Any], check: KindCheck) -> Outputs | None:
    """The outputs a signature declares, mapped to kinds, for a model given no ``options.outputs``.

    Without this the answer ignored the signature: a bare list under the method's name while the
    V2 metadata advertised the declared names. The rule (README "Outputs: what is advertised is
    what is returned"):

    * one declared output is the method's answer (``options.method``, default ``predict``) under
      the declared name; a float scalar under ``predict_proba`` of a binary classifier is the
      positive class's probability;
    * with several, each maps by dtype and shape: a non-float output is the label, a float output
      of row shape ``[k]`` the class probabilities, a float scalar the positive class's
      probability of a binary classifier (the value itself for a regressor).

    An output that fits none of these is a load error naming it (map it with ``options.outputs``).
    None when the signature declares no outputs (the answer stays one value per row).
    """
    fields = list(getattr(declared, "outputs", None) or ())
    if not fields:
        return None
    plan: Outputs = {}
    binary = len(classes) == 2
    for i, fld in enumerate(fields):
        where = f"signature.outputs[{i}] ({fld.name})"
        row = fld.row_shape
        floating = fld.dtype in FLOAT_DTYPES
        if len(fields) == 1 and not (method_kind == "proba" and floating and row == () and binary):
            kind, column = method_kind, None
        elif not floating and row in (None, ()):
            kind, column = "label", None
        elif floating and row is not None and len(row) == 1 and classes:
            kind, column = "proba", None
        elif floating and row in (None, ()) and binary:
            kind, column = "proba", 1
        elif floating and row in (None, ()) and not classes:
            kind, column = "label", None
        else:
            raise ConfigError(f"{where}: cannot tell which output of the model this is; map it in "
                              f"options.outputs ({{{fld.name}: label | proba | proba:<class>}})",
                              field=f"signature.outputs[{i}]")
        check(kind, where)
        plan[fld.name] = (kind, column)
    return plan


def model_outputs_from_signature(declared: Any, sources: Sequence[str]) -> Outputs | None:
    """Declared outputs onto a model's own named outputs (onnx, tensorflow): by name, else by position.

    None when the signature declares no outputs (the model's outputs are answered as they are);
    a load error naming the field when neither the names nor the count match.
    """
    fields = list(getattr(declared, "outputs", None) or ())
    if not fields:
        return None
    if all(f.name in sources for f in fields):
        return {f.name: (f.name, None) for f in fields}
    if len(fields) == len(sources):
        return {f.name: (source, None) for f, source in zip(fields, sources, strict=True)}
    raise ConfigError(f"signature outputs ({', '.join(f.name for f in fields)}) are not the model's outputs "
                      f"({', '.join(sources)}); map them in options.outputs", field="signature.outputs")


def reported_outputs(method: str, kind: str, classes: Sequence[Any], value_dtype: str = "float64") -> tuple[Any, ...]:
    """What a label/proba model answers without declared outputs, as signature fields (for the V2 metadata).

    ``value_dtype`` is what the framework computes in (a regressor's values, probabilities).
    """
    import numpy as np

    from hydro_serving.contract.signature import Field

    if kind == "label":
        dtype = np.asarray(list(classes)).dtype.name if len(classes) else value_dtype
        if dtype.startswith("<U") or dtype.startswith("str") or dtype == "object":
            dtype = "string"
        return (Field(method, dtype, (-1,)),)
    width = len(classes)
    shape = (-1, width) if kind == "proba" or width > 2 else (-1,)
    return (Field(method, value_dtype, shape),)


def parse_model_outputs(raw: Any, sources: Sequence[str], *, noun: str = "model output",
                        int_columns: bool = True) -> Outputs:
    """``options.outputs`` naming the model's own outputs: ``{name: <output> | <output>:<column>}``.

    For templates whose model has named outputs (onnx, tensorflow): renaming them and picking one
    column (a class's probability) is all a user needs to map them onto a signature. The column is
    an index (``int_columns``), or kept as text where a model answers maps keyed by class (ONNX ZipMap).
    """
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"options.outputs must map output names to '<{noun}>' or '<{noun}>:<column>'",
                          field="options.outputs")
    parsed: Outputs = {}
    for name, spec in raw.items():
        where = f"options.outputs.{name}"
        source, _, column = str(spec).partition(":")
        if source not in sources:
            raise ConfigError(f"{where}: the model has no output '{source}' (outputs: {', '.join(sources)})",
                              field=where)
        if not column:
            parsed[str(name)] = (source, None)
        elif not int_columns:
            parsed[str(name)] = (source, column)
        else:
            try:
                parsed[str(name)] = (source, int(column))
            except ValueError:
                raise ConfigError(f"{where}: the column after ':' must be an index, got '{column}'",
                                  field=where) from None
    return parsed


def class_labels(raw: Any, task: str, num_class: int, objective: str) -> list[Any]:
    """The class labels in index order: ``options.classes``, else the indices ``0..k-1``.

    Native model formats (XGBoost's, LightGBM's) store class indices only, so the labels a user
    trained with can only come from the options; ``task`` is ``binary``, ``multiclass`` or
    ``regression`` (which has no classes to name).
    """
    count = 2 if task == "binary" else num_class if task == "multiclass" else 0
    if raw is None:
        return list(range(count))
    if task == "regression":
        raise ConfigError(f"options.classes: the model is a regressor ({objective})", field="options.classes")
    if not isinstance(raw, list) or len(raw) != count:
        raise ConfigError(f"options.classes must list the model's {count} class labels in index order",
                          field="options.classes")
    return list(raw)


def labels_at(classes: Sequence[Any], index: Any) -> Any:
    """The labels for an array of class indices (object dtype when any label is text, so none is truncated)."""
    import numpy as np

    return np.asarray(classes, dtype=object if any(isinstance(c, str) for c in classes) else None)[index]


def select_outputs(outputs: Mapping[str, tuple[str, Any]], values: Callable[[str], Any],
                   declared: Any) -> dict[str, Any]:
    """``{output name: values(source)[:, column]}``, each cast to the dtype the signature declares for it."""
    selected = {}
    for name, (source, column) in outputs.items():
        data = values(source)
        selected[name] = cast_output(name, data[:, column] if column is not None else data, declared)
    return selected


def compute_outputs(outputs: Outputs | None, default: tuple[str, str], run: Callable[[str], Any],
                    declared: Any) -> dict[str, Any]:
    """``{output name: array with one entry per row}``, calling ``run(kind)`` once per kind needed.

    ``label`` and ``proba:<class>`` outputs of one request share the framework calls they need;
    without ``outputs`` the answer is the one ``default`` ``(name, kind)`` (the method's).
    """
    results: dict[str, Any] = {}

    def once(kind: str) -> Any:
        if kind not in results:
            results[kind] = run(kind)
        return results[kind]

    if outputs is None:
        name, kind = default
        return {name: once(kind)}
    return select_outputs(outputs, once, declared)


def render_answer(columns: Mapping[str, Any], named: bool) -> Any:
    """The JSON answer: one value per row for a single unnamed output, else records (one object per row)."""
    if not named and len(columns) == 1:
        (values,) = columns.values()
        return as_rows(values)
    return render_records(columns)


def answer_batch(payloads: list[Any], parse: Callable[[Any], Any], run: Callable[[Any], dict[str, Any]],
                 render: Callable[[dict[str, Any]], Any], *, merge: Callable[[list[Any]], Any],
                 rows: Callable[[Any], int], alone_on_error: bool = False,
                 splittable: Callable[[dict[str, Any]], bool] | None = None) -> list[Any]:
    """Many requests in one framework call, each answer cut back out by its row count.

    A request whose input does not parse gets its own error and is left out of the merged call, so
    one bad request never fails the others. With ``alone_on_error``, a merged call the model refuses
    (:class:`ValidationError`) is run again request by request to blame the right one; the same
    happens when ``splittable(merged)`` says the merged outputs cannot be cut by rows.
    """
    results: list[Any] = [None] * len(payloads)
    parsed: list[tuple[int, Any]] = []
    for i, payload in enumerate(payloads):
        try:
            parsed.append((i, parse(payload)))
        except HydroError as exc:
            results[i] = exc
    if not parsed:
        return results
    merged: dict[str, Any] | None
    try:
        merged = run(merge([item for _, item in parsed]))
    except ValidationError:
        if not alone_on_error:
            raise
        merged = None
    if merged is None or (splittable is not None and not splittable(merged)):
        for i, item in parsed:
            try:
                results[i] = render(run(item))
            except Exception as exc:  # this request's failure is its answer; the others still get theirs
                results[i] = exc
        return results
    start = 0
    for i, item in parsed:
        stop = start + rows(item)
        results[i] = render({k: v[start:stop] for k, v in merged.items()})
        start = stop
    return results


def concat_rows(matrices: list[Any]) -> Any:
    """Row-wise concatenation of the parsed matrices of a batch."""
    import numpy as np

    return np.concatenate(matrices)


def feed_rows(feeds: dict[str, Any]) -> int:
    """How many rows a request's feeds hold (every input has one entry per row)."""
    return len(next(iter(feeds.values())))


def concat_feeds(feeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Input-wise concatenation of the parsed feeds (``{input name: array}``) of a batch."""
    import numpy as np

    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


class LabelProbaModel(ModelHandler):
    """The request side of a template whose model maps a numeric matrix to labels and class probabilities.

    XGBoost and LightGBM boosters differ in how they load and in how raw predictions become
    probabilities (the templates keep that: ``load``, ``proba``, ``label``), but not in how the
    ``classes``/``method``/``outputs`` options are read, how a request becomes a matrix, or how a
    batch is cut back into answers: that is here, once. A subclass sets ``lang`` (for messages) and
    ``dtype`` (what its framework computes in); its ``load_model`` sets ``objective``/``task``/``num_class``,
    calls :meth:`plan_outputs`, and sets ``features``/``width``/``declared``.
    """

    lang = "model"
    dtype = "float64"
    methods: Mapping[str, str] = {"predict": "label", "predict_proba": "proba"}

    def __init__(self) -> None:
        self.objective = ""
        self.task = "regression"  # binary, multiclass or regression
        self.num_class = 0
        self.classes: list[Any] = []
        self.method = "predict"
        self.outputs: Outputs | None = None
        self.features: list[str] | None = None
        self.width: int | None = None
        self.declared: Any = None
        self.signature: Any = None
        self.reported_outputs: tuple[Any, ...] = ()

    # ---- load ----------------------------------------------------------------------------------

    def plan_outputs(self, options: Mapping[str, Any]) -> None:
        """``options.classes``, ``method`` and ``outputs``, checked against the task once, at load."""
        self.classes = class_labels(options.get("classes"), self.task, self.num_class, self.objective)
        self.method = parse_method(options, self.methods, self.require_proba)
        if options.get("outputs") is not None:
            self.outputs = parse_outputs(options["outputs"], ("label", "proba"), self.classes, self.require_proba)

    def plan_declared_outputs(self, declared: Any) -> None:
        """Without ``options.outputs``: the signature's declared outputs (see :func:`outputs_from_signature`),
        else report the method's one output so the V2 metadata advertises what infer returns."""
        self.declared = declared
        if self.outputs is None:
            self.outputs = outputs_from_signature(declared, self.methods[self.method], self.classes,
                                                  self.require_proba)
        if self.outputs is None:
            self.reported_outputs = reported_outputs(self.method, self.methods[self.method], self.classes, self.dtype)

    def require_proba(self, kind: str, where: str) -> None:
        """A regressor has no probabilities: asking for them is a load error, not a 500 on every request."""
        if kind == "proba" and self.task == "regression":
            raise ConfigError(f"{where}: the model ({self.objective}) gives no probabilities", field=where)

    # ---- inference -----------------------------------------------------------------------------

    def proba(self, x: Any) -> Any:
        raise NotImplementedError

    def label(self, x: Any) -> Any:
        raise NotImplementedError

    def matrix(self, payload: Any) -> Any:
        return to_matrix(table_from_json(payload, self.features, self.width), dtype=self.dtype)

    def compute(self, x: Any) -> dict[str, Any]:
        """``{output name: array with one entry per row}`` from one framework call per kind needed."""
        return compute_outputs(self.outputs, (self.method, self.methods[self.method]),
                               lambda kind: self.proba(x) if kind == "proba" else self.label(x), self.declared)

    def render(self, columns: dict[str, Any]) -> Any:
        return render_answer(columns, named=self.outputs is not None)

    def predict(self, payload: Any) -> Any:
        return self.render(self.compute(self.matrix(payload)))

    def infer_v2(self, arrays: dict[str, Any]) -> dict[str, Any]:
        x = matrix_from_tensors(arrays, self.features, self.width)
        if x.dtype.kind not in "biuf":
            raise ValidationError(f"{self.lang} models take numbers; send numeric tensors (FP32, FP64, INT*)",
                                  field="inputs")
        return self.compute(x.astype(self.dtype))

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        """Many requests in one framework call; a request's bad input fails only that request."""
        return answer_batch(payloads, self.matrix, self.compute, self.render, merge=concat_rows, rows=len)
