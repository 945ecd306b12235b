"""The python3 template: the runtime calls the user's ``handle(payload, context)`` from ``<handler>/handler.py``.

As in OpenFaaS's python3-http template, the template owns this module and the user owns
``handler.py``; the handler folder goes on ``sys.path`` so the user's own modules import
normally. An optional ``load(context)`` in handler.py runs once before the function is ready
(open a model, warm a cache); ``handle`` may take ``(payload)`` or ``(payload, context)``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from hydro_serving.errors import ConfigError
from hydro_serving.sdk import FunctionHandler, InvocationContext, LoadContext

USER_MODULE = "handler"


class Function(FunctionHandler):
    """Adapts the user's module to the runtime's function interface."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._wants_context = True

    def load(self, model_dir: Path | None, context: LoadContext) -> None:
        folder = context.handler_dir
        if folder is None or not (folder / f"{USER_MODULE}.py").is_file():
            raise ConfigError(f"function '{context.spec.name}': no {USER_MODULE}.py in {folder}", field="handler",
                              function=context.spec.name)
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        sys.modules.pop(USER_MODULE, None)  # a stale module of that name must not shadow the user's file
        module = importlib.import_module(USER_MODULE)
        handle = getattr(module, "handle", None)
        if not callable(handle):
            raise ConfigError(f"function '{context.spec.name}': {folder / 'handler.py'} must define "
                              f"handle(payload, context)", field="handler", function=context.spec.name)
        hook = getattr(module, "load", None)
        if callable(hook):
            hook(context)
        self._handle = handle
        self._wants_context = _takes_two_arguments(handle)

    def handle(self, payload: Any, context: InvocationContext) -> Any:
        if self._wants_context:
            return self._handle(payload, context)
        return self._handle(payload)


def _takes_two_arguments(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
