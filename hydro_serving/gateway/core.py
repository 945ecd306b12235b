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
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from hydro_serving.errors import BadRequest, Conflict, HydroError, NotFound, Unauthorized, UntrustedModelError
from hydro_serving.gateway import auth
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.deployment import Deployment, parse_deployment
from hydro_serving.gateway.discovery import DiscoveryLoop
from hydro_serving.gateway.endpoints import DIRECT_PROVIDERS
from hydro_serving.gateway.keys import KeyRing, looks_like_key
from hydro_serving.gateway.logrotate import rotate_loop
from hydro_serving.gateway.metrics import GatewayMetrics
from hydro_serving.gateway.providers import Provider, get_provider
from hydro_serving.gateway.proxy import new_session
from hydro_serving.gateway.ratelimit import RateLimiter
from hydro_serving.gateway.scaler import FunctionPool
from hydro_serving.gateway.state import StateStore
from hydro_serving.monitor.service import for_gateway
from hydro_serving.replica.contract import ROUTER_DIRECT_ENV
from hydro_serving.router.client import ROUTER_KEY_ENV
from hydro_serving.stack import FunctionSpec
from hydro_serving.store import pin_model
from hydro_serving.store.trust import PIN_ANNOTATION, TrustPolicy, parse_trusted_keys

log = logging.getLogger("hydro.gateway")

MAX_REAP_TICK = 1.0
MIN_REAP_TICK = 0.05


