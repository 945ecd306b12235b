"""Scale to zero, autoscaling, draining and crash handling, written once for every provider.

A :class:`FunctionPool` owns the replicas of one function. Requests ``acquire`` a ready replica
(the least loaded, newest generation first) and ``release`` it; from zero, every concurrent
request waits on one shared start. The gateway's reaper calls :meth:`FunctionPool.reap`
periodically to stop idle replicas (after draining them) and keep ``scale.min`` warm.

A replica whose process lives on can still stop being ready: the runtime's gunicorn arbiter
replaces a crashed worker inside the same replica, and the new worker loads the model again
while answering 503 "loading". :meth:`FunctionPool.suspect` takes such a replica out of
rotation ("recovering") until its readiness probe answers 200 again; requests that find no ready
replica meanwhile wait for that recovery exactly as they wait for a cold start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp

from hydro_serving.errors import HydroError, NotFound, ServiceUnavailable, TooManyRequests
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.deployment import Deployment
from hydro_serving.gateway.metrics import FunctionMetrics
from hydro_serving.gateway.providers.base import Provider, Replica
from hydro_serving.gateway.providers.base import ReplicaStartError as StartError
from hydro_serving.gateway.replicaclient import ReplicaClient
from hydro_serving.gateway.upstream import replica_session

log = logging.getLogger("hydro.gateway")

FIRST_POLL = 0.005  # seconds between readiness probes at first: a warm runtime is ready in tens of ms
MAX_POLL = 0.1
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2)
MAX_MIN_BACKOFF = 60.0
MAX_LEASE_WAIT = 5.0  # seconds a drained replica may wait for routers' leases of it to lapse


class FunctionPool:
    """The replicas of one function and the decisions about them."""

    def __init__(self, deployment: Deployment, generation: int, provider: Provider, session: aiohttp.ClientSession,
                 metrics: FunctionMetrics, config: GatewayConfig, created_at: float | None = None) -> None:
        self.deployment = deployment
        self.spec = deployment.spec
        self.name = deployment.spec.name
        self.generation = generation
        self.provider = provider
        self.session = session
        self.metrics = metrics
        self.config = config
        self.created_at = created_at or time.time()
        self.replicas: list[Replica] = []
        self.invocations = 0
        self.queued = 0
        self.closed = False
        self._starts: dict[asyncio.Task[Replica], int] = {}  # pending starts -> generation
        self._recoveries: dict[str, asyncio.Task[Replica]] = {}  # replica id -> its readiness re-check
        self._watchers: dict[str, asyncio.Task[Any]] = {}  # replica id -> the task that sees it exit
        self._drained: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._min_retry_at = 0.0
        self._min_backoff = 1.0
        self.request_timeout = aiohttp.ClientTimeout(total=self.spec.timeout + 1.0)

    # ---- the request path ---------------------------------------------------------------------------

    def pick(self) -> Replica | None:
        """The least-loaded ready replica, newest generation first (old ones only serve during a swap)."""
        best = None
        for replica in self.replicas:
            if replica.state != "ready":
                continue
            if best is None or replica.generation > best.generation or (
                    replica.generation == best.generation and replica.inflight < best.inflight):
                best = replica
        return best

    async def acquire(self) -> tuple[Replica, bool, float | None]:
        """A ready replica for one request: ``(replica, cold_start, waited_seconds or None)``.

        Never returns a replica that is not ready; from zero, waits (bounded) on the shared start.
        """
        replica = self.pick()
        if replica is not None:
            if replica.inflight >= self.spec.scale.concurrency:
                self._maybe_scale_up()
            replica.inflight += 1
            return replica, False, None
        if self.closed:
            raise NotFound(f"function '{self.name}' is not deployed", function=self.name)
        if self.queued >= self.spec.scale.queue:  # bounded: held requests are memory and connections
            raise TooManyRequests(f"function '{self.name}' already holds {self.queued} requests waiting for a "
                                  "replica (scale.queue); retry later", retry_after=1, field="scale.queue",
                                  function=self.name)
        self.queued += 1
        self.metrics.queued.inc()
        started = time.monotonic()
        deadline = started + self.config.cold_start_timeout
        try:
            while True:
                recovery = self._pending_recovery()
                task = recovery or self._ensure_start("cold")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._not_ready_in_time()
                try:
                    await asyncio.wait_for(asyncio.shield(task), remaining)
                except TimeoutError:
                    raise self._not_ready_in_time() from None
                except asyncio.CancelledError:
                    if task.cancelled() and self.closed:
                        raise ServiceUnavailable(f"function '{self.name}' is shutting down or was removed",
                                                 retry_after=1, function=self.name) from None
                    raise
                except Exception:
                    if task is not recovery:
                        raise
                    # the replica being waited for died while recovering (a SIGKILLed replica looks alive
                    # for a moment): this request never reached it, so the next turn starts a fresh one
                    continue
                replica = self.pick()
                if replica is not None:
                    replica.inflight += 1
                    return replica, True, time.monotonic() - started
                if self.closed:
                    raise NotFound(f"function '{self.name}' is not deployed", function=self.name)
        finally:
            self.queued -= 1
            self.metrics.queued.dec()

    def release(self, replica: Replica) -> None:
        replica.inflight -= 1
        replica.last_used = time.monotonic()
        if replica.inflight == 0 and replica.state == "draining":
            event = self._drained.get(replica.id)
            if event is not None:
                event.set()

    def discard(self, replica: Replica, reason: str) -> None:
        """Stop routing to a replica that refused a connection (dead but not yet reaped)."""
        if replica.state in ("ready", "starting", "recovering"):
            replica.state = "dead"
            self._forget(replica, reason)
            self._spawn(self._stop(replica))

    def suspect(self, replica: Replica, reason: str) -> None:
        """Stop routing to a live replica that may not be ready (a worker died, or it answered "loading").

        Synchronous, so no request picks it after this call; it is routed to again only once
        ``/_/ready`` answers 200 (or stopped if that does not happen within the cold start timeout).
        """
        if replica.state != "ready" or self.closed:
            return
        watcher = self._watchers.get(replica.id)
        if watcher is None or watcher.done():
            return  # its exit is being handled by the watcher
        replica.state = "recovering"
        self._update_gauges()
        self.metrics.recovering(reason)
        log.warning("function %s: replica %s out of rotation until ready again (%s)", self.name, replica.id, reason)
        task = self._recoveries[replica.id] = self._spawn(self._recover(replica, watcher))
        task.add_done_callback(self._recovery_done)

    def _recovery_done(self, task: asyncio.Task[Replica]) -> None:
        if not task.cancelled() and task.exception() is not None:  # retrieved here: waiters may be none
            log.warning("function %s: replica recovery failed: %s", self.name, task.exception())

    def _pending_recovery(self) -> asyncio.Task[Replica] | None:
        for task in self._recoveries.values():
            if not task.done():
                return task
        return None

    async def _recover(self, replica: Replica, watcher: asyncio.Task[Any]) -> Replica:
        try:
            await self._wait_ready(replica, watcher, "recovering", time.monotonic(), observe=False)
            if replica.state != "recovering":
                raise StartError(f"function '{self.name}' replica {replica.id} left recovery ({replica.state})",
                                 function=self.name)
        except BaseException:
            if replica.state == "recovering":
                replica.state = "dead"
                self._forget(replica, "unready")
                await asyncio.shield(self._stop(replica))
            raise
        finally:
            self._recoveries.pop(replica.id, None)
        replica.state = "ready"
        replica.ready_at = replica.last_used = time.monotonic()
        self._update_gauges()
        log.info("function %s: replica %s ready again", self.name, replica.id)
        self._after_ready(replica)
        return replica

    def _start_error(self, replica: Replica) -> HydroError:
        """Why a replica did not start: a 503 when its model store was unreachable (a retry may work), else 502.

        The runtime's last output line names the exception class (``...StoreError: cannot reach ...``);
        the full cause stays in the log, the caller is told the store is unavailable.
        """
        cause = self.provider.exit_cause(replica)
        if "StoreError" in cause:
            log.warning("function %s: replica %s could not load its model from the store: %s", self.name,
                        replica.id, cause)
            return ServiceUnavailable(f"function '{self.name}' cannot load its model: the model store is "
                                      "unavailable; retry later", retry_after=5, function=self.name,
                                      details={"cause": "model_store"})
        return StartError(f"function '{self.name}' failed to start: {cause}", function=self.name)

    def _not_ready_in_time(self) -> ServiceUnavailable:
        timeout = self.config.cold_start_timeout
        return ServiceUnavailable(f"function '{self.name}' did not become ready within {timeout:g}s; retry later",
                                  retry_after=min(30.0, max(1.0, timeout / 4)), function=self.name)

    # ---- starting -----------------------------------------------------------------------------------

    def _pending_start(self) -> asyncio.Task[Replica] | None:
        for task, generation in self._starts.items():
            if generation == self.generation and not task.done():
                return task
        return None

    def _ensure_start(self, reason: str) -> asyncio.Task[Replica]:
        """The one start that every request from zero waits on (created if none is under way)."""
        task = self._pending_start()
        if task is None:
            task = self._start_background(reason)
            if reason == "cold":
                self.metrics.cold_starts.inc()
        return task

    def _start_background(self, reason: str) -> asyncio.Task[Replica]:
        generation = self.generation
        task = asyncio.get_running_loop().create_task(self._start_replica(reason, generation))
        self._starts[task] = generation
        task.add_done_callback(self._start_done)
        return task

    def _start_done(self, task: asyncio.Task[Replica]) -> None:
        self._starts.pop(task, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.warning("function %s: replica start failed: %s", self.name, exc)

    async def _start_replica(self, reason: str, generation: int) -> Replica:
        self.metrics.started(reason)
        replica = await self.provider.start_replica(self.spec, generation)
        # a replica on a unix socket gets its own keep-alive pool, sized to the function's concurrency
        replica.session = replica_session(replica, self.spec.scale.concurrency) if replica.socket else self.session
        replica.client = ReplicaClient(replica.endpoint, replica.socket, replica.pid)  # the invocation hop's own pool
        self.replicas.append(replica)
        self._update_gauges()
        exit_task = self._watchers[replica.id] = self._spawn(self._watch(replica))
        try:
            await self._wait_ready(replica, exit_task, "starting", replica.started_at)
        except BaseException:
            if replica.state == "starting":
                replica.state = "dead"
                self._forget(replica, "start_failed")
                await asyncio.shield(self._stop(replica))
            raise
        if replica.state != "starting":  # died between the last probe and now
            raise self._start_error(replica)
        replica.state = "ready"
        replica.ready_at = replica.last_used = time.monotonic()
        self._update_gauges()
        log.info("function %s: replica %s ready in %.3fs (%s)", self.name, replica.id,
                 replica.ready_at - replica.started_at, reason)
        self._after_ready(replica)
        return replica

    async def _probe(self, replica: Replica, path: str) -> int | None:
        session = replica.session or (None if replica.socket else self.session)
        if session is None:  # stopped meanwhile: its pool is closed
            return None
        try:
            async with session.get(replica.endpoint + path, timeout=PROBE_TIMEOUT) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def _wait_ready(self, replica: Replica, exit_task: asyncio.Task[Any], state: str, since: float,
                          observe: bool = True) -> None:
        """Poll health (process up) then readiness (model loaded), fast at first, backing off; bounded.

        ``state`` is what the replica must stay in meanwhile ("starting", or "recovering" after a
        worker crash); ``observe`` records the cold start phases (a recovery is not a cold start).
        """
        deadline = since + self.config.cold_start_timeout
        delay = FIRST_POLL
        healthy_at: float | None = None
        while True:
            if exit_task.done() or replica.state != state:
                raise self._start_error(replica)
            if healthy_at is None:
                if await self._probe(replica, "/_/health") == 200:
                    healthy_at = time.monotonic()
                    if observe:
                        self.metrics.process_start.observe(healthy_at - since)
                    continue
            # ?wait=1: the runtime holds the probe until the model is loaded, so readiness is seen at once
            elif await self._probe(replica, "/_/ready?wait=1") == 200:
                if observe:
                    self.metrics.model_load.observe(time.monotonic() - healthy_at)
                return
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"function '{self.name}' did not become ready within {self.config.cold_start_timeout:g}s "
                    f"({'model still loading' if healthy_at else 'server not answering'}); retry later",
                    retry_after=min(30.0, max(1.0, self.config.cold_start_timeout / 4)), function=self.name)
            await asyncio.wait({exit_task}, timeout=delay)
            delay = min(delay * 1.5, MAX_POLL)

    def _after_ready(self, replica: Replica) -> None:
        """A new generation is serving: drain the old one (the swap of a redeploy), and stop extras."""
        if self.closed:
            self._spawn(self.drain(replica, "removed"))
            return
        if replica.generation == self.generation:
            for old in self.replicas:
                if old.generation < self.generation and old.state == "ready":
                    self._spawn(self.drain(old, "redeploy"))
        elif any(r.state == "ready" and r.generation == self.generation for r in self.replicas):
            self._spawn(self.drain(replica, "redeploy"))

    def maybe_scale_up(self) -> None:
        """Add one replica when every ready one is past ``scale.concurrency`` (one start at a time).

        A replica's load is the gateway's requests in flight plus the direct calls routers reported
        with their leases (gateway/endpoints.py), so a stage called directly scales up too.
        """
        self._maybe_scale_up()

    def _maybe_scale_up(self) -> None:
        """See :meth:`maybe_scale_up`."""
        if self.closed or self._pending_start() is not None:
            return
        if self._active_count() >= self.spec.scale.max:
            return
        now = time.monotonic()  # a router's reported direct load counts while its lease lasts
        ready = [r for r in self.replicas if r.state == "ready"]  # none ready (drained, scaled down): not a load
        if ready and all(r.inflight + (r.direct_inflight if r.leased_until > now else 0)
                         >= self.spec.scale.concurrency for r in ready):
            self._start_background("scale_up")

    def prewarm(self) -> bool:
        """Make sure a replica is (being) started; True when one is already ready."""
        if self.pick() is not None:
            return True
        if not self.closed and self._pending_recovery() is None:
            self._ensure_start("prewarm")
        return False

    # ---- stopping -----------------------------------------------------------------------------------

    async def _watch(self, replica: Replica) -> None:
        """Notice a replica that exits on its own: forget it so the next request starts a fresh one."""
        with contextlib.suppress(asyncio.CancelledError):
            code = await self.provider.wait_exit(replica)
            if replica.state in ("stopping", "stopped", "dead"):
                return
            was = replica.state
            replica.state = "dead"
            log.warning("function %s: replica %s exited unexpectedly while %s (%s)", self.name, replica.id, was,
                        self.provider.exit_cause(replica) if code is not None else "exit status unknown")
            self._forget(replica, "crash")
            await self._stop(replica)  # reap anything left in its process group

    def begin_drain(self, replica: Replica) -> bool:
        """Stop routing new requests to ``replica`` (synchronously, so no request picks it after this)."""
        if replica.state not in ("ready", "starting", "recovering"):
            return False
        replica.state = "draining"
        self._update_gauges()
        return True

    async def drain(self, replica: Replica, reason: str) -> None:
        """Stop taking new requests, let in-flight ones finish (bounded by the timeout), then stop."""
        if self.begin_drain(replica):
            await self.finish_drain(replica, reason)

    async def finish_drain(self, replica: Replica, reason: str) -> None:
        if replica.inflight > 0:
            event = self._drained.setdefault(replica.id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.spec.timeout + 5.0)
        self._drained.pop(replica.id, None)
        leased = replica.leased_until - time.monotonic()
        if leased > 0:  # a router may still call it directly: it drops it at its next lease (gateway/endpoints.py)
            await asyncio.sleep(min(leased, MAX_LEASE_WAIT))
        if replica.state != "draining":  # it crashed meanwhile; the watcher handled it
            return
        replica.state = "stopping"
        self._forget(replica, reason)
        await self._stop(replica)
        log.info("function %s: replica %s stopped (%s)", self.name, replica.id, reason)

    async def _stop(self, replica: Replica) -> None:
        try:
            await self.provider.stop_replica(replica, self.config.stop_grace)
        except Exception:  # a stop must never take the gateway down; the provider's close() is the backstop
            log.exception("function %s: stopping replica %s failed", self.name, replica.id)
        session, replica.session = replica.session, None
        if session is not None and session is not self.session:  # its own unix-socket pool
            await session.close()
        client, replica.client = replica.client, None
        if client is not None:
            await client.close()
        replica.state = "stopped" if replica.state == "stopping" else replica.state

    def _forget(self, replica: Replica, reason: str) -> None:
        self._watchers.pop(replica.id, None)
        if replica in self.replicas:
            self.replicas.remove(replica)
            self.metrics.stopped(reason)
        self._update_gauges()

    def _update_gauges(self) -> None:
        counts: dict[str, int] = {}
        for replica in self.replicas:
            counts[replica.state] = counts.get(replica.state, 0) + 1
        self.metrics.set_replicas(counts)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- periodic and administrative ----------------------------------------------------------------

    def reap(self, now: float) -> None:
        """Stop replicas idle for ``scale.idle`` down to ``scale.min``; keep ``scale.min`` warm."""
        if self.closed:
            return
        scale = self.spec.scale
        ready = [r for r in self.replicas if r.state == "ready"]
        excess = len(ready) - scale.min
        if excess > 0:
            idle = sorted((r for r in ready if r.inflight == 0 and now - r.last_used >= scale.idle),
                          key=lambda r: r.last_used)
            for replica in idle[:excess]:
                if self.begin_drain(replica):
                    self._spawn(self.finish_drain(replica, "idle"))
        self._keep_min(now)

    def _keep_min(self, now: float) -> None:
        active = self._active_count()
        if active >= self.spec.scale.min or now < self._min_retry_at:
            return
        for _ in range(self.spec.scale.min - active):
            task = self._start_background("min")
            task.add_done_callback(self._min_result)

    def _min_result(self, task: asyncio.Task[Replica]) -> None:
        if task.cancelled() or task.exception() is not None:  # back off a crash-looping function
            self._min_retry_at = time.monotonic() + self._min_backoff
            self._min_backoff = min(self._min_backoff * 2, MAX_MIN_BACKOFF)
        else:
            self._min_backoff = 1.0

    async def update(self, deployment: Deployment, generation: int) -> bool:
        """Apply a redeploy; a changed spec gets a new replica, ready before the old ones drain."""
        changed = deployment.fingerprint() != self.deployment.fingerprint()
        self.deployment = deployment
        self.spec = deployment.spec
        self.request_timeout = aiohttp.ClientTimeout(total=self.spec.timeout + 1.0)
        if not changed:
            return False
        self.generation = generation
        await self.provider.deploy(self.spec, generation)
        running = [r for r in self.replicas if r.state in ("ready", "starting", "recovering")]
        wanted = max(self.spec.scale.min, min(len(running), 1))
        for _ in range(wanted):
            self._start_background("redeploy")
        return True

    def _active_count(self) -> int:
        """Ready (or recovering) replicas of the current generation plus starts under way (one replica each)."""
        ready = sum(1 for r in self.replicas if r.state in ("ready", "recovering") and r.generation == self.generation)
        # a start whose task is done already has its replica in ``replicas``: its done-callback, which
        # forgets it, runs one loop turn later, and counting it in between would count that replica twice
        return ready + sum(1 for task, g in self._starts.items() if g == self.generation and not task.done())

    def scale_to(self, replicas: int) -> int:
        """``POST /system/scale-function``: start or drain replicas now (idle reaping still applies later)."""
        target = max(0, min(replicas, self.spec.scale.max))
        count = self._active_count()
        for _ in range(target - count):
            self._start_background("manual")
        if target < count:
            ready = sorted((r for r in self.replicas if r.state == "ready"), key=lambda r: r.inflight)
            for replica in ready[:count - target]:
                if self.begin_drain(replica):
                    self._spawn(self.finish_drain(replica, "manual"))
        return target

    async def close(self, reason: str, drain: bool) -> None:
        """Removal (drain first) or shutdown (stop now): no replica of this function survives."""
        self.closed = True
        for task in list(self._starts):
            task.cancel()
        if self._starts:
            await asyncio.gather(*self._starts, return_exceptions=True)
        replicas = list(self.replicas)
        if drain:
            await asyncio.gather(*(self.drain(r, reason) for r in replicas), return_exceptions=True)
        else:
            for replica in replicas:
                if replica.state in ("ready", "starting", "recovering", "draining"):
                    replica.state = "stopping"
                    self._forget(replica, reason)
            await asyncio.gather(*(self._stop(r) for r in replicas), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        self.replicas.clear()
        self._update_gauges()

    def status(self) -> dict[str, Any]:
        ready = sum(1 for r in self.replicas if r.state == "ready")
        live = sum(1 for r in self.replicas if r.state in ("ready", "starting", "recovering"))
        return {"replicas": live, "availableReplicas": ready, "invocationCount": self.invocations,
                "queued": self.queued, "generation": self.generation,
                "instances": [r.describe() for r in self.replicas]}
