"""The Flask app of a function replica: invoke, health, readiness, metrics and the V2 subset.

Routes only translate HTTP: bodies are parsed by :mod:`codec`, the work and its limits live in
:class:`~hydro_serving.runtime.service.FunctionRuntime`, and every exception - ours, werkzeug's,
or a handler's - becomes JSON in the one error handler through :func:`hydro_serving.errors.http_error`.
The handlers are module-level functions that find the app's runtime in ``current_app.extensions``;
:func:`create_app` only builds the runtime and registers them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from hydro_serving import __version__, telemetry
from hydro_serving.contract.dtypes import to_v2_datatype
from hydro_serving.errors import (
    BadRequest,
    HydroError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    http_error,
)
from hydro_serving.runtime.adapters import adapter_class
from hydro_serving.runtime.codec import dump_json, json_in_form, parse_invoke_body, parse_json, render_result
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.runtime.fastpath import FAST_PATHS
from hydro_serving.runtime.loader import Preloaded
from hydro_serving.runtime.metrics import RuntimeMetrics
from hydro_serving.runtime.service import FunctionRuntime, WorkerBarrier
from hydro_serving.stack.model import FunctionSpec
from hydro_serving.templates import Template, get_template

log = logging.getLogger("hydro.runtime")

ROUTES_HELP = "POST /, GET /_/health, GET /_/ready, GET /metrics, /v2/health/*, /v2/models/<name>[/ready|/infer]"
CUSTOM_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
READY_WAIT_MAX = 10.0  # seconds a /_/ready?wait= may hold one of the worker's threads


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dump_json(body, "runtime"), status=status, headers=headers or {}, mimetype="application/json")


def _from_werkzeug(exc: HTTPException, max_body: int) -> HydroError:
    """werkzeug's routing and body-size errors, in our hierarchy and our words."""
    if exc.code == 404:
        return NotFound(f"no endpoint {request.method} {request.path} (endpoints: {ROUTES_HELP})")
    if exc.code == 405:
        allowed = exc.get_response().headers.get("Allow", "")
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path} (allowed: {allowed})",
                                headers={"Allow": allowed} if allowed else None)
    if exc.code == 413:
        return PayloadTooLarge(f"the request body is larger than {max_body} bytes (HYDRO_MAX_BODY_BYTES)")
    if exc.code == 400:
        return BadRequest(exc.description or "bad request")
    return HydroError(exc.description or exc.name, status=exc.code or 500)


def _wait_seconds(raw: str | None) -> float:
    """The ``wait`` query parameter of /_/ready, bounded; a value that is not a number is the caller's 400."""
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"wait must be a number of seconds, got {raw!r}", field="wait") from None
    if value != value:  # NaN
        raise BadRequest("wait must be a number of seconds, got NaN", field="wait")
    return max(0.0, min(value, READY_WAIT_MAX))


def create_app(spec: FunctionSpec, config: RuntimeConfig | None = None, *, template: Template | None = None,
               exit_on_load_failure: bool = False, start_loading: bool = True,
               barrier: WorkerBarrier | None = None, preloaded: Preloaded | None = None) -> Flask:
    """Build the app for ``spec`` and (by default) start loading its handler in the background.

    The metrics registry, the executor and the loader are created here, per app, so nothing is
    shared between apps and nothing exists before a server asks for it.
    """
    config = config or RuntimeConfig.from_env(spec)
    template = template or get_template(spec.lang)
    metrics = RuntimeMetrics(spec.name)
    runtime = FunctionRuntime(spec, config, metrics, template, exit_on_load_failure=exit_on_load_failure,
                              barrier=barrier, preloaded=preloaded)
    app = Flask(f"hydro-{spec.name}")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["hydro_runtime"] = runtime
    app.before_request(_start_clock)
    app.after_request(_observe)
    app.register_error_handler(Exception, _error)
    if adapter_class(template).accepts_raw:  # custom functions and routers take any method and sub-path
        app.add_url_rule("/", "invoke", _invoke_any, methods=CUSTOM_METHODS, defaults={"subpath": ""})
        app.add_url_rule("/<path:subpath>", "invoke_any", _invoke_any, methods=CUSTOM_METHODS)
    else:
        app.add_url_rule("/", "invoke", _invoke, methods=["POST"])
    fast = FAST_PATHS.get(adapter_class(template).fast_path or "")
    if fast is not None:  # a model's or router's POST / skips Flask's request machinery (fastpath.py)
        app.wsgi_app = fast(app.wsgi_app, runtime)  # type: ignore[method-assign]
    for rule, view, methods in ROUTES:
        app.add_url_rule(rule, view.__name__.lstrip("_"), view, methods=methods)
    if start_loading:
        runtime.start()
    return app


def _runtime() -> FunctionRuntime:
    runtime: FunctionRuntime = current_app.extensions["hydro_runtime"]
    return runtime


# ---- around every request ------------------------------------------------------------------------


def _start_clock() -> None:
    g.hydro_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.get("hydro_started")
    rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
    if started is not None and rule != "/metrics":
        _runtime().metrics.observe(rule, response.status_code, time.perf_counter() - started)
    return response


def _error(exc: Exception) -> Response:
    runtime = _runtime()
    if isinstance(exc, HTTPException):
        exc = _from_werkzeug(exc, runtime.config.max_body_bytes)
    elif not isinstance(exc, HydroError):
        log.error("function '%s': unexpected error on %s %s", runtime.spec.name, request.method, request.path,
                  exc_info=exc)
    status, body, headers = http_error(exc)
    return _json(body, status, headers)


