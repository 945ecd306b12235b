"""What a caller may see of a failure: 5xx bodies name the function and the request id, not the cause.

A replica's crash cause, a configuration error, an exception's text are internals ("ConfigError:
options.method: ..." must not reach an anonymous caller); they are logged once, with the request id,
and the caller gets a body it can quote. A caller with the gateway's internal credentials (the operator,
a router) gets the full message too, since it can read the log anyway.

Messages the gateway composes without internals (not ready within the cold start timeout, shutting
down, a deadline) stay as they are; only the classes below are generalised.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from aiohttp import web

from hydro_serving.errors import HydroError, InsufficientStorage, StoreError, UpstreamError
from hydro_serving.gateway.callers import is_internal_caller
from hydro_serving.gateway.requestid import request_id

log = logging.getLogger("hydro.gateway")

_PUBLIC = {
    StoreError: "the model store is unavailable",
    UpstreamError: "failed while serving the request",  # also a replica that failed to start
}


def for_caller(request: web.Request, error: BaseException, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """The body of a 5xx for this caller; logs the full cause once (with the request id)."""
    rid = request_id(request)
    if status < 500:
        return body
    body = {**body, "request_id": rid}
    if isinstance(error, HydroError):  # anything else was logged with its traceback by the error middleware
        log.warning("request %s: %s %s -> %d %s", rid, request.method, request.path, status, error.message)
    if (isinstance(error, HydroError) and not _internal(error)) or is_internal_caller(request):
        return body
    what = next((text for cls, text in _PUBLIC.items() if isinstance(error, cls)), "failed")
    function = body.get("function")
    subject = f"function '{function}'" if function else "the gateway"
    public: dict[str, Any] = {"error": f"{subject} {what} (request id {rid}; the cause is in the gateway's log)",
                              "code": body.get("code", "internal_error"), "request_id": rid}
    if function:
        public["function"] = function
    return public


def _internal(error: HydroError) -> bool:
    return isinstance(error, (StoreError, UpstreamError)) or type(error) is HydroError or error.status == 500


def disk_full(exc: BaseException) -> InsufficientStorage | None:
    """An ``ENOSPC`` from any write (state database, spec files, logs) as a clear 507, else None."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return InsufficientStorage("the gateway's state directory is full (no space left on its disk); free space "
                                   "and retry", field="state")
    return None
