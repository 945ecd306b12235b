"""Per-row health: each sampled row checked against the training profile and the signature.

Checks (Hydrosphere's per-request profile checks, plus the signature):

* ``missing``: no value where the training data never lacked one (or a signature field absent);
* ``wrong_type``: a string where training (or the signature's dtype) had numbers, and so on;
* ``out_of_range``: a number outside the training min/max;
* ``unseen_category``: a category training never had (only when the profile lists all of them);
* ``unexpected_field``: a field the signature does not declare;
* ``error_status``: the function answered with an error status.

Range and category checks use training profiles only: a reference made of the first production
window says what was normal, not what is valid, and would flag every new value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.contract.dtypes import json_value_matches
from hydro_serving.monitor.reference import MISSING, Reference, as_category, as_number, is_missing

MAX_SHOWN = 80  # characters of a value kept in a failed check


@dataclass(frozen=True)
class Failure:
    field: str
    check: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "check": self.check, "detail": self.detail}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def _against_signature(row: Mapping[str, Any], signature: Signature) -> list[Failure]:
    out: list[Failure] = []
    declared = {f.name: f for f in signature.inputs}
    for name, spec in declared.items():
        if name not in row:
            out.append(Failure(name, "missing", "the signature declares it; the row lacks it"))
            continue
        value = row[name]
        if value is None or isinstance(value, list | dict):
            continue  # nulls are the profile's business; nested values the runtime's validation
        if not json_value_matches(value, spec.dtype):
            out.append(Failure(name, "wrong_type", f"signature dtype {spec.dtype}, got {_show(value)}"))
    out += [Failure(name, "unexpected_field", "not in the signature") for name in row if name not in declared]
    return out


def _against_reference(row: Mapping[str, Any], reference: Reference) -> list[Failure]:
    out: list[Failure] = []
    for name, ref in reference.fields.items():
        value = row.get(name)
        if is_missing(value):
            if not ref.missing_allowed:
                out.append(Failure(name, "missing", "training data has no missing values here"))
            continue
        if ref.kind == "numeric":
            number = as_number(value)
            if number is None:
                out.append(Failure(name, "wrong_type", f"training data has numbers, got {_show(value)}"))
            elif ref.min is not None and ref.max is not None and not ref.min <= number <= ref.max:
                out.append(Failure(name, "out_of_range", f"{number:g} outside the training range "
                                                         f"[{ref.min:g}, {ref.max:g}]"))
        elif ref.kind in ("categorical", "text"):
            if not isinstance(value, str | bool):
                out.append(Failure(name, "wrong_type", f"training data has strings, got {_show(value)}"))
            elif ref.kind == "categorical" and ref.complete:
                key = as_category(value)
                if key != MISSING and key not in ref.categories:
                    out.append(Failure(name, "unseen_category", f"{_show(value)} never seen in training"))
    return out


def check_row(row: Mapping[str, Any], reference: Reference | None, signature: Signature | None,
              status: int = 200) -> list[Failure]:
    """Every failed check of one row (an empty list: a healthy row)."""
    failures: list[Failure] = []
    if signature is not None and signature.inputs:
        failures += _against_signature(row, signature)
    if reference is not None and reference.source == "profile":
        seen = {(f.field, f.check) for f in failures}
        failures += [f for f in _against_reference(row, reference) if (f.field, f.check) not in seen]
    if status >= 400:
        failures.append(Failure("(response)", "error_status", f"HTTP {status}"))
    return failures


def check_rows(rows: Sequence[Mapping[str, Any]], reference: Reference | None, signature: Signature | None,
               status: int = 200) -> list[list[Failure]]:
    return [check_row(row, reference, signature, status) for row in rows]
