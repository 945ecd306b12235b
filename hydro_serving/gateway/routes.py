"""The gateway's HTTP layer: route handlers, the one error middleware, admin checks and forwarding.

Handlers only translate: they read the request, call the :class:`~hydro_serving.gateway.core.Gateway`
and write JSON; every exception becomes a response in :func:`error_middleware` (through
:func:`hydro_serving.errors.http_error`, the one mapping). The hot path (:func:`invoke`) looks a pool
up in a dict and forwards bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import time
from dataclasses import replace
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hydro_serving import __version__, telemetry
from hydro_serving.errors import (
    DeadlineExceeded,
    HydroError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UpstreamError,
    ValidationError,
    http_error,
)
from hydro_serving.gateway import endpoints
from hydro_serving.gateway.admission import admit
from hydro_serving.gateway.appkeys import GATEWAY_KEY, OPENAPI_KEY
from hydro_serving.gateway.callers import is_internal_caller
from hydro_serving.gateway.core import Gateway
from hydro_serving.gateway.counting import is_invocation
from hydro_serving.gateway.exposure import disk_full, for_caller
from hydro_serving.gateway.guard import check_json_content_type
from hydro_serving.gateway.limits import body_limit, read_body, send_and_close
from hydro_serving.gateway.logstream import stream_lines
from hydro_serving.gateway.proxy import forward_headers, replica_is_loading, response_headers, upstream_target
from hydro_serving.gateway.replicaclient import ReplicaDisconnected, ReplicaRefused
from hydro_serving.gateway.requestid import REQUEST_ID_HEADER, request_id, set_request_id
from hydro_serving.gateway.scaler import FunctionPool
from hydro_serving.jsondepth import check_json_depth
from hydro_serving.monitor.sampler import TIMINGS_HEADER, Tap

log = logging.getLogger("hydro.gateway")

PREWARM_HEADER = "X-Hydro-Prewarm"
PIPELINE_HEADER = "X-Hydro-Pipeline"  # set by the router on stage calls: per-pipeline stage metrics
STAGE_HEADER = "X-Hydro-Stage"
SHADOW_HEADER = "X-Hydro-Shadow"  # "true" on a shadow call: accounted apart from the stage it shadows
ENDPOINTS_HEADER = endpoints.ENDPOINTS_HEADER
MAX_FORWARD_ATTEMPTS = 5  # refused connections and "loading" answers, within the cold start timeout



# ---- middleware -------------------------------------------------------------------------------------


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> HydroError:
    if exc.status == 404:
        return NotFound(f"no such endpoint: {request.method} {request.path}")
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()))
        return MethodNotAllowed(f"method {request.method} is not allowed on {request.path}",
                                headers={"Allow": ", ".join(allowed)})
    if exc.status == 413:
        return PayloadTooLarge(f"request body too large for {request.path}")
    return HydroError(exc.reason or "request failed", status=exc.status)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """The one place an exception becomes a response: JSON from ``http_error``, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error: BaseException = _from_http_exception(request, exc)
    except HydroError as exc:
        error = exc
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        error = disk_full(exc) or exc
        if error is exc:
            log.exception("request %s: unhandled error on %s %s", request_id(request), request.method, request.path)
    status, body, headers = http_error(error)
    body = for_caller(request, error, status, body)  # 5xx: the function and request id, the cause to the log
    del error  # no cycle exception -> traceback -> this frame: a request body would wait for the GC
    response = web.json_response(body, status=status, headers=headers)
    if status == 408:  # a caller too slow to send its request: answer, then close (no lingering read)
        return await send_and_close(request, response)
    return response


def require_admin(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        request.app[GATEWAY_KEY].check_admin(request.headers.getall("Authorization", []))
        return await handler(request)

    wrapped.__doc__ = handler.__doc__
    wrapped.__name__ = handler.__name__
    return wrapped


async def _json_body(request: web.Request) -> Any:
    check_json_content_type(request)
    raw = await request.read()
    if not raw.strip():
        raise ValidationError("the request body is empty; send a JSON object", field="(body)")
    check_json_depth(raw, field="(body)")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}", field="(body)") from None


