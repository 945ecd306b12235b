"""JSON and V2 requests to 2-D feature matrices, for the tabular model templates (sklearn, onnx).

Callers send what is natural to them - a list of records, one record, a columnar object, a 2-D
list of rows, or V2 tensors - and every shape the model cannot take is rejected here with a
:class:`ValidationError` that names the row and feature, before the framework produces an
error message about ``X`` that the caller could not act on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.dtypes import numpy_dtype
from hydro_serving.errors import HandlerError, ValidationError

_SHAPES_HELP = "send a list of records, one record, a columnar object, or a 2-D list of rows"


@dataclass
class Table:
    """Rows of cell values as the caller sent them, with enough context to name a bad cell."""

    rows: list[list[Any]]
    features: list[str] | None
    from_records: bool

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, i: int, j: int) -> str:
        """The caller's path to cell (i, j): ``[2].petal_width`` for records, ``[2][3]`` for rows."""
        if self.from_records and self.features:
            return f"[{i}].{self.features[j]}"
        return f"[{i}][{j}]"

    def label(self, i: int, j: int) -> str:
        name = f" ('{self.features[j]}')" if self.features and j < len(self.features) else ""
        return f"row {i}, feature {j}{name}"


def feature_order(signature: Signature | None, model_features: Sequence[str] | None) -> list[str] | None:
    """Column order: the signature's inputs when declared, else the model's own feature names."""
    if signature is not None and signature.inputs:
        return signature.input_names
    if model_features is not None and len(model_features):
        return [str(f) for f in model_features]
    return None


def table_from_json(payload: Any, features: Sequence[str] | None, width: int | None = None) -> Table:
    """A :class:`Table` from a JSON payload; ``width`` (the model's feature count) checks row lengths."""
    names = list(features) if features is not None else None
    if isinstance(payload, Mapping):
        return _table_from_object(payload, names)
    if not isinstance(payload, list):
        raise ValidationError(f"{_SHAPES_HELP}; got a JSON {type(payload).__name__}", field="$")
    if not payload:
        raise ValidationError("the request holds no rows", field="$")
    if all(isinstance(item, Mapping) for item in payload):
        names = _require_names(names)
        rows = [_record_row(record, names, f"[{i}]") for i, record in enumerate(payload)]
        return Table(rows, names, from_records=True)
    if all(isinstance(item, list) for item in payload):
        table = Table([list(row) for row in payload], names, from_records=False)
        _check_rows(table, width if width is not None else (len(names) if names else None))
        return table
    raise ValidationError(f"{_SHAPES_HELP}; a flat list is ambiguous (wrap one row as [[...]])", field="$")


def _require_names(names: list[str] | None) -> list[str]:
    if not names:
        raise ValidationError("records need feature names to put values in order, and this model has none: "
                              "declare signature inputs in stack.yml, or send a 2-D list of rows", field="$")
    return names


def _record_row(record: Mapping[str, Any], names: list[str], prefix: str) -> list[Any]:
    row = []
    for name in names:
        if name not in record:
            raise ValidationError(f"missing feature '{name}'" + (f" in record {prefix}" if prefix else ""),
                                  field=f"{prefix}.{name}" if prefix else name)
        value = record[name]
        if isinstance(value, list | Mapping):
            where = f"{prefix}.{name}" if prefix else name
            raise ValidationError(f"{where} must be a single value, got a {type(value).__name__}", field=where)
        row.append(value)
    return row


def _table_from_object(payload: Mapping[str, Any], names: list[str] | None) -> Table:
    names = _require_names(names)
    missing = [n for n in names if n not in payload]
    if missing:
        raise ValidationError(f"missing feature '{missing[0]}'", field=missing[0])
    values = [payload[n] for n in names]
    if all(not isinstance(v, list | Mapping) for v in values):  # one record
        return Table([values], names, from_records=True)
    if all(isinstance(v, list) for v in values):  # columnar: {feature: [v0, v1, ...]}
        length = len(values[0])
        for name, column in zip(names, values, strict=True):
            if len(column) != length:
                raise ValidationError(f"column '{name}' has {len(column)} values but '{names[0]}' has {length}",
                                      field=name)
            for i, cell in enumerate(column):
                if isinstance(cell, list | Mapping):
                    raise ValidationError(f"{name}[{i}] must be a single value", field=f"{name}[{i}]")
        if length == 0:
            raise ValidationError("the request holds no rows", field=names[0])
        return Table([list(row) for row in zip(*values, strict=True)], names, from_records=True)
    bad = next(n for n, v in zip(names, values, strict=True) if isinstance(v, list | Mapping))
    raise ValidationError(f"'{bad}': send one value per feature (one record) or a list per feature "
                          f"(columns), not a mix", field=bad)


def _check_rows(table: Table, width: int | None) -> None:
    expected = width if width is not None else len(table.rows[0])
    for i, row in enumerate(table.rows):
        if len(row) != expected:
            names = f" ({', '.join(table.features)})" if table.features and len(table.features) == expected else ""
            raise ValidationError(f"row {i} has {len(row)} values but the model takes {expected} features{names}",
                                  field=f"[{i}]")
        for j, cell in enumerate(row):
            if isinstance(cell, list | Mapping):
                raise ValidationError(f"{table.where(i, j)} must be a single value, got a {type(cell).__name__}",
                                      field=table.where(i, j))


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, str))


