"""``hydro new``: a function folder from a template, and its entry added to stack.yml as text.

stack.yml is edited as text, not re-dumped from parsed YAML, because a round trip through PyYAML
drops every comment and reorders keys: the user's file must come back as they wrote it plus one
function. The new entry is inserted where the ``functions:`` mapping ends (found with
``yaml.compose``, which knows node positions), indented like its siblings, and the result is
parsed again before it is written; if that fails, the file is left untouched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from hydro_serving.builder.scope import copy_in_scope
from hydro_serving.errors import Conflict, StackError, ValidationError
from hydro_serving.stack.loader import parse_stack
from hydro_serving.stack.model import DNS_LABEL
from hydro_serving.templates import Template, get_template

NEW_STACK = """\
version: 1.0
provider:
  name: hydro
  gateway: ${HYDRO_GATEWAY:-http://127.0.0.1:8080}
functions:
"""

PYTHON_HANDLER = '''\
"""{name}: a Hydro Serving function.

The runtime calls ``handle`` once per request with the decoded JSON body; whatever it returns
(anything JSON-serialisable) is the response. Raise hydro_serving.errors.ValidationError for a
caller's mistake: it becomes a 400 naming the field; any other exception is a 500.
"""

from typing import Any


def handle(payload: Any, context: Any) -> Any:
    """Echo the request; replace with your logic (``context.spec.options`` holds stack.yml options)."""
    return {{"echo": payload}}
'''


@dataclass(frozen=True)
class Scaffolded:
    """What ``hydro new`` did, for the CLI to report."""

    stack_file: Path
    folder: Path
    created_stack: bool
    entry: str


def new_function(name: str, lang: str, stack_file: Path) -> Scaffolded:
    """Create ``<stack dir>/<name>/`` from template ``lang`` and append the function to ``stack_file``."""
    if not DNS_LABEL.match(name):
        raise ValidationError(f"function name '{name}' must be a DNS label: lowercase letters, digits and '-', "
                              "starting and ending with a letter or digit, at most 63 characters", field="name")
    template = get_template(lang)
    stack_file = Path(stack_file)
    original = stack_file.read_text() if stack_file.exists() else None
    existing = _existing_functions(original, stack_file) if original is not None else []
    if name in existing:
        raise Conflict(f"function '{name}' already exists in {stack_file}", field=f"functions.{name}", function=name)
    if template.kind == "router" and not existing:
        raise ValidationError("a router chains functions: create the functions first, then 'hydro new NAME "
                              "--lang router' chains them in file order", field="lang")
    root = stack_file.resolve().parent
    folder = root / name
    if folder.exists():
        raise Conflict(f"{folder} already exists; choose another name or remove the folder", field="name",
                       function=name)

    unit = _indent_unit(original) if original is not None else 2
    entry = _entry(name, template, existing, unit)
    text = NEW_STACK + _indent(entry, 2) if original is None else _insert_function(original, entry, stack_file)
    try:
        parse_stack(text, stack_file, env={**os.environ, "HYDRO_GATEWAY": os.environ.get("HYDRO_GATEWAY", "x")})
    except StackError as exc:
        if original is None or _parses(original, stack_file):
            raise StackError(f"adding '{name}' would make {stack_file.name} invalid ({exc.message}); "
                             "it was left unchanged", field=exc.field) from None
        # the file was already invalid (e.g. an unset ${VAR}); our append does not make it worse
    if template.kind != "router":
        _make_folder(folder, template, name)
    stack_file.parent.mkdir(parents=True, exist_ok=True)
    stack_file.write_text(text)
    return Scaffolded(stack_file=stack_file, folder=folder, created_stack=original is None, entry=entry)


def _parses(text: str, path: Path) -> bool:
    try:
        parse_stack(text, path)
    except StackError:
        return False
    return True


def _existing_functions(text: str, path: Path) -> list[str]:
    """Function names in file order, from the raw YAML (``${VAR}`` left as text, so unset vars do not matter)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StackError(f"{path.name} is not valid YAML, fix it before adding a function: {exc}",
                         field="(yaml)") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise StackError(f"{path.name} must be a mapping with a 'functions' key", field="(top level)")
    functions = data.get("functions") or {}
    if not isinstance(functions, dict):
        raise StackError(f"{path.name}: functions must be a mapping", field="functions")
    return [str(k) for k in functions]


def _entry(name: str, template: Template, existing: list[str], unit: int = 2) -> str:
    """The YAML lines of the new function at indentation 0, nested by ``unit`` spaces like the user's file."""
    lines: list[tuple[int, str]] = [(0, f"{name}:"), (1, f"lang: {template.name}")]
    if template.kind == "function":
        lines.append((1, f"handler: ./{name}"))
    elif template.kind == "model":
        pattern = template.model_patterns[0] if template.model_patterns else "model.*"
        # a pattern without wildcards names a file inside a model *folder* (Spark's _SUCCESS marker)
        has_wildcard = "*" in pattern or "?" in pattern
        filename = pattern.replace("*", "model").replace("?", "x") if has_wildcard else "model"
        lines.append((1, f"# the trained model: a file in ./{name}/ while developing, or a store reference"))
        lines.append((1, "# name[:version|alias] once uploaded with 'hydro model upload'"))
        lines.append((1, f"model: ./{name}/{filename}"))
    else:
        lines.append((1, "# stages run in this order; edit the list (see the chain syntax in the README)"))
        lines.append((1, "chain:"))
        lines.extend((2, f"- {fn}") for fn in existing)
    lines.append((1, f"image: hydro/{name}:latest"))
    return "".join(" " * (unit * level) + text + "\n" for level, text in lines)


def _indent_unit(text: str) -> int:
    """How far the user nests a function's keys under its name (2 unless their file says otherwise)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 2
    if not isinstance(root, yaml.MappingNode):
        return 2
    for key, value in root.value:
        if key.value == "functions" and isinstance(value, yaml.MappingNode):
            for fn_key, fn_value in value.value:
                if isinstance(fn_value, yaml.MappingNode) and fn_value.value and not fn_value.flow_style:
                    unit = fn_value.value[0][0].start_mark.column - fn_key.start_mark.column
                    if unit > 0:
                        return unit
    return 2


def _indent(entry: str, by: int) -> str:
    pad = " " * by
    return "".join(pad + line if line.strip() else line for line in entry.splitlines(keepends=True))


def _insert_function(text: str, entry: str, path: Path) -> str:
    """``text`` with ``entry`` added at the end of the ``functions`` mapping, everything else untouched."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return text.rstrip("\n") + ("\n" if text.strip() else "") + "functions:\n" + _indent(entry, 2)
    assert isinstance(root, yaml.MappingNode)
    for key, value in root.value:
        if key.value != "functions":
            continue
        if isinstance(value, yaml.MappingNode) and value.value and not value.flow_style:
            indent = value.value[0][0].start_mark.column
            pos = value.end_mark.index
            if value.end_mark.column != 0:  # mapping ends mid-line (end of file without newline)
                newline = text.find("\n", pos)
                pos = len(text) if newline < 0 else newline + 1
            head = text[:pos]
            if not head.endswith("\n"):
                head += "\n"
            return head + _indent(entry, indent) + text[pos:]
        # empty (null) or flow-style functions: rewrite just that value as a block mapping
        start, end = key.start_mark.index, value.end_mark.index
        if isinstance(value, yaml.MappingNode) and value.value:
            raise StackError(f"{path.name}: functions is written in flow style ({{...}}); add '{entry.split(':')[0]}' "
                             "by hand or use block style", field="functions")
        rest = text[end:]
        line_end = rest.find("\n")
        tail = rest[line_end + 1:] if line_end >= 0 else ""
        return text[:start] + "functions:\n" + _indent(entry, 2) + tail
    return text.rstrip("\n") + "\nfunctions:\n" + _indent(entry, 2)


def _make_folder(folder: Path, template: Template, name: str) -> None:
    """The function's folder: the template's ``function/`` skeleton when it ships one, else our default."""
    skeleton = template.path / "function"
    if skeleton.is_dir():
        copy_in_scope(skeleton, folder, template.path, field="template")
    else:
        folder.mkdir(parents=True)
    if template.kind == "function":
        if not (folder / "handler.py").exists():
            (folder / "handler.py").write_text(PYTHON_HANDLER.format(name=name))
        if not (folder / "requirements.txt").exists():
            (folder / "requirements.txt").write_text("")
