"""stack.yml's JSON Schema and its errors as key paths: what the loader and the typed model both check with.

Its own module so that the typed objects (:mod:`~hydro_serving.stack.model`) and the YAML loader
(:mod:`~hydro_serving.stack.loader`) share one validator without importing each other. An error is
a :class:`StackError` whose ``field`` is the dotted key path and whose message ends with the line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

from hydro_serving.errors import StackError

Errors = list[tuple[tuple[Any, ...], str]]


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


# ---- schema ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def stack_schema() -> dict[str, Any]:
    return json.loads(resources.files("hydro_serving.stack").joinpath("schema.json").read_text())


@lru_cache(maxsize=2)
def _validator(ref: str | None) -> Any:
    import jsonschema

    schema = stack_schema()
    if ref is not None:
        schema = {**schema, "$ref": ref}
        schema = {k: v for k, v in schema.items() if k not in ("properties", "required", "additionalProperties",
                                                               "type")}
    return jsonschema.Draft202012Validator(schema)


def schema_errors(data: Any, ref: str | None) -> list[tuple[tuple[Any, ...], str]]:
    """Every schema violation as (key path, message), most specific first."""
    errors = []
    for err in _validator(ref).iter_errors(data):
        leaf = _deepest(err)
        path = tuple(leaf.absolute_path)
        if leaf.validator == "additionalProperties" and isinstance(leaf.instance, Mapping):
            allowed = set(leaf.schema.get("properties", {}))
            extra = sorted(k for k in leaf.instance if k not in allowed)
            if extra:
                errors.append(((*path, extra[0]), f"unknown key '{extra[0]}'"))
                continue
        errors.append((path, _friendly(leaf)))
    errors.sort(key=lambda item: -len(item[0]))
    return errors


def _deepest(err: Any) -> Any:
    """For oneOf/anyOf, the sub-error that went deepest is the one that explains the mistake."""
    if err.context:
        best = max(err.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
        if len(best.absolute_path) > len(err.absolute_path) or err.validator not in ("oneOf", "anyOf"):
            return _deepest(best)
        return err
    return err


def _friendly(err: Any) -> str:
    if err.validator == "type":
        expected = err.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"must be of type {expected}, got {type(err.instance).__name__} {json.dumps(err.instance)[:40]}"
    if err.validator == "required":
        return err.message.replace("is a required property", "is required")
    if err.validator == "enum":
        return f"must be one of {', '.join(map(str, err.validator_value))}, got {err.instance!r}"
    if err.validator in ("oneOf", "anyOf"):
        # "invalid value" alone leaves the user guessing: the schema's description says what is accepted
        expected = err.schema.get("description") if isinstance(err.schema, Mapping) else None
        accepted = f"; expected {expected}" if expected else ""
        return f"has an invalid value {json.dumps(err.instance)[:60]}{accepted}"
    return err.message


def raise_first(errors: list[tuple[tuple[Any, ...], str]], prefix: tuple[str, ...],
                 lines: dict[tuple[str, ...], int]) -> None:
    if not errors:
        return
    path, message = errors[0]
    full = (*prefix, *path)
    line = line_for(full, lines)
    where = dotted(full)
    suffix = f" (line {line})" if line else ""
    raise StackError(f"{where}: {message}{suffix}", field=where, details={"line": line} if line else None)


def line_for(path: tuple[Any, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    key = tuple(str(p) for p in path)
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return None
