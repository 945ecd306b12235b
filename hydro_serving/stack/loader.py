"""Reading stack.yml: variable substitution, JSON Schema validation with key paths and lines, typing.

Errors are :class:`StackError` whose ``field`` is the dotted key path (``functions.web.scale.min``)
and whose message ends with the line number, so users can jump straight to the mistake.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hydro_serving.errors import StackError
from hydro_serving.stack.model import Provider, Stack, build_function, function_from_dict
from hydro_serving.stack.options import check_options
from hydro_serving.stack.schema import raise_first, schema_errors, stack_schema

__all__ = ["function_from_dict", "load_stack", "parse_stack", "stack_schema", "substitute"]

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


# ---- variable substitution -----------------------------------------------------------------------


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (``${VAR-default}`` too); ``$$`` is a literal ``$``.

    An unset variable without a default is an error naming the variable and its line: silently
    substituting "" would deploy a function with an empty image or endpoint.
    """

    def expand(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        if value is None:
            line = text.count("\n", 0, match.start()) + 1
            raise StackError(
                f"environment variable {name} is not set (line {line}); set it or write ${{{name}:-default}}",
                field=f"${{{name}}}", details={"line": line},
            )
        return value

    return _VAR.sub(expand, text)


# ---- YAML with line numbers --------------------------------------------------------------------


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path to the 1-based line where its value (or key) starts."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    index: dict[tuple[str, ...], int] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*path, str(key_node.value))
                index[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = (*path, str(i))
                index[child] = item.start_mark.line + 1
                walk(item, child)

    if root is not None:
        walk(root, ())
    return index


def parse_stack(text: str, path: Path | str = "stack.yml", env: Mapping[str, str] | None = None) -> Stack:
    """Parse stack.yml text: substitute variables, validate, type. Raises StackError."""
    path = Path(path)
    text = substitute(text, os.environ if env is None else env)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackError(f"{path.name} is not valid YAML: {problem}" + (f" (line {line})" if line else ""),
                         field="(yaml)", details={"line": line} if line else None) from None
    if data is None:
        raise StackError(f"{path.name} is empty", field="(top level)")
    lines = _line_index(text)
    raise_first(schema_errors(data, None), (), lines)
    provider_raw = data.get("provider") or {"name": "hydro"}
    provider = Provider(
        name=provider_raw["name"],
        gateway=provider_raw.get("gateway"),
        network=provider_raw.get("network"),
        store=provider_raw.get("store"),
        trusted_keys=tuple(k if k.startswith("ed25519:") else str((path.parent / k).expanduser())
                           for k in provider_raw.get("trusted_keys") or ()),
    )
    functions = {
        name: build_function(name, raw, ("functions", name), lines) for name, raw in data["functions"].items()
    }
    for fn in functions.values():
        check_options(fn, lines)
        for i, stage in enumerate(fn.chain):
            for target in [*stage.functions, *stage.shadow]:
                if target not in functions:
                    raise_first([((), f"stage {i + 1} of '{fn.name}' names '{target}', which is not a function "
                                       f"in this stack")], ("functions", fn.name, "chain", str(i)), lines)
    return Stack(path=path, version=str(data.get("version", "1.0")), provider=provider, functions=functions)


def load_stack(path: Path | str = "stack.yml", env: Mapping[str, str] | None = None) -> Stack:
    """Read and parse a stack file; a missing file is a StackError with a hint."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StackError(f"no stack file at {path}; create one with 'hydro new NAME --lang TEMPLATE'",
                         field="(file)") from None
    except OSError as exc:
        raise StackError(f"cannot read {path}: {exc.strerror}", field="(file)") from None
    return parse_stack(text, path.resolve(), env)
