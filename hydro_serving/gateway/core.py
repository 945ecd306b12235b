"""The gateway's domain object: functions deployed, their pools, and their lifecycle.

:class:`Gateway` knows nothing of HTTP requests: it deploys and removes functions, owns the pools
(one :class:`FunctionPool` per function), the provider, the state store, the metrics and the
credentials, and describes a function's status. The HTTP layer (:mod:`hydro_serving.gateway.routes`)
turns requests into calls of these methods; :func:`hydro_serving.gateway.app.create_app` wires both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from hydro_serving.errors import BadRequest, Conflict, HydroError, NotFound
from hydro_serving.gateway import auth
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.deployment import Deployment, parse_deployment
from hydro_serving.gateway.discovery import DiscoveryLoop
from hydro_serving.gateway.logrotate import rotate_loop
from hydro_serving.gateway.metrics import GatewayMetrics
from hydro_serving.gateway.providers import Provider, get_provider
from hydro_serving.gateway.proxy import new_session
from hydro_serving.gateway.ratelimit import RateLimiter
from hydro_serving.gateway.scaler import FunctionPool
from hydro_serving.gateway.state import StateStore

log = logging.getLogger("hydro.gateway")

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
        self.rate_limiter = RateLimiter()  # token buckets of every function's rate: (issue 12)
        self.pools: dict[str, FunctionPool] = {}
        self.session: aiohttp.ClientSession | None = None
        self.started_at = time.time()
        self._admin_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._rotation: asyncio.Task[None] | None = None

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
            loop = DiscoveryLoop(self.config.discover_interval)
            self._discovery = asyncio.get_running_loop().create_task(loop.run())
        if self.config.log_max_bytes > 0:  # the gateway's and the replicas' logs rotate by size
            self._rotation = asyncio.get_running_loop().create_task(
                rotate_loop(self.config.state_dir, self.config.log_max_bytes))
        log.info("gateway state %s: %d function(s) known", self.config.state_dir, len(self.pools))

    async def stop(self) -> None:
        """Stop every replica (gracefully, then forced) and release resources."""
        for task in (self._reaper, self._discovery, self._rotation):
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
            self.state.delete(name)  # first: a full disk (507) leaves the function deployed, not half-removed
            del self.pools[name]
        await pool.close("removed", drain=True)
        await self.provider.remove(name)
        self.metrics.forget(name)
        self.rate_limiter.forget(name)

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
            "status": {k: status[k] for k in ("generation", "queued", "instances")},
        }
        if spec.limits:
            out["limits"] = dict(spec.limits)
        if spec.requests:
            out["requests"] = dict(spec.requests)
        return out