# ---- handlers -----------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[GATEWAY_KEY].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@require_admin
async def system_info(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    return web.json_response({
        "provider": {"provider": "hydro", "orchestration": gw.provider.name, "version": {"release": __version__}},
        "version": {"release": __version__},
        "arch": platform.machine(),
        "functions": len(gw.pools),
        "uptimeSeconds": round(time.time() - gw.started_at, 3),
    })


@require_admin
async def list_functions(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    return web.json_response([gw.function_status(pool) for _, pool in sorted(gw.pools.items())])


@require_admin
async def create_function(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    pool, _ = await gw.deploy(await _json_body(request), create=True)
    return web.json_response(gw.function_status(pool), status=202)


@require_admin
async def update_function(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    pool, changed = await gw.deploy(await _json_body(request), create=False)
    body = gw.function_status(pool)
    body["changed"] = changed
    return web.json_response(body, status=202)


@require_admin
async def validate_functions(request: web.Request) -> web.Response:
    """``POST /system/validate``: every deploy check on a whole stack, nothing applied (200 or the first error)."""
    names = await request.app[GATEWAY_KEY].validate(await _json_body(request))
    return web.json_response({"valid": True, "functions": names})


@require_admin
async def delete_function(request: web.Request) -> web.Response:
    data = await _json_body(request)
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object {\"functionName\": NAME}", field="(body)")
    name = data.get("functionName")
    if not isinstance(name, str) or not name:
        raise ValidationError("functionName is required", field="functionName")
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise ValidationError("force must be true or false", field="force")
    return await _removed(request, name, force or _force_query(request))


def _force_query(request: web.Request) -> bool:
    value = request.query.get("force", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ValidationError("force must be true or false", field="force")
    return value in ("true", "1")


async def _removed(request: web.Request, name: str, force: bool) -> web.Response:
    """Remove (409 when a pipeline uses it, unless forced); the answer lists the pipelines left without it."""
    users = await request.app[GATEWAY_KEY].remove(name, force=force)
    body: dict[str, Any] = {"removed": name}
    if users:
        body["pipelines"] = users
    return web.json_response(body, status=202)


@require_admin
async def get_function(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    return web.json_response(gw.function_status(gw.pool(request.match_info["name"])))


@require_admin
async def delete_named_function(request: web.Request) -> web.Response:
    return await _removed(request, request.match_info["name"], _force_query(request))


@require_admin
async def scale_function(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    pool = gw.pool(request.match_info["name"])
    data = await _json_body(request)
    replicas = data.get("replicas") if isinstance(data, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ValidationError("replicas must be a non-negative integer", field="replicas", function=pool.name)
    target = pool.scale_to(replicas)
    return web.json_response({"name": pool.name, "replicas": target}, status=202)


@require_admin
async def system_logs(request: web.Request) -> web.StreamResponse:
    """NDJSON lines ``{"name", "text"}`` (OpenFaaS LogMessage), optionally followed."""
    gw = request.app[GATEWAY_KEY]
    name = request.query.get("name")
    if not name:
        raise ValidationError("query parameter 'name' is required", field="name")
    gw.pool(name)
    tail: int | None = None
    if request.query.get("tail") not in (None, ""):
        try:
            tail = int(request.query["tail"])
        except ValueError:
            raise ValidationError("tail must be an integer", field="tail") from None
        if tail < 0:
            raise ValidationError("tail must be zero or positive", field="tail")
    follow_raw = request.query.get("follow", "false").lower()
    if follow_raw not in ("1", "true", "yes", "0", "false", "no", ""):
        raise ValidationError("follow must be true or false", field="follow")
    follow = follow_raw in ("1", "true", "yes")
    return await stream_lines(request, name, gw.provider.logs(name, tail=tail, follow=follow), gw.stopping)


async def invoke(request: web.Request) -> web.StreamResponse:
    """``ANY /function/<name>[/<path>]``: hold from zero, pick a replica, forward, account."""
    gw = request.app[GATEWAY_KEY]
    name = request.match_info["name"]
    consumed = gw.check_caller(name, request.headers.getall("Authorization", []))
    pool = gw.pools.get(name)
    if pool is None:
        raise NotFound(f"function '{name}' is not deployed", function=name)
    if ENDPOINTS_HEADER in request.headers:  # a router's lease of this stage's replicas (its own key only)
        return await endpoints.lease(request, gw, pool)
    limit_headers = admit(request, gw.rate_limiter, pool)  # 429 before any replica is involved
    gw.check_stages(pool)  # a pipeline with a removed stage: 503 naming it, before stage 1 runs
    if request.headers.get(PREWARM_HEADER, "").lower() == "true":
        ready = pool.prewarm()
        return web.json_response({"function": name, "status": "ready" if ready else "starting"}, status=202)
    started = time.perf_counter()
    status = 500
    tap = gw.monitor.tap(request.headers)  # request id, and the trace id a pipeline's stages will share
    set_request_id(request, tap.request_id)  # one id in the response, the log, the replica and the samples
    hop = telemetry.Hop(tap.trace_id, request.headers.get("traceparent")) if telemetry.enabled() else None
    if hop is not None:  # this hop's span id goes in the forwarded traceparent
        tap = replace(tap, traceparent=hop.traceparent)
    cold = None
    pipeline = request.headers.get(PIPELINE_HEADER)
    try:
        body = await read_body(request, name, body_limit(pool.spec, gw.config.max_body), gw.config.body_timeout)
        response = await _forward(gw, pool, request, body, len(name) + 10, consumed, tap)  # len("/function/") == 10
        response.headers.update(limit_headers)
        status = response.status
        cold = response.headers.get("X-Cold-Start")
        gw.monitor.offer(tap, pool.spec, body, response.body, status,  # O(1), never waits
                         response.headers.get(TIMINGS_HEADER))
        return response
    except HydroError as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        if is_invocation(request.method, request.match_info.get("path", ""), status):
            pool.invocations += 1  # gateway.db gets it in the next batch (Gateway.flush_counts)
            pool.metrics.invoked(status, elapsed)
        if pipeline is not None and is_internal_caller(request):  # labels from trusted routers only
            shadow = request.headers.get(SHADOW_HEADER, "").lower() == "true"
            gw.metrics.observe_stage(pipeline, request.headers.get(STAGE_HEADER, ""), name, shadow, status, elapsed)
        if hop is not None:
            hop.end("hydro-gateway", f"{request.method} /function/{name}", {
                "hydro.function": name, "http.request.method": request.method, "http.response.status_code": status,
                "hydro.cold_start": cold == "true", "hydro.request_id": tap.request_id,
                "hydro.pipeline": pipeline or "", "hydro.stage": request.headers.get(STAGE_HEADER, "")},
                error=status >= 500)


class ReplicaGone(Exception):
    """The picked replica was stopped (its unix-socket pool closed) before the request went out: as refused."""


async def _forward(gw: Gateway, pool: FunctionPool, request: web.Request, body: bytes,
                   prefix_len: int, drop_auth: bool, tap: Tap | None = None) -> web.Response:
    """Send the request to a ready replica; retry only what the replica provably never ran.

    A refused connection and the runtime's 503 "loading" (a replaced worker reloading its model)
    both mean the handler did not run, so the request is retried (the replica is out of rotation
    meanwhile, and the retry waits for a ready one). A connection lost mid-request may have run
    the handler: that is a 502, and the replica is re-checked before it gets another request.
    """
    # admin credentials and keys are the gateway's own: never handed to function code, whatever the auth mode
    headers = forward_headers(request, drop_auth)
    if tap is not None and tap.traceparent is not None:  # one trace id for a pipeline's stages
        headers["traceparent"] = tap.traceparent
    headers[REQUEST_ID_HEADER] = request_id(request)  # the replica logs the same id
    header_items = list(headers.items())
    cold_any = False
    waited_total = 0.0
    refused = 0
    deadline = time.monotonic() + gw.config.cold_start_timeout
    for attempt in range(MAX_FORWARD_ATTEMPTS):
        replica, cold, waited = await pool.acquire()
        cold_any = cold_any or cold
        waited_total += waited or 0.0
        try:
            client = replica.client
            if client is None:  # stopped while picked: its pool is closed
                raise ReplicaGone(replica.id)
            upstream = await client.request(request.method, upstream_target(request.raw_path, prefix_len),
                                            header_items, body, pool.request_timeout.total)
            data = upstream.body
            if upstream.status == 503 and replica_is_loading(upstream.headers, data, pool.name):
                pool.suspect(replica, "loading")
                cold_any = True
                if attempt + 1 < MAX_FORWARD_ATTEMPTS and time.monotonic() < deadline:
                    continue
                raise ServiceUnavailable(f"function '{pool.name}' is not ready: its replica is (re)loading; "
                                         "retry later", retry_after=1, function=pool.name)
            out = response_headers(upstream.headers)
            out["X-Cold-Start"] = "true" if cold_any else "false"
            if tap is not None:  # what POST /system/feedback/<fn> joins on
                out[REQUEST_ID_HEADER] = tap.request_id
            if waited_total:
                out["X-Queue-Time-Ms"] = f"{waited_total * 1000:.1f}"
            return web.Response(status=upstream.status, body=data, headers=out)
        except (ReplicaRefused, ReplicaGone):
            pool.discard(replica, "unreachable")
            refused += 1
            if refused >= 2:
                raise UpstreamError(f"function '{pool.name}' is unreachable: its replica refused the connection",
                                    function=pool.name) from None
        except TimeoutError:
            raise DeadlineExceeded(f"function '{pool.name}' did not answer within {pool.spec.timeout:g}s",
                                   function=pool.name) from None
        except ReplicaDisconnected as exc:
            alive = gw.provider.is_alive(replica)
            if alive:  # the process lives, the connection died: a worker crashed and is being replaced
                pool.suspect(replica, "disconnected")
            cause = "" if alive else f" ({gw.provider.exit_cause(replica)})"
            raise UpstreamError(f"function '{pool.name}' failed while serving the request: "
                                f"{type(exc).__name__}{cause}", function=pool.name) from None
        finally:
            pool.release(replica)
    raise UpstreamError(f"function '{pool.name}' is unreachable", function=pool.name)


# ---- API keys -----------------------------------------------------------------------------------------


@require_admin
async def list_keys(request: web.Request) -> web.Response:
    """Every key without its secret or digest; routers' internal keys are marked ``internal``."""
    return web.json_response([key.describe() for key in request.app[GATEWAY_KEY].keys.all()])


@require_admin
async def create_key(request: web.Request) -> web.Response:
    """``{"name", "functions": [...], "expires": "30d"}``: the answer holds the key, shown this once."""
    data = await _json_body(request)
    if not isinstance(data, dict):
        raise ValidationError('the body must be a JSON object {"name", "functions", "expires"}', field="(body)")
    unknown = sorted(set(data) - {"name", "functions", "expires"})
    if unknown:
        raise ValidationError(f"unknown field '{unknown[0]}' (known: expires, functions, name)", field=unknown[0])
    key, token = request.app[GATEWAY_KEY].keys.create(data.get("name"), data.get("functions"), data.get("expires"))
    return web.json_response({**key.describe(), "key": token}, status=201)


@require_admin
async def revoke_key(request: web.Request) -> web.Response:
    key = request.app[GATEWAY_KEY].keys.revoke(request.match_info["name"])
    return web.json_response(key.describe())


# ---- the application ----------------------------------------------------------------------------------

ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/healthz", healthz),
    ("GET", "/openapi.json", openapi),
    ("GET", "/metrics", metrics),
    ("GET", "/system/info", system_info),
    ("GET", "/system/functions", list_functions),
    ("POST", "/system/functions", create_function),
    ("PUT", "/system/functions", update_function),
    ("DELETE", "/system/functions", delete_function),
    ("POST", "/system/validate", validate_functions),
    ("GET", "/system/function/{name}", get_function),
    ("DELETE", "/system/function/{name}", delete_named_function),
    ("POST", "/system/scale-function/{name}", scale_function),
    ("GET", "/system/logs", system_logs),
    ("GET", "/system/keys", list_keys),
    ("POST", "/system/keys", create_key),
    ("DELETE", "/system/keys/{name}", revoke_key),
    ("*", "/function/{name}", invoke),
    ("*", "/function/{name}/{path:.*}", invoke),
]