def first_non_numeric(table: Table) -> tuple[int, int, Any] | None:
    """The first cell that is not a number (``null`` counts as missing, i.e. NaN), or None."""
    for i, row in enumerate(table.rows):
        for j, cell in enumerate(row):
            if not _is_number(cell):
                return i, j, cell
    return None


def non_numeric_error(table: Table, cell: tuple[int, int, Any], reason: str = "") -> ValidationError:
    i, j, value = cell
    where = table.where(i, j)
    short = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    tail = f" ({reason})" if reason else ""
    return ValidationError(f"{where}: {table.label(i, j)} must be a number, got {short}{tail}", field=where)


def refuse_missing(table: Table, model: str) -> None:
    """A 400 naming the first ``null`` cell, for a model that cannot take missing values (NaN).

    Without it such a model fails on the whole matrix ("Input X contains NaN") and the caller is
    not told which value to fix.
    """
    for i, row in enumerate(table.rows):
        for j, cell in enumerate(row):
            if cell is None:
                where = table.where(i, j)
                raise ValidationError(f"{where} is null, and this model ({model}) does not accept missing values; "
                                      "send a number (models that do: HistGradientBoosting, XGBoost, LightGBM)",
                                      field=where)


def to_matrix(table: Table, dtype: str = "float64", allow_strings: bool = False) -> Any:
    """The rows as a 2-D numpy array; a non-numeric cell is a 400 naming it unless strings are allowed.

    ``null`` becomes NaN (JSON has no NaN, and imputing pipelines take missing values);
    with ``allow_strings`` a table holding text becomes an ``object`` array for the model to judge.
    """
    import numpy as np

    bad = first_non_numeric(table)
    if bad is not None:
        if not allow_strings:
            raise non_numeric_error(table, bad)
        return np.array(table.rows, dtype=object)
    rows = [[np.nan if cell is None else cell for cell in row] for row in table.rows]
    return np.asarray(rows, dtype=dtype).reshape(len(rows), -1)


def matrix_from_tensors(arrays: Mapping[str, Any], features: Sequence[str] | None, width: int | None) -> Any:
    """One 2-D tensor (any name) as it is, or one tensor per feature stacked as columns in feature order."""
    import numpy as np

    if len(arrays) == 1:
        (name, array), = arrays.items()
        if array.ndim == 2:
            if width is not None and array.shape[1] != width:
                raise ValidationError(f"input '{name}' has {array.shape[1]} features per row but the model "
                                      f"takes {width}", field="inputs[0].shape")
            return array
        if not (features and len(features) == 1 and name == features[0] and array.ndim == 1):
            raise ValidationError(f"input '{name}' must be a 2-D tensor [rows, features], got shape "
                                  f"{list(array.shape)}; or send one tensor per feature", field="inputs[0].shape")
    if not features:
        raise ValidationError("one tensor per feature needs feature names: declare signature inputs, or send "
                              "one 2-D tensor", field="inputs")
    unknown = [n for n in arrays if n not in features]
    if unknown:
        raise ValidationError(f"unknown input tensor '{unknown[0]}' (features: {', '.join(features)})",
                              field="inputs")
    columns = []
    length: int | None = None
    for name in features:
        if name not in arrays:
            raise ValidationError(f"missing input tensor '{name}'", field="inputs")
        column = arrays[name]
        if column.ndim == 2 and column.shape[1] == 1:
            column = column[:, 0]
        if column.ndim != 1:
            raise ValidationError(f"input '{name}' must have shape [rows] or [rows, 1], got {list(column.shape)}",
                                  field="inputs")
        if length is not None and len(column) != length:
            raise ValidationError(f"input '{name}' has {len(column)} rows but the others have {length}",
                                  field="inputs")
        length = len(column)
        columns.append(column)
    kinds = {c.dtype.kind for c in columns}
    dtype = object if kinds & {"O", "U", "S"} else np.result_type(*columns)
    return np.stack([c.astype(dtype) for c in columns], axis=1)


def cast_output(name: str, values: Any, signature: Signature | None) -> Any:
    """An output column cast to the dtype the signature declares for it (``bool`` for a 0/1 label)."""
    declared = signature.output(name) if signature is not None else None
    if declared is None:
        return values
    try:
        if declared.dtype in ("string", "bytes"):
            return values.astype(str).astype(object)
        return values.astype(numpy_dtype(declared.dtype))
    except (ValueError, TypeError) as exc:
        raise HandlerError(f"output '{name}' cannot be cast to {declared.dtype} as the signature declares: "
                           f"{exc}") from None


def as_rows(values: Any) -> list[Any]:
    """One JSON value per row from an array (or a list, e.g. ONNX ZipMap's list of dicts)."""
    return list(values) if isinstance(values, list) else values.tolist()


def render_records(columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{name: column}`` -> ``[{name: value}, ...]``: one JSON object per row."""
    names = list(columns)
    lists = [as_rows(columns[n]) for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]
