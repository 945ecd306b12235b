"""Requests <-> DataFrame rows for the spark template: layouts, Spark types, and errors that name the column.

Kept apart from ``handler.py`` so that the checks that make a bad request a 400 (missing column, a
string where the model needs a number, mixed types in one column) read as one small module. Spark
imports happen inside the functions: the module is imported before the session exists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from hydro_serving.errors import ValidationError

Record = tuple[str, Mapping[str, Any]]  # (JSON path prefix such as "[0]", the record)


def records_from_payload(payload: Any, inputs: list[str], vector_columns: frozenset[str] = frozenset()) -> list[Record]:
    """A list of records, one record, or a columnar object ``{column: [v, v, ...]}`` as ``[(prefix, record)]``.

    An object whose input values are all lists is columnar, unless one of them is a vector column of
    the signature (then it is one record): a list of records is never ambiguous, so prefer it.
    """
    if isinstance(payload, list):
        if not payload:
            raise ValidationError("the request holds no records", field="$")
        out = []
        for i, item in enumerate(payload):
            if not isinstance(item, Mapping):
                raise ValidationError(f"record [{i}] must be an object with the columns {', '.join(inputs)}",
                                      field=f"[{i}]")
            out.append((f"[{i}]", item))
        return out
    if isinstance(payload, Mapping):
        missing = [c for c in inputs if c not in payload]
        if missing:
            raise ValidationError(f"missing column '{missing[0]}'", field=missing[0])
        if all(isinstance(payload[c], list) for c in inputs) and not vector_columns & set(inputs):
            lengths = {len(payload[c]) for c in inputs}
            if len(lengths) != 1:
                raise ValidationError("columnar input: every column must have as many values as the others",
                                      field=inputs[0])
            count = lengths.pop()
            listed = [c for c in payload if isinstance(payload[c], list) and len(payload[c]) == count]
            return [(f"[{i}]", {c: payload[c][i] for c in listed}) for i in range(count)]
        return [("", payload)]
    raise ValidationError(f"the request must be a list of records (objects), got {type(payload).__name__}",
                          field="$")


def records_from_arrays(arrays: Mapping[str, Any], inputs: list[str]) -> list[Record]:
    """V2 tensors by column name (first dimension = rows) as records; 2-D tensors are vector columns."""
    missing = [c for c in inputs if c not in arrays]
    if missing:
        raise ValidationError(f"missing input tensor '{missing[0]}'", field="inputs")
    lengths = {}
    for name, array in arrays.items():
        if array.ndim == 0:
            raise ValidationError(f"input tensor '{name}' must have a first (row) dimension", field=name)
        lengths[name] = array.shape[0]
    if len(set(lengths.values())) != 1:
        raise ValidationError(f"input tensors have different numbers of rows: {lengths}", field="inputs")
    count = next(iter(lengths.values()))
    if count == 0:
        raise ValidationError("the request holds no rows", field="inputs")
    columns = {name: array.tolist() for name, array in arrays.items()}
    return [(f"[{i}]", {name: values[i] for name, values in columns.items()}) for i in range(count)]


def spark_type(dtype: str, row_shape: tuple[int, ...] | None, column: str) -> Any:
    """The Spark type of a signature field: scalars map by dtype; a numeric row vector is an ML Vector."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    scalar = {
        "bool": T.BooleanType(), "int8": T.ByteType(), "int16": T.ShortType(), "int32": T.IntegerType(),
        "int64": T.LongType(), "uint8": T.ShortType(), "uint16": T.IntegerType(), "uint32": T.LongType(),
        "uint64": T.LongType(), "float16": T.FloatType(), "float32": T.FloatType(), "float64": T.DoubleType(),
        "string": T.StringType(), "bytes": T.StringType(),
    }[dtype]
    if not row_shape:
        return scalar
    if len(row_shape) == 1:
        return T.ArrayType(T.StringType()) if dtype in ("string", "bytes") else VectorUDT()
    raise ValidationError(f"column '{column}': Spark columns take scalars or 1-D vectors, the signature says "
                          f"row shape {list(row_shape)}", field=column)


