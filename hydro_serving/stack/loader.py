"""Reading stack.yml: variable substitution, JSON Schema validation with key paths and lines, typing.

Errors are :class:`StackError` whose ``field`` is the dotted key path (``functions.web.scale.min``)
and whose message ends with the line number, so users can jump straight to the mistake.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hydro_serving.contract import ContractError, Signature
from hydro_serving.errors import StackError, ValidationError
from hydro_serving.stack.model import (
    DEFAULT_IDLE_SECONDS,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT_SECONDS,
    DNS_LABEL,
    Batching,
    FunctionSpec,
    Provider,
    Rate,
    Scale,
    Stack,
    Stage,
    parse_duration,
    parse_size,
)

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


def _dotted(path: tuple[Any, ...]) -> str:
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


def _schema_errors(data: Any, ref: str | None) -> list[tuple[tuple[Any, ...], str]]:
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
        return f"has an invalid value {json.dumps(err.instance)[:60]}"
    return err.message


def _raise_first(errors: list[tuple[tuple[Any, ...], str]], prefix: tuple[str, ...],
                 lines: dict[tuple[str, ...], int]) -> None:
    if not errors:
        return
    path, message = errors[0]
    full = (*prefix, *path)
    line = _line_for(full, lines)
    where = _dotted(full)
    suffix = f" (line {line})" if line else ""
    raise StackError(f"{where}: {message}{suffix}", field=where, details={"line": line} if line else None)


def _line_for(path: tuple[Any, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    key = tuple(str(p) for p in path)
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return None


# ---- building typed objects ------------------------------------------------------------------


def _strings(mapping: Mapping[str, Any] | None) -> dict[str, str]:
    out = {}
    for key, value in (mapping or {}).items():
        out[str(key)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _build_function(name: str, raw: Mapping[str, Any], prefix: tuple[str, ...],
                    lines: dict[tuple[str, ...], int]) -> FunctionSpec:
    def fail(sub: tuple[str, ...], message: str) -> None:
        _raise_first([(sub, message)], prefix, lines)

    if not DNS_LABEL.match(name):
        _raise_first([((), f"function name '{name}' must be a DNS label: lowercase letters, digits and '-', "
                            "starting and ending with a letter or digit, at most 63 characters")], prefix, lines)
    scale_raw = raw.get("scale") or {}
    scale = Scale(
        min=scale_raw.get("min", 0),
        max=scale_raw.get("max", max(4, scale_raw.get("min", 0))),
        idle=parse_duration(scale_raw.get("idle", DEFAULT_IDLE_SECONDS)),
        concurrency=scale_raw.get("concurrency", 8),
        queue=scale_raw.get("queue", DEFAULT_QUEUE),
    )
    if scale.max < scale.min:
        fail(("scale", "max"), f"scale.max ({scale.max}) must be at least scale.min ({scale.min})")
    limits = _strings(raw.get("limits"))
    if "body" in limits:
        try:
            limits["body"] = str(parse_size(limits["body"]))
        except ValueError:
            fail(("limits", "body"), f"must be a size such as 10Mi or 1048576, got {limits['body']!r}")
    rate = None
    if raw.get("rate") is not None:
        rate_raw = raw["rate"]
        rps = float(rate_raw["rps"])
        rate = Rate(rps=rps, burst=int(rate_raw.get("burst", max(1, math.ceil(rps)))),
                    per=rate_raw.get("per", "key"))
    signature = None
    if raw.get("signature") is not None:
        try:
            signature = Signature.from_dict(raw["signature"])
        except (ContractError, ValidationError) as exc:
            sub = tuple(exc.field.replace("[", ".").replace("]", "").split(".")) if exc.field else ("signature",)
            fail(sub, exc.message)
    chain: tuple[Stage, ...] = ()
    if raw.get("chain") is not None:
        if raw["lang"] != "router":
            fail(("chain",), "chain is only allowed on functions with lang: router")
        stages = []
        for i, stage_raw in enumerate(raw["chain"]):
            stage = Stage.from_raw(stage_raw)
            if stage.is_experiment or (isinstance(stage_raw, Mapping) and "variants" in stage_raw):
                total = sum(w for _, w in stage.variants)
                if total != 100:
                    fail(("chain", str(i), "variants"), f"variant weights must sum to 100, they sum to {total}")
            for fn in [*stage.functions, *stage.shadow]:
                if not DNS_LABEL.match(fn):
                    fail(("chain", str(i)), f"'{fn}' is not a valid function name")
                if fn == name:
                    fail(("chain", str(i)), f"router '{name}' cannot call itself")
            stages.append(stage)
        chain = tuple(stages)
    elif raw["lang"] == "router":
        fail(("lang",), "a function with lang: router needs a chain")
    batching_raw = raw.get("batching") or {}
    return FunctionSpec(
        name=name,
        lang=raw["lang"],
        handler=raw.get("handler"),
        image=raw.get("image"),
        environment=_strings(raw.get("environment")),
        environment_file=tuple(raw.get("environment_file") or ()),
        secrets=tuple(raw.get("secrets") or ()),
        labels=_strings(raw.get("labels")),
        annotations=_strings(raw.get("annotations")),
        limits=limits,
        requests=_strings(raw.get("requests")),
        build_args=_strings(raw.get("build_args")),
        build_options=tuple(raw.get("build_options") or ()),
        skip_build=bool(raw.get("skip_build", False)),
        namespace=raw.get("namespace"),
        constraints=tuple(raw.get("constraints") or ()),
        readonly_root_filesystem=bool(raw.get("readonly_root_filesystem", False)),
        model=raw.get("model"),
        scale=scale,
        rate=rate,
        timeout=parse_duration(raw.get("timeout", DEFAULT_TIMEOUT_SECONDS)),
        batching=Batching(
            max_batch_size=batching_raw.get("max_batch_size", 1),
            max_batch_delay_ms=float(batching_raw.get("max_batch_delay_ms", 2.0 if batching_raw else 0.0)),
        ),
        options=dict(raw.get("options") or {}),
        signature=signature,
        chain=chain,
    )


def function_from_dict(data: Any, where: str = "function") -> FunctionSpec:
    """Validate one function's canonical JSON (as the gateway receives it) and build it."""
    if not isinstance(data, Mapping):
        raise StackError(f"{where} must be a JSON object", field=where)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise StackError("name is required and must be a string", field="name")
    body = {k: v for k, v in data.items() if k != "name"}
    _raise_first(_schema_errors(body, "#/$defs/function"), (), {})
    return _build_function(name, body, (), {})


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
    _raise_first(_schema_errors(data, None), (), lines)
    provider_raw = data.get("provider") or {"name": "hydro"}
    provider = Provider(
        name=provider_raw["name"],
        gateway=provider_raw.get("gateway"),
        network=provider_raw.get("network"),
        store=provider_raw.get("store"),
    )
    functions = {
        name: _build_function(name, raw, ("functions", name), lines) for name, raw in data["functions"].items()
    }
    for fn in functions.values():
        for i, stage in enumerate(fn.chain):
            for target in [*stage.functions, *stage.shadow]:
                if target not in functions:
                    _raise_first([((), f"stage {i + 1} of '{fn.name}' names '{target}', which is not a function "
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