def _read_body(runtime: FunctionRuntime) -> bytes:
    limit = runtime.config.max_body_bytes
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the request body has {length} bytes, more than the limit of {limit} "
                              f"(HYDRO_MAX_BODY_BYTES)")
    return request.get_data(cache=False)


# ---- invoke ----------------------------------------------------------------------------------------


def _invoke_path(path: str) -> Response:
    runtime = _runtime()
    spec = runtime.spec
    if spec.is_router or not telemetry.enabled():  # a router exports its own spans (hydro_serving.router)
        return _serve(runtime, path)
    hop, status, loaded = telemetry.Hop.continuing(request.headers.get("traceparent")), 500, None
    try:  # the replica's span, child of the gateway's
        loaded = runtime.require_loaded()
        response = _serve(runtime, path)
        status = response.status_code
        return response
    except HydroError as exc:
        status = exc.status
        raise
    finally:
        hop.end(spec.name, f"{request.method} {path}", {
            "hydro.function": spec.name, "http.response.status_code": status, "hydro.lang": spec.lang,
            "hydro.model_version": telemetry.model_version(loaded.model_path if loaded else None, spec.model)},
            error=status >= 500)


def _serve(runtime: FunctionRuntime, path: str) -> Response:
    loaded = runtime.require_loaded()
    body = _read_body(runtime)
    payload = parse_invoke_body(body, request.mimetype, loaded.adapter.accepts_raw)
    context = runtime.context(request.headers, body, request.args, path, request.method)
    result = runtime.invoke(payload, context)
    data, status, content_type, headers = render_result(result, runtime.spec.name)
    if status == 200 and context.status != 200:
        status = context.status
    return Response(data, status=status, headers={**context.response_headers, **headers}, content_type=content_type)


def _invoke() -> Response:
    return _invoke_path("/")


def _invoke_any(subpath: str) -> Response:
    return _invoke_path("/" + subpath)


# ---- health, readiness, metrics --------------------------------------------------------------------


def _health() -> Response:
    runtime = _runtime()
    return _json({"status": "ok", "function": runtime.spec.name, "state": runtime.loader.state})


def _ready() -> Response:
    # ?wait=S (at most READY_WAIT_MAX): answer the moment the model is loaded instead of at the
    # supervisor's next poll, which after a few back-offs can be tens of ms late on a cold start
    runtime = _runtime()
    wait = _wait_seconds(request.args.get("wait"))
    if wait > 0:
        runtime.wait_ready(wait)
    return _json(runtime.readiness())


def _metrics() -> Response:
    metrics = _runtime().metrics
    return Response(metrics.render(), mimetype=metrics.content_type.split(";")[0],
                    headers={"Content-Type": metrics.content_type})


# ---- Open Inference Protocol (V2) ------------------------------------------------------------------


def _check_name(runtime: FunctionRuntime, name: str) -> None:
    if name != runtime.spec.name:
        raise NotFound(f"no model '{name}' here; this function serves '{runtime.spec.name}'", function=name)


def _tensors(fields: Any) -> list[dict[str, Any]]:
    return [{"name": f.name, "datatype": to_v2_datatype(f.dtype),
             "shape": list(f.shape) if f.shape is not None else [-1]} for f in fields]


def _v2_server() -> Response:
    return _json({"name": "hydro-serving", "version": __version__, "extensions": []})


def _v2_live() -> Response:
    return _json({"live": True})


def _v2_ready() -> Response:
    ready = _runtime().ready
    return _json({"ready": ready}, 200 if ready else 503)


def _v2_metadata(name: str) -> Response:
    runtime = _runtime()
    _check_name(runtime, name)
    signature = runtime.signature
    model = runtime.model_metadata()  # versions: the store version loaded; parameters: framework versions
    return _json({
        "name": runtime.spec.name, "versions": model["versions"], "platform": runtime.spec.lang,
        "inputs": _tensors(signature.inputs) if signature else [],
        "outputs": _tensors(signature.outputs) if signature else [],
        **({"parameters": model["parameters"]} if "parameters" in model else {}),
    })


def _v2_model_ready(name: str) -> Response:
    runtime = _runtime()
    _check_name(runtime, name)
    return _json({"name": name, "ready": runtime.ready}, 200 if runtime.ready else 503)


def _v2_infer(name: str) -> Response:
    runtime = _runtime()
    _check_name(runtime, name)
    runtime.require_loaded()
    body = _read_body(runtime)
    if request.mimetype not in ("", "application/json") and not json_in_form(body, request.mimetype):
        raise UnsupportedMediaType(f"Content-Type {request.mimetype} is not supported; V2 infer takes "
                                   "application/json", field="Content-Type")
    document = parse_json(body)
    context = runtime.context(request.headers, body, request.args, request.path, request.method)
    return _json(runtime.infer_v2(document, context))


ROUTES: tuple[tuple[str, Any, list[str]], ...] = (
    ("/_/health", _health, ["GET"]),
    ("/_/ready", _ready, ["GET"]),
    ("/metrics", _metrics, ["GET"]),
    ("/v2", _v2_server, ["GET"]),
    ("/v2/health/live", _v2_live, ["GET"]),
    ("/v2/health/ready", _v2_ready, ["GET"]),
    ("/v2/models/<name>", _v2_metadata, ["GET"]),
    ("/v2/models/<name>/ready", _v2_model_ready, ["GET"]),
    ("/v2/models/<name>/infer", _v2_infer, ["POST"]),
)
