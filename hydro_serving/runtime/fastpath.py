"""The model replica's hot path: ``POST /`` answered in plain WSGI, without Flask's request machinery.

Why: profiling an iris-sized request (issue 18, BENCHMARKS.md "Runtime request path") showed Flask
itself - its request context push/pop, URL adapter, ``before``/``after_request`` hooks, ``g`` and the
``Response`` object - costing about as much as everything the platform adds, so a replica was slower
than a hand-written Flask app that skips our checks. This front answers the one route that carries
the load with the same rules (body limit, JSON parsing, signature validation, in-flight cap, timeout,
batching, metrics, one error mapping) and hands every other request, unchanged, to the Flask app.

It only serves a request when nothing else could need Flask: a model template (no raw bodies, no
sub-paths, no context for the handler), a loaded model, a JSON content type, a declared
``Content-Length`` and no trace export (the replica's span lives in the Flask path). Anything else -
a chunked body, a ``text/plain`` body (415), a replica still loading (503), a method other than POST
(405) - goes through Flask, whose answers are the reference.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from hydro_serving import telemetry
from hydro_serving.errors import HydroError, PayloadTooLarge, http_error
from hydro_serving.runtime.codec import dump_json, is_json_mimetype, parse_json, render_result
from hydro_serving.runtime.service import FunctionRuntime

log = logging.getLogger("hydro.runtime")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_REASONS = {200: "OK"}


def _status_line(status: int) -> str:
    reason = _REASONS.get(status)
    if reason is None:
        from http import HTTPStatus

        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        _REASONS[status] = reason
    return f"{status} {reason}"


class ModelFastPath:
    """WSGI middleware in front of a model replica's Flask app (``app.wsgi_app``)."""

    def __init__(self, flask_wsgi: WSGIApp, runtime: FunctionRuntime) -> None:
        self.flask_wsgi = flask_wsgi
        self.runtime = runtime

    def _takes(self, environ: dict[str, Any]) -> bool:
        return (environ.get("PATH_INFO") == "/" and environ.get("REQUEST_METHOD") == "POST"
                and bool(environ.get("CONTENT_LENGTH")) and self.runtime.loader.loaded is not None
                and is_json_mimetype(environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower())
                and not telemetry.enabled())

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self._takes(environ):
            return self.flask_wsgi(environ, start_response)
        started = time.perf_counter()
        runtime = self.runtime
        try:
            length = int(environ["CONTENT_LENGTH"])
        except ValueError:  # werkzeug's answer (400) is the reference for a malformed header
            return self.flask_wsgi(environ, start_response)
        try:
            status, headers, data = self._answer(runtime, environ, length)
        except Exception as exc:
            if not isinstance(exc, HydroError):
                log.error("function '%s': unexpected error on POST /", runtime.spec.name, exc_info=exc)
            status, body, extra = http_error(exc)
            data = dump_json(body, "runtime")
            headers = [*extra.items(), ("Content-Type", "application/json")]
        headers.append(("Content-Length", str(len(data))))
        start_response(_status_line(status), headers)
        runtime.metrics.observe("/", status, time.perf_counter() - started)
        return [data]

    @staticmethod
    def _answer(runtime: FunctionRuntime, environ: dict[str, Any],
                length: int) -> tuple[int, list[tuple[str, str]], bytes]:
        limit = runtime.config.max_body_bytes
        if length > limit:
            raise PayloadTooLarge(f"the request body has {length} bytes, more than the limit of {limit} "
                                  f"(HYDRO_MAX_BODY_BYTES)")
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        result = runtime.invoke(parse_json(body), None)
        data, status, content_type, extra = render_result(result, runtime.spec.name)
        return status, [*extra.items(), ("Content-Type", content_type)], data
