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
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp

from hydro_serving.errors import (
    BadRequest,
    Conflict,
    HydroError,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    UntrustedModelError,
    ValidationError,
)
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
from hydro_serving.stack.model import DNS_LABEL
from hydro_serving.store import pin_model
from hydro_serving.store.declared import check_signature
from hydro_serving.store.trust import PIN_ANNOTATION, UNPINNED_ANNOTATION, TrustPolicy, parse_trusted_keys
from hydro_serving.templates import get_template

log = logging.getLogger("hydro.gateway")

MAX_REAP_TICK = 1.0
MIN_REAP_TICK = 0.05
COUNT_FLUSH_INTERVAL = 2.0  # seconds between batched writes of invocation counts to gateway.db


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
        self._counts_flusher: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()  # set as the server begins to stop: open log streams end at once
        self._saved_counts: dict[str, int] = {}  # what gateway.db holds, so a flush writes only what moved

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session and rebuild every stored function at zero replicas (``scale.min`` warmed)."""
        self.session = new_session()
        auth.record_url(self.config.state_dir, self.config.url)  # the CLI sends the admin token only here
        self.keys.purge_internal()  # the routers that held them stopped with the previous gateway
        self._saved_counts = self.state.invocation_counts()
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
            pool = self._pool(deployment, stored.generation, stored.created_at)
            pool.invocations = self._saved_counts.get(stored.name, 0)  # INVOCATIONS survives a restart
            self.pools[stored.name] = pool
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())
        self._counts_flusher = asyncio.get_running_loop().create_task(self._flush_counts_loop())
        if self.config.discover_interval > 0:  # models dropped into the store by other tools become versions
            loop = DiscoveryLoop(self.config.discover_interval, allow_unsafe=self.config.discover_unsafe_formats)
            self._discovery = asyncio.get_running_loop().create_task(loop.run())
        await self.monitor.start()
        if self.config.log_max_bytes > 0:  # the gateway's and the replicas' logs rotate by size
            self._rotation = asyncio.get_running_loop().create_task(
                rotate_loop(self.config.state_dir, self.config.log_max_bytes))
        log.info("gateway state %s: %d function(s) known", self.config.state_dir, len(self.pools))

    def begin_stop(self) -> None:
        """The server stops accepting requests: say what it will wait for, and end the followed log streams.

        aiohttp then waits (up to its grace period) for requests in flight; a followed log never
        ends by itself, which is what made a stop take the whole grace period before.
        """
        self.stopping.set()
        waiting = {name: pool.queued + sum(r.inflight for r in pool.replicas) for name, pool in self.pools.items()}
        waiting = {name: n for name, n in waiting.items() if n}
        if waiting:
            log.info("stopping: waiting for %d request(s) in flight: %s", sum(waiting.values()),
                     ", ".join(f"{name} ({n})" for name, n in sorted(waiting.items())))
        else:
            log.info("stopping: no request in flight")

    async def stop(self) -> None:
        """Stop every replica (gracefully, then forced) and release resources, saying what it waits for.

        A stop with nothing in the log looked hung; each phase that can wait is logged with what
        it waits for and how long it took.
        """
        began = time.monotonic()
        for task in (self._reaper, self._discovery, self._rotation, self._counts_flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.flush_counts()
        live = {name: len(pool.replicas) for name, pool in self.pools.items() if pool.replicas}
        if live:
            log.info("stopping: %d replica(s) of %s (SIGTERM, then SIGKILL after %gs)", sum(live.values()),
                     ", ".join(f"{name} ({n})" for name, n in sorted(live.items())), self.config.stop_grace)
        phase = time.monotonic()
        await asyncio.gather(*(pool.close("shutdown", drain=False) for pool in self.pools.values()),
                             return_exceptions=True)
        if live:
            log.info("stopping: replicas stopped in %.1fs", time.monotonic() - phase)
        phase = time.monotonic()
        await self.provider.close()
        await self.monitor.stop()
        if self.session is not None:
            await self.session.close()
        self.state.close()
        log.info("stopped in %.1fs (provider and monitor closed in %.1fs)", time.monotonic() - began,
                 time.monotonic() - phase)

    def flush_counts(self) -> None:
        """Write the invocation counts that moved since the last flush, in one transaction."""
        current = {name: pool.invocations for name, pool in self.pools.items()}
        changed = {name: n for name, n in current.items() if self._saved_counts.get(name) != n}
        if not changed:
            return
        try:
            self.state.save_invocation_counts(changed)
        except (HydroError, OSError, sqlite3.Error) as exc:  # a full disk must not stop serving; retried later
            log.warning("invocation counts not saved: %s", exc)
            return
        self._saved_counts.update(changed)

    async def _flush_counts_loop(self) -> None:
        """Batch the request path's counter increments into gateway.db every COUNT_FLUSH_INTERVAL seconds."""
        while True:
            await asyncio.sleep(COUNT_FLUSH_INTERVAL)
            self.flush_counts()

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
        self.provider.check(deployment.spec)
        self._check_template(deployment.spec)
        deployment = await self._pin_model(deployment)  # a store request: after the checks that need none
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
            self._log_repin(deployment)
            generation = existing.generation + 1
            await self.provider.deploy(deployment.spec, generation)  # idempotent; refused before it is stored
            self.state.put(name, deployment.to_json(), generation)
            self._rotate_router_key(deployment.spec, generation)
            await existing.update(deployment, generation)
            return existing, True

    def _check_template(self, spec: FunctionSpec) -> None:
        """Refuse a ``lang`` no template here serves (issue 14: ``lang: pytorch`` used to deploy, then 404 at call).

        Only where replicas run from the templates of this machine: the local provider, or a function
        without a prebuilt ``image``.
        """
        if spec.image and self.config.provider != "local":
            return
        try:
            get_template(spec.lang)
        except NotFound as exc:
            raise ValidationError(f"function '{spec.name}': lang: {exc.message}", field="hydro.lang",
                                  function=spec.name) from None

    async def _pin_model(self, deployment: Deployment) -> Deployment:
        """Resolve the function's store model, check it is trusted, and record ``name:version@sha256`` as its pin.

        The pin (annotation ``hydro.model/pin``, shown by ``hydro describe``) reaches the replica as
        HYDRO_MODEL_PIN, so a replica loads exactly what was resolved here, even after an alias moved.
        """
        spec = deployment.spec
        annotations = {k: v for k, v in spec.annotations.items() if k not in (PIN_ANNOTATION, UNPINNED_ANNOTATION)}
        if spec.model and not spec.model_is_local:
            policy = TrustPolicy(trusted=parse_trusted_keys(self.config.trusted_keys.split(",")),
                                 allow_discovered_pickle=self.config.discover_unsafe_formats)
            store_url = _declared_store(spec)
            try:
                pin = await asyncio.get_running_loop().run_in_executor(None, pin_model, spec.model, policy,
                                                                       store_url)
            except UntrustedModelError:
                raise
            except NotFound as exc:  # the store answered: no such model, version or alias (issue 14)
                raise ValidationError(f"function '{spec.name}': model: {spec.model} does not exist in the store "
                                      f"({exc.message})", field="hydro.model", function=spec.name) from None
            except HydroError as exc:
                if policy.trusted:  # trust cannot be checked: refuse rather than deploy unverified
                    raise
                kept = self._previous_pin(spec)
                if kept is not None:  # the store is down: keep what the last deploy resolved (issue 14)
                    log.warning("function %s: model %s not re-resolved (%s); keeping the pin %s of the last deploy",
                                spec.name, spec.model, exc.message, kept)
                    annotations[PIN_ANNOTATION] = kept
                else:  # recorded, so deploy and describe say an alias move will not roll the replicas
                    annotations[UNPINNED_ANNOTATION] = unpinned_reason(store_url, exc.message)
                    log.warning("function %s: model %s not pinned (%s); replicas resolve it when they start",
                                spec.name, spec.model, exc.message)
            else:
                annotations[PIN_ANNOTATION] = str(pin)
                log.info("function %s: model %s resolved to %s", spec.name, spec.model, pin)
                if spec.signature is not None:
                    await asyncio.get_running_loop().run_in_executor(None, self._check_declared, spec, pin)
        if annotations == spec.annotations:
            return deployment
        return Deployment(replace(spec, annotations=annotations), deployment.fields)

    def _log_repin(self, deployment: Deployment) -> None:
        """Say in the gateway log when a redeploy moves a function onto another model version (an alias moved)."""
        existing = self.pools.get(deployment.name)
        if existing is None:
            return
        before = existing.spec.annotations.get(PIN_ANNOTATION)
        after = deployment.spec.annotations.get(PIN_ANNOTATION)
        if before and after and before != after:
            log.info("function %s: model %s moved from %s to %s; rolling replicas onto it", deployment.name,
                     deployment.spec.model, before, after)

    @staticmethod
    def _check_declared(spec: FunctionSpec, pin: Any) -> None:
        """The function's own signature against what its model declared at upload (issue 14 point 8).

        Read from the manifest (recorded there at upload), so the model is never loaded here.
        """
        from hydro_serving.store import open_store
        from hydro_serving.store.declared import declared_of_manifest

        try:
            manifest = open_store(_declared_store(spec)).get_manifest(f"{pin.name}:{pin.version}")
        except HydroError as exc:  # just resolved, so the store answered: a second look may still fail
            log.warning("function %s: cannot read the manifest of %s to check its signature: %s",
                        spec.name, pin, exc.message)
            return
        try:
            check_signature(spec.signature, declared_of_manifest(manifest), field="hydro.signature")
        except ValidationError as exc:
            raise ValidationError(f"function '{spec.name}': {exc.message} (model {pin.name}:{pin.version})",
                                  field=exc.field, function=spec.name) from None

    def _previous_pin(self, spec: FunctionSpec) -> str | None:
        """The pin the deployed version of this function holds, when it was deployed with the same model ref."""
        pool = self.pools.get(spec.name)
        if pool is None or pool.spec.model != spec.model:
            return None
        return pool.spec.annotations.get(PIN_ANNOTATION)

    async def validate(self, data: Any) -> list[str]:
        """Check a whole stack without changing anything (``POST /system/validate``, issue 14 point 9).

        ``data`` is ``{"functions": [deployment, ...]}``, the bodies ``hydro deploy`` would send. Every
        check a deploy makes runs on each (the spec, the provider, the template, the model in the store),
        and each router's chain is checked against the functions deployed *and* those in the batch, with
        the batch's specs winning, so a stack is refused before its first function is touched.
        Returns the names checked; the first problem is raised naming the function and the field.
        """
        items = data.get("functions") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ValidationError('the body must be {"functions": [deployment, ...]}', field="functions")
        batch: dict[str, Deployment] = {}
        for i, item in enumerate(items):
            try:
                deployment = parse_deployment(item)
                self.provider.check(deployment.spec)
                self._check_template(deployment.spec)
                deployment = await self._pin_model(deployment)
            except HydroError as exc:
                service = item.get("service") if isinstance(item, dict) else None
                if exc.function is None and isinstance(service, str) and DNS_LABEL.match(service):
                    exc.function = service
                exc.details.setdefault("index", i)
                raise
            if deployment.name in batch:
                raise ValidationError(f"function '{deployment.name}' appears twice", field=f"functions[{i}]",
                                      function=deployment.name)
            batch[deployment.name] = deployment
        pending = {name: d.spec for name, d in batch.items()}
        for deployment in batch.values():
            if deployment.spec.is_router:
                await self._check_router(deployment, pending)
        return list(batch)

    async def _check_router(self, deployment: Deployment,
                            pending: dict[str, FunctionSpec] | None = None) -> Deployment:
        """Refuse a router whose stages are not deployed or cannot feed each other; record their signatures.

        ``pending``: specs about to be deployed with it (a stack being validated), which count as deployed.
        """
        spec = deployment.spec
        specs = {name: pool.spec for name, pool in self.pools.items()} | (pending or {})
        for i, stage in enumerate(spec.chain):
            for fn in [*stage.functions, *stage.shadow]:
                if fn not in specs:
                    raise BadRequest(f"stage {i + 1} of router '{spec.name}' names function '{fn}', which is not "
                                     "deployed; deploy it first", field=f"hydro.chain[{i}]", stage=fn,
                                     function=spec.name)
        names = {fn for stage in spec.chain for fn in [*stage.functions, *stage.shadow]}
        loop = asyncio.get_running_loop()
        signatures = {name: await loop.run_in_executor(None, self._signature_of, specs[name]) for name in names}
        # ROUTER CONTRACT CHECK (hydro_serving.router.contracts, owned by the router part)
        from hydro_serving.router import contracts

        contracts.check_chain(spec, signatures.get)
        resolved = contracts.resolve_stage_signatures(spec, signatures.get)
        if not resolved:
            return deployment
        from dataclasses import replace

        options = {**spec.options, contracts.STAGE_SIGNATURES_OPTION: resolved}
        return Deployment(replace(spec, options=options), deployment.fields)

    def _signature_of(self, spec: FunctionSpec) -> Any:
        """A function's declared signature, else its store model's manifest signature (if reachable)."""
        name = spec.name
        if spec.signature is not None:
            return spec.signature
        if spec.model and not spec.model_is_local:
            try:
                from hydro_serving.store import open_store

                return open_store(_declared_store(spec)).get_manifest(spec.model).signature
            except Exception as exc:  # an unreachable store must not block a deploy; the check is best effort
                log.warning("signature of %s from the store unavailable: %s", name, exc)
        return None

    def pipelines_using(self, name: str) -> list[str]:
        """The deployed routers whose chain names ``name`` (as a stage, a variant or a shadow), sorted."""
        return sorted(pool.name for pool in self.pools.values() if pool.spec.is_router and pool.name != name
                      and any(name in (*stage.functions, *stage.shadow) for stage in pool.spec.chain))

    def check_stages(self, pool: FunctionPool) -> None:
        """A pipeline whose stage is not deployed answers 503 naming it, before any stage runs (issue 14).

        Shadows are left out: a missing shadow never changes the response (the router logs it).
        """
        spec = pool.spec
        if not spec.is_router:
            return
        for i, stage in enumerate(spec.chain):
            for fn in stage.functions:
                if fn not in self.pools:
                    raise ServiceUnavailable(f"pipeline '{spec.name}' cannot run: stage {i + 1} names function "
                                             f"'{fn}', which is not deployed (deploy it again, or redeploy the "
                                             "pipeline without it)", stage=fn, function=spec.name,
                                             details={"cause": "stage_missing", "stage_index": i + 1})

    async def remove(self, name: str, force: bool = False) -> list[str]:
        """Remove a function; one that deployed pipelines use is refused (409) unless ``force``.

        Returns the pipelines that used it (non-empty only with ``force``): they answer 503 naming it.
        """
        async with self._admin_lock:
            pool = self.pool(name)
            users = self.pipelines_using(name)
            if users and not force:
                raise Conflict(f"function '{name}' is a stage of the deployed pipeline(s) {', '.join(users)}; "
                               "remove or redeploy those first, or remove it anyway with --force (they will "
                               "answer 503 until it is back)", function=name, details={"pipelines": users})
            self.state.delete(name)  # first: a full disk (507) leaves the function deployed, not half-removed
            del self.pools[name]
            self._saved_counts.pop(name, None)
        await pool.close("removed", drain=True)
        self._revoke_router_keys(name)
        await self.provider.remove(name)
        self.metrics.forget(name)
        self.rate_limiter.forget(name)
        if users:
            log.warning("function %s removed with --force; pipeline(s) %s now answer 503 naming it",
                        name, ", ".join(users))
        return users

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
            "modelUnpinned": spec.annotations.get(UNPINNED_ANNOTATION),  # why it resolved nothing, if so
            "status": {k: status[k] for k in ("generation", "queued", "instances")},
        }
        if spec.limits:
            out["limits"] = dict(spec.limits)
        if spec.requests:
            out["requests"] = dict(spec.requests)
        return out


def unpinned_reason(store_url: str | None, message: str) -> str:
    """One line saying why a deploy pinned nothing, and what that means for an alias move."""
    if store_url:
        from urllib.parse import urlsplit

        parts = urlsplit(store_url)  # never echo credentials a URL might carry
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()
        where = f"the function's store {shown}"
    else:
        where = "the store"
    first = " ".join(message.split())[:300]
    return (f"the gateway cannot read {where} ({first}); replicas resolve the reference when they start, "
            f"so moving an alias does not roll them")


def _declared_store(spec: FunctionSpec) -> str | None:
    """The store a function declares for its model (its own ``HYDRO_STORE``), else None: the gateway's.

    A deploy must pin against the store the replica will read: pinning against the gateway's own
    store instead left such functions unpinned, so an alias move was invisible to a redeploy.
    """
    from hydro_serving.replica import contract
    from hydro_serving.replica.environment import declared_environment

    try:
        return declared_environment(spec).get(contract.STORE_ENV) or None
    except HydroError:  # an unreadable environment_file is reported by the provider, not here
        return None
