"""A replica's hot path: ``POST /`` answered in plain WSGI, without Flask's request machinery.

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

A router's ``POST /`` has its own front (:class:`RouterFastPath`, issue 18 point 3): the same rules
plus what a router reads from its :class:`~hydro_serving.sdk.InvocationContext` (the request's
headers as werkzeug names them, the raw body, the deadline) and what it writes back (its response
headers and status). The router runs inline in the server's thread (its stage calls are bounded by
the request's deadline), so a pipeline request costs no Flask and no thread hand-off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from hydro_serving import telemetry
from hydro_serving.errors import HydroError, PayloadTooLarge, http_error
from hydro_serving.runtime.codec import dump_json, is_json_mimetype, parse_json, render_result
from hydro_serving.runtime.service import FunctionRuntime
from hydro_serving.sdk.context import InvocationContext

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


class FastPath:
    """WSGI middleware in front of a replica's Flask app (``app.wsgi_app``): one route, the rest to Flask.

    A subclass says which requests it takes (``_takes``) and how it answers them (``_answer``);
    errors, ``Content-Length``, metrics and the hand-off to Flask are this class's, once.
    """

    def __init__(self, flask_wsgi: WSGIApp, runtime: FunctionRuntime) -> None:
        self.flask_wsgi = flask_wsgi
        self.runtime = runtime

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
                log.error("function '%s': unexpected error on POST %s", runtime.spec.name,
                          environ.get("PATH_INFO", "/"), exc_info=exc)
            status, body, extra = http_error(exc)
            data = dump_json(body, "runtime")
            headers = [*extra.items(), ("Content-Type", "application/json")]
        headers.append(("Content-Length", str(len(data))))
        start_response(_status_line(status), headers)
        runtime.metrics.observe("/", status, time.perf_counter() - started)
        return [data]

    def _takes(self, environ: dict[str, Any]) -> bool:
        raise NotImplementedError

    @staticmethod
    def _answer(runtime: FunctionRuntime, environ: dict[str, Any],
                length: int) -> tuple[int, list[tuple[str, str]], bytes]:
        raise NotImplementedError


class ModelFastPath(FastPath):
    """A model's ``POST /``: JSON rows in, ``predict`` inline, JSON out."""

    def _takes(self, environ: dict[str, Any]) -> bool:
        return (environ.get("PATH_INFO") == "/" and environ.get("REQUEST_METHOD") == "POST"
                and bool(environ.get("CONTENT_LENGTH")) and self.runtime.loader.loaded is not None
                and is_json_mimetype(environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower())
                and not telemetry.enabled())

    @staticmethod
    def _answer(runtime: FunctionRuntime, environ: dict[str, Any],
                length: int) -> tuple[int, list[tuple[str, str]], bytes]:
        body = _read(runtime, environ, length)
        result = runtime.invoke(parse_json(body), None)
        data, status, content_type, extra = render_result(result, runtime.spec.name)
        return status, [*extra.items(), ("Content-Type", content_type)], data


class RouterFastPath(FastPath):
    """WSGI middleware in front of a router replica's Flask app: a pipeline's ``POST /`` without Flask.

    What Flask's ``_serve`` does for a router, step for step: the body limit (413), the JSON body
    parsed (400 naming ``$``; an empty body is ``None``), an :class:`InvocationContext` with the
    headers named as werkzeug names them (``X-Request-Id``, ``Traceparent``), the raw body and the
    runtime's deadline, the handler's status and response headers merged into the answer. It takes
    only ``POST /`` without a query string (a sub-path or a query goes to Flask, which hands the
    handler ``path`` and ``query``); trace export does not matter here, since a router records its
    own spans.
    """

    def _takes(self, environ: dict[str, Any]) -> bool:
        return (environ.get("PATH_INFO") == "/" and environ.get("REQUEST_METHOD") == "POST"
                and bool(environ.get("CONTENT_LENGTH")) and not environ.get("QUERY_STRING")
                and self.runtime.loader.loaded is not None
                and is_json_mimetype(environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()))

    @staticmethod
    def _answer(runtime: FunctionRuntime, environ: dict[str, Any],
                length: int) -> tuple[int, list[tuple[str, str]], bytes]:
        body = _read(runtime, environ, length)
        payload = parse_json(body) if body else None  # codec.parse_invoke_body for a JSON body, raw-accepting kind
        context = InvocationContext(spec=runtime.spec, headers=request_headers(environ), body=body, query={},
                                    path="/", method="POST", deadline=time.monotonic() + runtime.config.timeout)
        result = runtime.invoke(payload, context)
        data, status, content_type, extra = render_result(result, runtime.spec.name)
        if status == 200 and context.status != 200:
            status = context.status
        return status, _merged(context.response_headers, extra, content_type), data


def _read(runtime: FunctionRuntime, environ: dict[str, Any], length: int) -> bytes:
    """The body of a declared length, refused (413) past the limit before a byte is read."""
    limit = runtime.config.max_body_bytes
    if length > limit:
        raise PayloadTooLarge(f"the request body has {length} bytes, more than the limit of {limit} "
                              f"(HYDRO_MAX_BODY_BYTES)")
    return environ["wsgi.input"].read(length) if length > 0 else b""


def request_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The request's headers as ``dict(werkzeug.EnvironHeaders(environ))`` names them (``X-Request-Id``)."""
    out = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            if key != "HTTP_CONTENT_TYPE" and key != "HTTP_CONTENT_LENGTH":
                out[key[5:].replace("_", "-").title()] = value
        elif (key == "CONTENT_TYPE" or key == "CONTENT_LENGTH") and value:
            out[key.replace("_", "-").title()] = value
    return out


def _merged(context_headers: MutableMapping[str, str], extra: dict[str, str],
            content_type: str) -> list[tuple[str, str]]:
    """``Response(headers={**context_headers, **extra}, content_type=...)``: the content type set last, once."""
    merged = {**context_headers, **extra} if context_headers else extra
    headers = [(k, v) for k, v in merged.items() if k.lower() != "content-type"]
    headers.append(("Content-Type", content_type))
    return headers


FAST_PATHS: dict[str, type[FastPath]] = {"model": ModelFastPath, "router": RouterFastPath}
