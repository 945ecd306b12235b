"""A function's ``options`` against its template's option schema (``options:`` in template.yml).

``options`` is free-form in stack.yml's own schema because each template reads its own; the
template declares which keys it takes. Checking here - when stack.yml is parsed (``hydro deploy``,
``build``, ``render``, ``run``) and when the gateway accepts a deployment - turns a misspelt option
into a 400 naming ``functions.<fn>.options.<key>`` before anything starts, instead of a failed cold
start. A ``lang`` this machine has no template for is left to the machine that has it (a remote
gateway with its own ``HYDRO_TEMPLATES``, or a prebuilt image).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydro_serving.errors import NotFound
from hydro_serving.stack.model import FunctionSpec
from hydro_serving.stack.schema import Errors, raise_first
from hydro_serving.templates import get_template


def option_errors(spec: FunctionSpec) -> Errors:
    """What is wrong with ``spec.options`` for its template, deepest key first (empty when all is well)."""
    try:
        template = get_template(spec.lang)
    except NotFound:
        return []
    return list(template.option_errors(spec.options))


def check_options(spec: FunctionSpec, lines: Mapping[tuple[str, ...], int] | None = None) -> None:
    """Raise a :class:`StackError` (400) naming ``functions.<fn>.options.<key>`` for the first bad option."""
    errors: list[tuple[tuple[Any, ...], str]] = option_errors(spec)
    raise_first(errors, ("functions", spec.name, "options"), dict(lines or {}))
