"""The custom-function contract: ``handle(payload, context)``, for ``kind: function`` and ``kind: router``.

Custom code and the router need more than the payload (headers, the raw body, the deadline, the
response's headers and status), so they get the :class:`InvocationContext`. A user's ``handler.py``
for the python3 template only defines ``handle``; a template class subclasses :class:`FunctionHandler`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.sdk.context import InvocationContext, LoadContext


class FunctionHandler:
    """Base class of a function template's handler: ``load`` once, ``handle`` per request, ``close`` at exit.

    ``handle`` may return JSON-able data, ``str``, ``bytes`` or a :class:`RawResponse`; it raises
    :class:`hydro_serving.errors.ValidationError` for a caller's mistake.
    """

    signature: Signature | None = None  # what the function reports it takes and answers (V2 metadata)

    def load(self, model_dir: Path | None, context: LoadContext) -> None:
        """Prepare once before the function is ready (open files, build clients); by default nothing."""

    def handle(self, payload: Any, context: InvocationContext) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement handle(payload, context)")

    def close(self) -> None:
        """Stop background work when the replica exits; by default nothing."""
