"""The gateway's aiohttp application: routes, the one error middleware, lifecycle of pools.

``create_app(config)`` builds everything from the config once (state, credentials, provider,
metrics registry); per request only the function's pool is looked up in a dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import platform
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hydro_serving import __version__
from hydro_serving.errors import (
    BadRequest,
    Conflict,
    DeadlineExceeded,
    HydroError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UntrustedModelError,
    UpstreamError,
    ValidationError,
    http_error,
)
from hydro_serving.gateway import auth
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.deployment import Deployment, parse_deployment
from hydro_serving.gateway.discovery import DiscoveryLoop
from hydro_serving.gateway.metrics import GatewayMetrics
from hydro_serving.gateway.openapi import openapi_document
from hydro_serving.gateway.providers import Provider, get_provider
from hydro_serving.gateway.proxy import (
    forward_headers,
    new_session,
    replica_is_loading,
    response_headers,
    upstream_url,
)
from hydro_serving.gateway.scaler import FunctionPool
from hydro_serving.gateway.state import StateStore

log = logging.getLogger("hydro.gateway")

PREWARM_HEADER = "X-Hydro-Prewarm"
PIPELINE_HEADER = "X-Hydro-Pipeline"  # set by the router on stage calls: per-pipeline stage metrics
STAGE_HEADER = "X-Hydro-Stage"
SHADOW_HEADER = "X-Hydro-Shadow"  # "true" on a shadow call: accounted apart from the stage it shadows
MAX_FORWARD_ATTEMPTS = 5  # refused connections and "loading" answers, within the cold start timeout
MAX_REAP_TICK = 1.0
MIN_REAP_TICK = 0.05


class Gateway:
    """State shared by the handlers: pools by function name, provider, store, metrics, credentials."""

    def __init__(self, config: GatewayConfig, provider: Provider | None = None) -> None:
        self.config = config
        self.state = StateStore(config.state_dir)
        self.credentials = auth.load_or_create(config.state_dir)
        self.provider = provider or get_provider(config.provider, config)
        self.metrics = GatewayMetrics()
        self.pools: dict[str, FunctionPool] = {}
        self.session: aiohttp.ClientSession | None = None
        self.started_at = time.time()
        self._admin_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._openapi = json.dumps(openapi_document(__version__)).encode()

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session and rebuild every stored function at zero replicas (``scale.min`` warmed)."""
        self.session = new_session()
        for stored in self.state.all():
            try:
                deployment = Deployment.from_stored(stored.deployment)
            except HydroError as exc:  # a spec the current version no longer accepts: keep the gateway up
                log.error("function %s: stored deployment is invalid and is skipped: %s", stored.name, exc)
                continue
            try:
                await self.provider.deploy(deployment.spec, stored.generation)
            except HydroError as exc:  # e.g. its image was removed: keep the gateway up; starts will report it
                log.error("function %s: %s", stored.name, exc)
            self.pools[stored.name] = self._pool(deployment, stored.generation, stored.created_at)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        if self.config.discover_interval > 0:  # models dropped into the store by other tools become versions
            loop = DiscoveryLoop(self.config.discover_interval, allow_unsafe=self.config.discover_unsafe_formats)
            self._discovery = asyncio.get_running_loop().create_task(loop.run())
        log.info("gateway state %s: %d function(s) known", self.config.state_dir, len(self.pools))

    async def stop(self) -> None:
        """Stop every replica (gracefully, then forced) and release resources."""
        for task in (self._reaper, self._discovery):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(pool.close("shutdown", drain=False) for pool in self.pools.values()),
                             return_exceptions=True)
        await self.provider.close()
        if self.session is not None:
            await self.session.close()
        self.state.close()

    def _pool(self, deployment: Deployment, generation: int, created_at: float | None = None) -> FunctionPool:
        assert self.session is not None
        return FunctionPool(deployment, generation, self.provider, self.session,
                            self.metrics.for_function(deployment.name), self.config, created_at)

    async def _reap_loop(self) -> None:
        while True:
            idles = [p.spec.scale.idle for p in self.pools.values()]
            tick = min([MAX_REAP_TICK, *(i / 4 for i in idles)]) if idles else MAX_REAP_TICK
            await asyncio.sleep(max(MIN_REAP_TICK, tick))
            now = time.monotonic()
            for pool in list(self.pools.values()):
                try:
                    pool.reap(now)
                except Exception:
                    log.exception("function %s: reaping failed", pool.name)

    def pool(self, name: str) -> FunctionPool:
        pool = self.pools.get(name)
        if pool is None:
            raise NotFound(f"function '{name}' is not deployed", function=name)
        return pool

    # ---- deploy ---------------------------------------------------------------------------------------

    async def deploy(self, data: Any, create: bool) -> tuple[FunctionPool, bool]:
        """POST (create) or PUT (update) one function; returns (pool, changed)."""
        deployment = parse_deployment(data)
        deployment = await self._pin_model(deployment)
        self.provider.check(deployment.spec)
        async with self._admin_lock:
            name = deployment.name
            existing = self.pools.get(name)
            if create and existing is not None:
                raise Conflict(f"function '{name}' already exists; update it with PUT", function=name)
            if not create and existing is None:
                raise NotFound(f"function '{name}' is not deployed; create it with POST", function=name)
            if deployment.spec.is_router:
                deployment = await self._check_router(deployment)
            if existing is None:
                # the provider first: a deployment it refuses (a missing image, say) must not be stored
                await self.provider.deploy(deployment.spec, 1)
                stored = self.state.put(name, deployment.to_json(), 1)
                pool = self._pool(deployment, 1, stored.created_at)
                self.pools[name] = pool
                pool.reap(time.monotonic())  # start scale.min replicas now
                return pool, True
            if deployment.fingerprint() == existing.deployment.fingerprint():
                return existing, False
            generation = existing.generation + 1
            await self.provider.deploy(deployment.spec, generation)  # idempotent; refused before it is stored
            self.state.put(name, deployment.to_json(), generation)
            await existing.update(deployment, generation)
            return existing, True

    async def _pin_model(self, deployment: Deployment) -> Deployment:
        """Resolve the function's store model, check it is trusted, and record ``name:version@sha256`` as its pin.

        The pin (annotation ``hydro.model/pin``, shown by ``hydro describe``) reaches the replica as
        HYDRO_MODEL_PIN, so a replica loads exactly what was resolved here, even after an alias moved.
        """
        from dataclasses import replace

        from hydro_serving.store.trust import PIN_ANNOTATION, TrustPolicy, parse_trusted_keys

        spec = deployment.spec
        annotations = {k: v for k, v in spec.annotations.items() if k != PIN_ANNOTATION}
        if spec.model and not spec.model_is_local:
            from hydro_serving.store import pin_model

            policy = TrustPolicy(trusted=parse_trusted_keys(self.config.trusted_keys.split(",")),
                                 allow_discovered_pickle=self.config.discover_unsafe_formats)
            try:
                pin = await asyncio.get_running_loop().run_in_executor(None, pin_model, spec.model, policy)
            except UntrustedModelError:
                raise
            except HydroError as exc:
                if policy.trusted:  # trust cannot be checked: refuse rather than deploy unverified
                    raise
                log.warning("function %s: model %s not pinned (%s); replicas resolve it when they start",
                            spec.name, spec.model, exc.message)
            else:
                annotations[PIN_ANNOTATION] = str(pin)
        if annotations == spec.annotations:
            return deployment
        return Deployment(replace(spec, annotations=annotations), deployment.fields)

    async def _check_router(self, deployment: Deployment) -> Deployment:
        """Refuse a router whose stages are not deployed or cannot feed each other; record their signatures."""
        spec = deployment.spec
        for i, stage in enumerate(spec.chain):
            for fn in [*stage.functions, *stage.shadow]:
                if fn not in self.pools:
                    raise BadRequest(f"stage {i + 1} of router '{spec.name}' names function '{fn}', which is not "
                                     "deployed; deploy it first", field=f"hydro.chain[{i}]", stage=fn,
                                     function=spec.name)
        names = {fn for stage in spec.chain for fn in [*stage.functions, *stage.shadow]}
        loop = asyncio.get_running_loop()
        signatures = {name: await loop.run_in_executor(None, self._signature_of, name) for name in names}
        # ROUTER CONTRACT CHECK (hydro_serving.router.contracts, owned by the router part)
        from hydro_serving.router import contracts

        contracts.check_chain(spec, signatures.get)
        resolved = contracts.resolve_stage_signatures(spec, signatures.get)
        if not resolved:
            return deployment
        from dataclasses import replace

        options = {**spec.options, contracts.STAGE_SIGNATURES_OPTION: resolved}
        return Deployment(replace(spec, options=options), deployment.fields)

    def _signature_of(self, name: str) -> Any:
        """A deployed function's declared signature, else its store model's manifest signature (if reachable)."""
        spec = self.pools[name].spec
        if spec.signature is not None:
            return spec.signature
        if spec.model and not spec.model_is_local:
            try:
                from hydro_serving.store import open_store

                return open_store().get_manifest(spec.model).signature
            except Exception as exc:  # an unreachable store must not block a deploy; the check is best effort
                log.warning("signature of %s from the store unavailable: %s", name, exc)
        return None

    async def remove(self, name: str) -> None:
        async with self._admin_lock:
            pool = self.pool(name)
            del self.pools[name]
            self.state.delete(name)
        await pool.close("removed", drain=True)
        await self.provider.remove(name)
        self.metrics.forget(name)

    # ---- views ------------------------------------------------------------------------------------------

    def function_status(self, pool: FunctionPool) -> dict[str, Any]:
        """OpenFaaS FunctionStatus plus ``hydro`` (the spec) and ``status`` (replicas in detail)."""
        spec, fields = pool.spec, pool.deployment.fields
        status = pool.status()
        out: dict[str, Any] = {
            "name": spec.name,
            "image": spec.image or "",
            "namespace": spec.namespace or "hydro",
            "envProcess": fields.get("envProcess", ""),
            "envVars": dict(spec.environment),
            "labels": dict(spec.labels),
            "annotations": dict(spec.annotations),
            "secrets": list(spec.secrets),
            "replicas": status["replicas"],
            "availableReplicas": status["availableReplicas"],
            "invocationCount": status["invocationCount"],
            "createdAt": datetime.fromtimestamp(pool.created_at, UTC).isoformat(),
            "hydro": spec.to_dict(),
            "modelPin": spec.annotations.get("hydro.model/pin"),  # name:version@sha256 the deploy resolved
            "status": {k: status[k] for k in ("generation", "queued", "instances")},
        }
        if spec.limits:
            out["limits"] = dict(spec.limits)
        if spec.requests:
            out["requests"] = dict(spec.requests)
        return out


GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)


# ---- middleware -------------------------------------------------------------------------------------


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> HydroError:
    if exc.status == 404:
        return NotFound(f"no such endpoint: {request.method} {request.path}")
    if exc.status == 405:
        return MethodNotAllowed(f"method {request.method} is not allowed on {request.path}")
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
        log.exception("unhandled error on %s %s", request.method, request.path)
        error = exc
    status, body, headers = http_error(error)
    return web.json_response(body, status=status, headers=headers)


def require_admin(handler: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        request.app[GATEWAY_KEY].credentials.check(request.headers.get("Authorization"))
        return await handler(request)

    wrapped.__doc__ = handler.__doc__
    wrapped.__name__ = handler.__name__
    return wrapped


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise ValidationError("the request body is empty; send a JSON object", field="(body)")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}", field="(body)") from None


# ---- handlers -----------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[GATEWAY_KEY]._openapi, content_type="application/json")


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
async def delete_function(request: web.Request) -> web.Response:
    data = await _json_body(request)
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object {\"functionName\": NAME}", field="(body)")
    name = data.get("functionName")
    if not isinstance(name, str) or not name:
        raise ValidationError("functionName is required", field="functionName")
    await request.app[GATEWAY_KEY].remove(name)
    return web.json_response({"removed": name}, status=202)


