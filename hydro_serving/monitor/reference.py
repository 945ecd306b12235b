"""What production is compared with, per field: the training profile, or the first window after deploy.

A model whose manifest carries a training profile (``hydro model upload --training-data``) is
compared with its training data: numbers with the profile's seeded sample (or, for a profile
written before samples were kept, pseudo-values spread along its quantiles), categories with its
counts, free text with its length sample. A function without a profile (a feature function, a
router, and every function's outputs) is compared with its first window after deploy, kept as
values. Either way one :class:`Reference` per side (inputs, outputs) answers "what is normal".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MISSING = "(missing)"
OTHER = "(other)"
TEXT_MIN_UNIQUE = 20  # a string field with more distinct values than this, mostly unique, is free text
TEXT_UNIQUE_RATIO = 0.5
MAX_FIELDS = 200  # fields tested per side: metrics and windows stay bounded whatever callers send
MAX_FIELD_NAME = 100
_MISSING_TEXT = {"", "na", "n/a", "nan", "null", "none"}  # as hydro_serving.store.profile


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING_TEXT


def as_number(value: Any) -> float | None:
    """A JSON number as float (bools are not numbers); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def as_category(value: Any) -> str:
    if is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class FieldRef:
    """The normal state of one field: kind, reference values or counts, and the row-check bounds."""

    name: str
    kind: str  # numeric | categorical | text | other
    values: np.ndarray | None = None  # numbers, or text lengths
    categories: dict[str, float] = field(default_factory=dict)
    complete: bool = True  # ``categories`` lists every category the reference saw
    min: float | None = None
    max: float | None = None
    missing_allowed: bool = True
    integer: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind,
                "values": None if self.values is None else self.values.tolist(),
                "categories": self.categories, "complete": self.complete, "min": self.min, "max": self.max,
                "missing_allowed": self.missing_allowed, "integer": self.integer}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FieldRef:
        values = data.get("values")
        return cls(str(data["name"]), str(data["kind"]), None if values is None else np.asarray(values, float),
                   dict(data.get("categories") or {}), bool(data.get("complete", True)), data.get("min"),
                   data.get("max"), bool(data.get("missing_allowed", True)), bool(data.get("integer", False)))

    # ---- the production side, in the same terms ------------------------------------------------

    def current(self, raw: Sequence[Any]) -> Any:
        """The window's values of this field as the tests take them: an array, or category counts."""
        if self.kind == "numeric":
            nums = [as_number(v) for v in raw]
            return np.asarray([n for n in nums if n is not None], dtype=np.float64)
        if self.kind == "text":
            return np.asarray([len(v) if isinstance(v, str) and not is_missing(v) else 0 for v in raw], float)
        counts: dict[str, float] = {}
        for v in raw:
            key = as_category(v)
            if not self.complete and key not in self.categories and key != MISSING:
                key = OTHER
            counts[key] = counts.get(key, 0) + 1
        return counts


@dataclass
class Reference:
    """Per field references of one side (inputs or outputs) and where they came from."""

    source: str  # profile | window
    fields: dict[str, FieldRef]
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows": self.rows, "fields": [f.to_dict() for f in self.fields.values()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        fields = [FieldRef.from_dict(f) for f in data.get("fields") or []]
        return cls(str(data.get("source", "window")), {f.name: f for f in fields}, int(data.get("rows", 0)))


def _quantile_values(col: Mapping[str, Any], n: int = 1000) -> np.ndarray | None:
    """Pseudo-values along the piecewise-linear CDF through min, p5..p95, max (profiles without samples)."""
    qs = col.get("quantiles") or {}
    try:
        points = [(0.0, float(col["min"]))]
        points += sorted((float(k[1:]) / 100.0, float(v)) for k, v in qs.items())
        points.append((1.0, float(col["max"])))
    except (KeyError, TypeError, ValueError):
        return None
    probs, vals = zip(*points, strict=True)
    return np.interp((np.arange(n) + 0.5) / n, probs, vals)


def from_profile(profile: Mapping[str, Any]) -> Reference:
    """The reference of a manifest's ``training_profile`` (hydro_serving.store.profile)."""
    fields: dict[str, FieldRef] = {}
    for col in profile.get("columns") or []:
        if not isinstance(col, Mapping) or not isinstance(col.get("name"), str):
            continue
        name, kind, missing = col["name"], col.get("type"), int(col.get("missing") or 0)
        if kind in ("integer", "float"):
            sample = col.get("sample")
            values = np.asarray(sample, dtype=np.float64) if isinstance(sample, list) and sample else \
                _quantile_values(col)
            fields[name] = FieldRef(name, "numeric", values, min=col.get("min"), max=col.get("max"),
                                    missing_allowed=missing > 0, integer=kind == "integer")
        elif kind == "string":
            count, unique = int(col.get("count") or 0), int(col.get("unique") or 0)
            top = {str(t["value"]): float(t["count"]) for t in col.get("top") or [] if isinstance(t, Mapping)}
            if unique > TEXT_MIN_UNIQUE and count and unique / count > TEXT_UNIQUE_RATIO:
                lengths = col.get("length_sample")
                values = np.asarray(lengths, dtype=np.float64) if isinstance(lengths, list) and lengths else None
                fields[name] = FieldRef(name, "text", values, missing_allowed=missing > 0)
                continue
            complete = unique <= len(top)
            cats = dict(top)
            if not complete and count - sum(top.values()) > 0:
                cats[OTHER] = count - sum(top.values())
            if missing:
                cats[MISSING] = float(missing)
            fields[name] = FieldRef(name, "categorical", categories=cats, complete=complete,
                                    missing_allowed=missing > 0)
    return Reference("profile", fields, int(profile.get("rows") or 0))


def _kind_of(values: Sequence[Any]) -> str:
    present = [v for v in values if not is_missing(v)]
    if not present:
        return "other"
    if all(as_number(v) is not None for v in present):
        return "numeric"
    if all(isinstance(v, str | bool) for v in present):
        strings = [v for v in present if isinstance(v, str)]
        unique = len(set(strings))
        if unique > TEXT_MIN_UNIQUE and unique / max(len(strings), 1) > TEXT_UNIQUE_RATIO:
            return "text"
        return "categorical"
    return "other"  # lists, objects, mixed types: not tested


def columns(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows to columns; a field absent from a row is None there (missing)."""
    rows = list(rows)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names}


def from_rows(rows: Sequence[Mapping[str, Any]], names: Sequence[str] = ()) -> Reference:
    """The reference of a window of production rows (the first window after deploy).

    Only the signature's fields (``names``) when it declares some, else the rows' own fields, at most
    ``MAX_FIELDS`` of them with names of at most ``MAX_FIELD_NAME`` characters: a caller inventing keys
    must not be able to grow the windows or the metrics without bound.
    """
    fields: dict[str, FieldRef] = {}
    cols = columns(rows)
    wanted = [n for n in names if n in cols] if names else [n for n in cols if len(str(n)) <= MAX_FIELD_NAME]
    for name in wanted[:MAX_FIELDS]:
        raw = cols[name]
        kind = _kind_of(raw)
        missing = any(is_missing(v) for v in raw)
        ref = FieldRef(name, kind, missing_allowed=missing)
        if kind == "numeric":
            ref.values = ref.current(raw)
            ref.min, ref.max = float(ref.values.min()), float(ref.values.max())
        elif kind == "text":
            ref.values = ref.current(raw)
        elif kind == "categorical":
            ref.categories = ref.current(raw)
        fields[name] = ref
    return Reference("window", fields, len(rows))