def infer_type(records: list[Record], column: str, need: str | None) -> Any:
    """The Spark type of a column from its JSON values; mixed or unfit values are the caller's error."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import types as T

    kinds: dict[str, str] = {}  # kind -> where first seen
    for prefix, record in records:
        where = f"{prefix}.{column}" if prefix else column
        if column not in record:
            raise ValidationError(f"missing column '{column}'" + (f" in record {prefix}" if prefix else ""),
                                  field=where)
        kind = _kind(record[column], where)
        if kind is not None:
            kinds.setdefault(kind, where)
    if "int" in kinds and "float" in kinds:
        kinds.pop("int")
    if len(kinds) > 1:
        (a, where_a), (b, where_b) = list(kinds.items())[:2]
        raise ValidationError(f"column '{column}' mixes {a} ({where_a}) and {b} ({where_b}) values", field=where_b)
    kind = next(iter(kinds), None)
    if need == "numeric" and kind in ("string", "strings"):
        raise ValidationError(f"column '{column}' must be a number, got a string", field=kinds[kind])
    if need == "text" and kind not in (None, "string"):
        raise ValidationError(f"column '{column}' must be a string, got {kind}", field=kinds[kind])
    if kind is None:
        return T.DoubleType() if need == "numeric" else T.StringType()
    return {"bool": T.BooleanType(), "int": T.LongType(), "float": T.DoubleType(), "string": T.StringType(),
            "vector": VectorUDT(), "strings": T.ArrayType(T.StringType())}[kind]


def _kind(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            return "strings"
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return "vector"
        raise ValidationError(f"{where} must be a list of numbers (a vector) or of strings", field=where)
    raise ValidationError(f"{where} must be a number, string, boolean or list, got {type(value).__name__}",
                          field=where)


def check_values(records: list[Record], categories: Mapping[str, set[str]], not_null: set[str]) -> None:
    """Refuse categories the model never saw and nulls it cannot take, naming the record and column."""
    for prefix, record in records:
        for col, known in categories.items():
            value = record.get(col)
            if value is not None and _as_category(value) not in known:
                where = f"{prefix}.{col}" if prefix else col
                shown = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
                raise ValidationError(f"column '{col}': unknown category {value!r} (the model knows {shown})",
                                      field=where)
        for col in not_null:
            if col in record and record[col] is None:
                where = f"{prefix}.{col}" if prefix else col
                raise ValidationError(f"column '{col}' must have a value (the model cannot take null)", field=where)


def _as_category(value: Any) -> str:
    """How Spark casts a value to the string a StringIndexer looks up."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_spark_value(value: Any, spark_type: Any) -> Any:
    """A JSON value as Spark expects it for the column's type (the checks above have run)."""
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql import types as T

    if value is None:
        return None
    if isinstance(spark_type, VectorUDT):
        return Vectors.dense([float(v) for v in value])
    if isinstance(spark_type, T.DoubleType | T.FloatType):
        return float(value)
    if isinstance(spark_type, T.LongType | T.IntegerType | T.ShortType | T.ByteType) and isinstance(value, float):
        return int(value)
    return value


def to_json(value: Any) -> Any:
    """A Spark result value as JSON: vectors as lists, NaN as null, Rows as objects."""
    if value is None:
        return None
    if hasattr(value, "toArray"):
        return [None if math.isnan(v) else v for v in value.toArray().tolist()]
    if hasattr(value, "asDict"):
        return {k: to_json(v) for k, v in value.asDict().items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


_COLUMN_IN_MESSAGE = re.compile(r"[`'\"]([^`'\"]+)[`'\"]")
_CALLER_MARKERS = ("Unseen label", "handleInvalid", "null", "NULL", "Data type", "cannot resolve", "UNRESOLVED_COLUMN",
                   "must be of type", "does not exist", "Vector", "size")


def caller_error(exc: BaseException, columns: list[str]) -> ValidationError | None:
    """A ValidationError when Spark refused the caller's values (unseen category, null, wrong type), else None.

    Spark only says so in its message; the column is the first of the request's columns it names.
    """
    text = str(exc)
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    if not any(marker in text for marker in _CALLER_MARKERS):
        return None
    named = [c for c in _COLUMN_IN_MESSAGE.findall(text) if c in columns]
    if not named:
        named = [c for c in columns if re.search(rf"\b{re.escape(c)}\b", text)]
    column = named[0] if named else "$"
    reason = _short_reason(text) or first_line
    return ValidationError(f"column '{column}': the model cannot take this value: {reason}" if named
                           else f"the model cannot take this input: {reason}", field=column)


def _short_reason(text: str) -> str:
    for marker in ("Unseen label: ", "Encountered null", "Data type "):
        at = text.find(marker)
        if at >= 0:
            return text[at:].splitlines()[0][:200]
    return ""