@require_admin
async def get_function(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY_KEY]
    return web.json_response(gw.function_status(gw.pool(request.match_info["name"])))


@require_admin
async def delete_named_function(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[GATEWAY_KEY].remove(name)
    return web.json_response({"removed": name}, status=202)


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
    follow = request.query.get("follow", "false").lower() in ("1", "true", "yes")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    async for line in gw.provider.logs(name, tail=tail, follow=follow):
        await response.write(json.dumps({"name": name, "text": line}).encode() + b"\n")
    await response.write_eof()
    return response


async def invoke(request: web.Request) -> web.StreamResponse:
    """``ANY /function/<name>[/<path>]``: hold from zero, pick a replica, forward, account."""
    gw = request.app[GATEWAY_KEY]
    if gw.config.auth_functions:
        gw.credentials.check(request.headers.get("Authorization"))
    name = request.match_info["name"]
    pool = gw.pools.get(name)
    if pool is None:
        raise NotFound(f"function '{name}' is not deployed", function=name)
    if request.headers.get(PREWARM_HEADER, "").lower() == "true":
        ready = pool.prewarm()
        return web.json_response({"function": name, "status": "ready" if ready else "starting"}, status=202)
    started = time.perf_counter()
    status = 500
    try:
        body = await request.read()
        response = await _forward(gw, pool, request, body, len(name) + 10)  # len("/function/") == 10
        status = response.status
        return response
    except HydroError as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - started
        pool.invocations += 1
        pool.metrics.invoked(status, elapsed)
        pipeline = request.headers.get(PIPELINE_HEADER)
        if pipeline is not None:
            shadow = request.headers.get(SHADOW_HEADER, "").lower() == "true"
            gw.metrics.observe_stage(pipeline, request.headers.get(STAGE_HEADER, ""), name, shadow, status, elapsed)


async def _forward(gw: Gateway, pool: FunctionPool, request: web.Request, body: bytes,
                   prefix_len: int) -> web.Response:
    """Send the request to a ready replica; retry only what the replica provably never ran.

    A refused connection and the runtime's 503 "loading" (a replaced worker reloading its model)
    both mean the handler did not run, so the request is retried (the replica is out of rotation
    meanwhile, and the retry waits for a ready one). A connection lost mid-request may have run
    the handler: that is a 502, and the replica is re-checked before it gets another request.
    """
    assert gw.session is not None
    # the admin credentials are the gateway's own: never handed to function code, whatever the auth mode
    authorization = request.headers.get("Authorization")
    drop_auth = gw.config.auth_functions or (authorization is not None and gw.credentials.matches(authorization))
    headers = forward_headers(request, drop_auth)
    cold_any = False
    waited_total = 0.0
    refused = 0
    deadline = time.monotonic() + gw.config.cold_start_timeout
    for attempt in range(MAX_FORWARD_ATTEMPTS):
        replica, cold, waited = await pool.acquire()
        cold_any = cold_any or cold
        waited_total += waited or 0.0
        try:
            async with gw.session.request(request.method, upstream_url(replica.endpoint, request.raw_path, prefix_len),
                                          headers=headers, data=body, allow_redirects=False,
                                          timeout=pool.request_timeout) as upstream:
                data = await upstream.read()
                if upstream.status == 503 and replica_is_loading(upstream.headers, data, pool.name):
                    pool.suspect(replica, "loading")
                    cold_any = True
                    if attempt + 1 < MAX_FORWARD_ATTEMPTS and time.monotonic() < deadline:
                        continue
                    raise ServiceUnavailable(f"function '{pool.name}' is not ready: its replica is (re)loading; "
                                             "retry later", retry_after=1, function=pool.name)
                out = response_headers(upstream)
                out["X-Cold-Start"] = "true" if cold_any else "false"
                if waited_total:
                    out["X-Queue-Time-Ms"] = f"{waited_total * 1000:.1f}"
                return web.Response(status=upstream.status, body=data, headers=out)
        except aiohttp.ClientConnectorError:
            pool.discard(replica, "unreachable")
            refused += 1
            if refused >= 2:
                raise UpstreamError(f"function '{pool.name}' is unreachable: its replica refused the connection",
                                    function=pool.name) from None
        except TimeoutError:
            raise DeadlineExceeded(f"function '{pool.name}' did not answer within {pool.spec.timeout:g}s",
                                   function=pool.name) from None
        except aiohttp.ClientError as exc:
            alive = gw.provider.is_alive(replica)
            if alive:  # the process lives, the connection died: a worker crashed and is being replaced
                pool.suspect(replica, "disconnected")
            cause = "" if alive else f" ({gw.provider.exit_cause(replica)})"
            raise UpstreamError(f"function '{pool.name}' failed while serving the request: "
                                f"{type(exc).__name__}{cause}", function=pool.name) from None
        finally:
            pool.release(replica)
    raise UpstreamError(f"function '{pool.name}' is unreachable", function=pool.name)


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
    ("GET", "/system/function/{name}", get_function),
    ("DELETE", "/system/function/{name}", delete_named_function),
    ("POST", "/system/scale-function/{name}", scale_function),
    ("GET", "/system/logs", system_logs),
    ("*", "/function/{name}", invoke),
    ("*", "/function/{name}/{path:.*}", invoke),
]


def create_app(config: GatewayConfig, provider: Provider | None = None) -> web.Application:
    """Build the gateway application; pools start on app startup, replicas stop on cleanup."""
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body)
    gateway = Gateway(config, provider)
    app[GATEWAY_KEY] = gateway
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)

    async def on_startup(_: web.Application) -> None:
        await gateway.start()

    async def on_cleanup(_: web.Application) -> None:
        await gateway.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