class Gateway:
    """State shared by the handlers: pools by function name, provider, store, metrics, credentials."""

    def __init__(self, config: GatewayConfig, provider: Provider | None = None) -> None:
        self.config = config
        self.state = StateStore(config.state_dir)
        self.credentials = auth.load_or_create(config.state_dir)
        self.keys = KeyRing(self.state)
        self.provider = provider or get_provider(config.provider, config)
        self.provider.credentials = self.replica_credentials
        self._router_keys: dict[str, tuple[str, str, int]] = {}  # router -> (key name, token, generation)
        self._retired_keys: list[tuple[str, str, int]] = []  # (router, key name, newest generation holding it)
        self.metrics = GatewayMetrics()
        self.rate_limiter = RateLimiter()  # token buckets of every function's rate: (issue 12)
        self.pools: dict[str, FunctionPool] = {}
        self.session: aiohttp.ClientSession | None = None
        self.started_at = time.time()
        self._admin_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._discovery: asyncio.Task[None] | None = None
        # payload sampling, drift windows, feedback (hydro_serving.monitor); its own SQLite file
        self.monitor = for_gateway(config.state_dir, self.metrics.registry)
        self._rotation: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session and rebuild every stored function at zero replicas (``scale.min`` warmed)."""
        self.session = new_session()
        auth.record_url(self.config.state_dir, self.config.url)  # the CLI sends the admin token only here
        self.keys.purge_internal()  # the routers that held them stopped with the previous gateway
        for stored in self.state.all():
            try:
                deployment = Deployment.from_stored(stored.deployment)
            except HydroError as exc:  # a spec the current version no longer accepts: keep the gateway up
                log.error("function %s: stored deployment is invalid and is skipped: %s", stored.name, exc)
                continue
            self._rotate_router_key(deployment.spec, stored.generation)
            try:
                await self.provider.deploy(deployment.spec, stored.generation)
            except HydroError as exc:  # e.g. its image was removed: keep the gateway up; starts will report it
                log.error("function %s: %s", stored.name, exc)
            self.pools[stored.name] = self._pool(deployment, stored.generation, stored.created_at)
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        if self.config.discover_interval > 0:  # models dropped into the store by other tools become versions
            loop = DiscoveryLoop(self.config.discover_interval, allow_unsafe=self.config.discover_unsafe_formats)
            self._discovery = asyncio.get_running_loop().create_task(loop.run())
        await self.monitor.start()
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
        await self.monitor.stop()
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
            self._retire_router_keys()

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
                self._rotate_router_key(deployment.spec, 1)
                pool = self._pool(deployment, 1, stored.created_at)
                self.pools[name] = pool
                pool.reap(time.monotonic())  # start scale.min replicas now
                return pool, True
            if deployment.fingerprint() == existing.deployment.fingerprint():
                return existing, False
            generation = existing.generation + 1
            await self.provider.deploy(deployment.spec, generation)  # idempotent; refused before it is stored
            self.state.put(name, deployment.to_json(), generation)
            self._rotate_router_key(deployment.spec, generation)
            await existing.update(deployment, generation)
            return existing, True

    async def _pin_model(self, deployment: Deployment) -> Deployment:
        """Resolve the function's store model, check it is trusted, and record ``name:version@sha256`` as its pin.

        The pin (annotation ``hydro.model/pin``, shown by ``hydro describe``) reaches the replica as
        HYDRO_MODEL_PIN, so a replica loads exactly what was resolved here, even after an alias moved.
        """
        spec = deployment.spec
        annotations = {k: v for k, v in spec.annotations.items() if k != PIN_ANNOTATION}
        if spec.model and not spec.model_is_local:
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
            self.state.delete(name)  # first: a full disk (507) leaves the function deployed, not half-removed
            del self.pools[name]
        await pool.close("removed", drain=True)
        self._revoke_router_keys(name)
        await self.provider.remove(name)
        self.metrics.forget(name)
        self.rate_limiter.forget(name)

    # ---- who may call what ----------------------------------------------------------------------------

    def check_admin(self, authorization: list[str]) -> None:
        """``/system/*``: the admin token or password, nothing else (keys never administer)."""
        self.credentials.check(authorization)

    def check_caller(self, name: str, authorization: list[str]) -> bool:
        """Admit (or refuse) a call of ``/function/<name>``; True when the header is ours to consume.

        A function is protected when the gateway runs with ``--auth-functions`` or its spec says
        ``auth: key``; it then takes the admin credentials or a key scoped to it. Whatever the
        function, a header that carries the admin credentials or a key is the gateway's own and is
        never forwarded (the caller's key stops at the pipeline's door); any other Authorization
        header of an open function is the function's business and passes through.
        """
        credential = auth.presented(authorization)
        pool = self.pools.get(name)
        protected = self.config.auth_functions or (pool is not None and pool.spec.auth == "key")
        if credential is None:
            if protected:
                raise Unauthorized(f"function '{name}' needs credentials: send 'Authorization: Bearer <key>' with "
                                   "a key for it (hydro key create) or the admin token", function=name)
            return False
        if self.credentials.matches(credential):
            return True
        is_key = credential.scheme == "bearer" and looks_like_key(credential.value)
        if protected:
            if not is_key:
                raise Unauthorized(f"invalid credentials for function '{name}': send a key for it "
                                   "('Bearer hk_...') or the admin token", function=name)
            self.keys.authenticate(credential.value, name)
        return is_key

    # ---- routers' own keys ----------------------------------------------------------------------------

    def replica_credentials(self, name: str) -> dict[str, str]:
        """Variables the provider adds to a replica's environment: a router's key for its stages, else none."""
        current = self._router_keys.get(name)
        if current is None:
            return {}
        out = {ROUTER_KEY_ENV: current[1]}
        if self.provider.name in DIRECT_PROVIDERS:  # its stages run on this machine: it may lease their replicas
            out[ROUTER_DIRECT_ENV] = "1"
        return out

    def _rotate_router_key(self, spec: FunctionSpec, generation: int) -> None:
        """Mint a router's key for this generation (scoped to its stages); older ones retire with their replicas."""
        current = self._router_keys.pop(spec.name, None)
        if current is not None:
            self._retired_keys.append((spec.name, current[0], current[2]))
        if not spec.is_router:
            return
        stages = sorted({fn for stage in spec.chain for fn in [*stage.functions, *stage.shadow]})
        key, token = self.keys.create(f"router:{spec.name}:{generation}", stages, internal=True)
        self._router_keys[spec.name] = (key.name, token, generation)

    def _retire_router_keys(self) -> None:
        """Revoke a router's older keys once no replica that holds one is left (they drain after a redeploy)."""
        if not self._retired_keys:
            return
        keep = []
        for name, key_name, generation in self._retired_keys:
            pool = self.pools.get(name)
            if pool is not None and any(r.generation <= generation and r.state not in ("dead", "stopped")
                                        for r in pool.replicas):
                keep.append((name, key_name, generation))
                continue
            with contextlib.suppress(NotFound):
                self.keys.revoke(key_name, internal=True)
        self._retired_keys = keep

    def _revoke_router_keys(self, name: str) -> None:
        """A removed router's keys, current and retired, stop working at once (its replicas are stopped)."""
        current = self._router_keys.pop(name, None)
        names = [current[0]] if current is not None else []
        names += [key for fn, key, _ in self._retired_keys if fn == name]
        self._retired_keys = [entry for entry in self._retired_keys if entry[0] != name]
        for key_name in names:
            with contextlib.suppress(NotFound):
                self.keys.revoke(key_name, internal=True)

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
            "modelPin": spec.annotations.get(PIN_ANNOTATION),  # name:version@sha256 the deploy resolved
            "status": {k: status[k] for k in ("generation", "queued", "instances")},
        }
        if spec.limits:
            out["limits"] = dict(spec.limits)
        if spec.requests:
            out["requests"] = dict(spec.requests)
        return out
