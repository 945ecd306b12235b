"""pm-features: turn listing pairs into the numeric features the product-matching classifier reads.

Stage one of the ``product-matching`` pipeline. It accepts what callers naturally send - a JSON
list of pairs, one pair object, or a columnar object of lists - and always answers a list of
records (one per pair) whose keys are the classifier's inputs, so the next stage needs no glue.
The feature code itself lives in ``features.py`` beside this file and is loaded by path, because
the training code loads the very same file: serving can never drift from training.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from hydro_serving.errors import ValidationError

FIELDS = ("Title1", "ItemSpecifics1", "Title2", "ItemSpecifics2")
_MODULE = "hydro_pm_features"
_LOADING = threading.Lock()
_loaded: list[ModuleType] = []  # set once features.py has run to the end


def _features() -> ModuleType:
    """The sibling ``features.py``, imported once per process under a name no one else uses.

    Under a lock: the first requests of a cold replica arrive together, and a thread that found the
    module in ``sys.modules`` while another was still executing it saw no ``pair_features`` yet.
    """
    if _loaded:
        return _loaded[0]
    with _LOADING:
        if not _loaded:
            module = sys.modules.get(_MODULE)
            if module is None:
                spec = importlib.util.spec_from_file_location(_MODULE, Path(__file__).with_name("features.py"))
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[_MODULE] = module  # before running it, as an import does (dataclasses look it up)
                spec.loader.exec_module(module)
            _loaded.append(module)
    return _loaded[0]


def _records(payload: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """The pairs with their JSON path prefix (``[0]``), whatever the request's layout."""
    if isinstance(payload, Mapping):
        if isinstance(payload.get("Title1"), list):  # columnar: {"Title1": [...], ...}
            columns = {}
            for name in FIELDS:
                column = payload.get(name)
                if column is None:
                    raise ValidationError(f"missing field '{name}'", field=name)
                if not isinstance(column, list) or len(column) != len(payload["Title1"]):
                    raise ValidationError(f"'{name}' must be a list as long as 'Title1'", field=name)
                columns[name] = column
            rows = [dict(zip(FIELDS, values, strict=True)) for values in zip(*columns.values(), strict=True)]
            return [(f"[{i}]", row) for i, row in enumerate(rows)]
        return [("", payload)]
    if isinstance(payload, list):
        if not payload:
            raise ValidationError("the request holds no pairs", field="$")
        out = []
        for i, item in enumerate(payload):
            if not isinstance(item, Mapping):
                raise ValidationError(f"pair [{i}] must be an object with {', '.join(FIELDS)}", field=f"[{i}]")
            out.append((f"[{i}]", item))
        return out
    raise ValidationError(
        f"the request must be a pair object or a list of them, got {type(payload).__name__}", field="$"
    )


def _text(record: Mapping[str, Any], name: str, prefix: str) -> str | Mapping[str, Any] | None:
    where = f"{prefix}.{name}" if prefix else name
    if name not in record:
        raise ValidationError(f"missing field '{name}'" + (f" in pair {prefix}" if prefix else ""), field=where)
    value = record[name]
    if name.startswith("Title"):
        if not isinstance(value, str):
            raise ValidationError(f"'{name}' must be a string, got {type(value).__name__}", field=where)
        return value
    if value is None or isinstance(value, str | Mapping):  # specifics may be absent (null) or an object
        return value
    raise ValidationError(f"'{name}' must be a string like \"'Brand': ' Apple'; ...\", got {type(value).__name__}",
                          field=where)


def handle(payload: Any, context: Any = None) -> list[dict[str, float]]:
    """One record of features per pair, in the order the pairs came."""
    features = _features()
    out = []
    for prefix, record in _records(payload):
        title1, spec1, title2, spec2 = (_text(record, name, prefix) for name in FIELDS)
        out.append(features.pair_features(title1, spec1, title2, spec2))
    return out
