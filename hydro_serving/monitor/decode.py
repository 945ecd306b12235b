"""Bodies to records: the JSON shapes functions accept and answer, as one list of ``{field: value}``.

The gateway hands the monitor raw bytes; decoding happens here, in the worker, never on the
request path. Accepted: a list of records, one record, a columnar object (every value a list of
the same length), a 2-D list (fields named by the signature, else ``"0"``, ``"1"``, ...), and V2
(Open Inference Protocol) ``{"inputs"|"outputs": [{name, data, ...}]}``. Anything else is not
rows (a custom function's free-form answer) and yields ``None``: it is counted, not guessed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

MAX_ROWS_PER_BODY = 10_000  # a sampled body with more rows is cut: the monitor must stay cheap


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _from_v2(tensors: Any) -> list[dict[str, Any]] | None:
    if not isinstance(tensors, list) or not tensors:
        return None
    columns: dict[str, list[Any]] = {}
    for tensor in tensors:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            return None
        data = tensor.get("data")
        if not isinstance(data, list):
            return None
        shape = tensor.get("shape")
        rows = shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) else len(data)
        if rows and len(data) != rows and len(data) % rows == 0:  # [rows, k] flattened: keep each row's list
            width = len(data) // rows
            data = [data[i * width:(i + 1) * width] for i in range(rows)]
        columns[tensor["name"]] = data
    return _from_columns(columns)


def _from_columns(columns: dict[str, Any]) -> list[dict[str, Any]] | None:
    lengths = {len(v) for v in columns.values() if isinstance(v, list)}
    if len(lengths) != 1 or not all(isinstance(v, list) for v in columns.values()):
        return None
    n = lengths.pop()
    return [{k: v[i] for k, v in columns.items()} for i in range(min(n, MAX_ROWS_PER_BODY))]


def records(payload: Any, names: Sequence[str] = (), v2_key: str = "inputs") -> list[dict[str, Any]] | None:
    """The rows of a decoded JSON payload, or None when it is not a row-shaped payload."""
    if isinstance(payload, list):
        rows = payload[:MAX_ROWS_PER_BODY]
        if all(isinstance(r, dict) for r in rows):
            return [dict(r) for r in rows]
        if all(isinstance(r, list) for r in rows):
            keys = list(names)
            return [{(keys[i] if i < len(keys) else str(i)): v for i, v in enumerate(r)} for r in rows]
        if all(_is_scalar(r) for r in rows) and len(names) == 1:  # one output per row: ``[0.3, 0.9]``
            return [{names[0]: r} for r in rows]
        return None
    if isinstance(payload, dict):
        if v2_key in payload and isinstance(payload[v2_key], list):
            return _from_v2(payload[v2_key])
        if payload and all(_is_scalar(v) for v in payload.values()):
            return [dict(payload)]
        if payload and all(isinstance(v, list) for v in payload.values()):
            return _from_columns(payload)
    return None


def decode(body: bytes, names: Sequence[str] = (), v2_key: str = "inputs") -> list[dict[str, Any]] | None:
    """``records`` of a raw body; None for an empty, non-JSON or non-row body."""
    if not body:
        return None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[...]]]]" nested too deep
        return None
    return records(payload, names, v2_key)
