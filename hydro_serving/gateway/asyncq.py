"""The gateway's durable async queue: accepted calls run later, are retried, and their result is called back.

``POST /async-function/<name>`` stores the call (:mod:`~hydro_serving.gateway.asyncstore`) and answers
202; this module runs it. One dispatcher task per gateway:

* **bounded concurrency per function**: at most ``scale.max * scale.concurrency`` attempts of one
  function run at once, so a burst scales the function up to ``scale.max`` replicas (the pool adds one
  when every ready replica is at ``scale.concurrency``) and no further; the rest wait in SQLite, not in
  memory or in a replica's queue;
* **retries**: an attempt that ends in 408, 429, a 5xx, a connection error or a timeout is tried again
  after a wait drawn with full jitter from ``[0, min(backoff_max, backoff_min * 2**(attempt-1))]``
  (at least the answer's ``Retry-After``, itself capped at ``backoff_max``), up to ``async.retries``
  more times; then the call is **dead** (the dead-letter queue: listed, redriven, purged by an admin).
  Any other answer is final: 2xx is ``succeeded``, another status ``failed`` (the function said no:
  retrying would say no again);
* **callbacks**: a final call with ``X-Callback-Url`` is POSTed there (its own attempts, the same
  retry rule, ``async.callback_retries``) with ``X-Call-Id``, ``X-Duration-Seconds``,
  ``X-Function-Status`` (OpenFaaS's headers) and the function's body;
* **crash**: a call ``running`` when the gateway died is queued again at the next start and runs
  again (at-least-once: the function may see it twice; ``X-Call-Id`` lets it notice);
* **retention**: results are deleted ``async.retention`` after they end (dead calls stay until
  redriven or purged).

Attempts go straight to the function's pool (as ``/function/<name>`` does), not back through the
gateway's HTTP port: the caller's rate limit and credentials were checked once, at submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from multidict import CIMultiDict
from prometheus_client import Counter, Gauge

from hydro_serving.errors import HydroError, TooManyRequests
from hydro_serving.gateway.asyncstore import AsyncStore, Outcome, Request
from hydro_serving.gateway.proxy import HOP_BY_HOP, replica_is_loading, upstream_url
from hydro_serving.stack import AsyncPolicy

if TYPE_CHECKING:
    from hydro_serving.gateway.core import Gateway
    from hydro_serving.gateway.scaler import FunctionPool

log = logging.getLogger("hydro.gateway.async")

CALL_ID_HEADER = "X-Call-Id"
CALLBACK_HEADER = "X-Callback-Url"
DEFAULT_POLICY = AsyncPolicy()
CALLBACK_CONCURRENCY = 32
CALLBACK_TIMEOUT = 30.0
MAX_CALLBACK_URL = 2048
UNRECORDED_RETRY = 5.0  # seconds before a call whose attempt could not be recorded (state disk) is tried again
# request headers never stored with a call: hop-by-hop ones, the caller's credentials (the gateway's own
# or meant for the function: neither is kept at rest), and the async headers the gateway sets itself
NOT_STORED = HOP_BY_HOP | {"authorization", "x-callback-url", "x-call-id", "cookie"}


@dataclass(frozen=True)
class AsyncSettings:
    """Read once at start from the environment (``HYDRO_ASYNC_*``), never per request."""

    callback_hosts: frozenset[str] = frozenset()  # HYDRO_ASYNC_CALLBACK_HOSTS: when set, the only hosts called back
    max_pending: int = 100_000  # HYDRO_ASYNC_MAX_PENDING: queued+running calls per function (beyond: 429)
    fsync: bool = False  # HYDRO_ASYNC_FSYNC=1: every commit fsyncs (survives power loss, not only a crash)
    purge_interval: float = 60.0  # HYDRO_ASYNC_PURGE_INTERVAL: seconds between retention passes

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AsyncSettings:
        env = os.environ if env is None else env
        hosts = frozenset(h.strip().lower() for h in env.get("HYDRO_ASYNC_CALLBACK_HOSTS", "").split(",") if h.strip())
        return cls(callback_hosts=hosts,
                   max_pending=int(env.get("HYDRO_ASYNC_MAX_PENDING", "100000")),
                   fsync=env.get("HYDRO_ASYNC_FSYNC", "").strip().lower() in ("1", "true", "yes", "on"),
                   purge_interval=float(env.get("HYDRO_ASYNC_PURGE_INTERVAL", "60")))


def is_retryable(status: int | None) -> bool:
    """Worth another attempt: nothing answered, 408, 429 or a 5xx."""
    return status is None or status in (408, 429) or status >= 500


def backoff_delay(policy: AsyncPolicy, attempt: int, retry_after: float | None,
                  rand: random.Random | None = None) -> float:
    """Seconds before the next attempt after ``attempt`` (1-based) failed: full jitter, at least Retry-After.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): a burst that failed together
    does not come back together. ``Retry-After`` is a floor, capped at ``backoff_max`` so a hostile
    function cannot park a call for a year.
    """
    cap = min(policy.backoff_max, policy.backoff_min * (2 ** max(0, attempt - 1)))
    delay = (rand or random).uniform(0, cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.backoff_max))
    return delay


def parse_retry_after(headers: list[tuple[str, str]]) -> float | None:
    for key, value in headers:
        if key.lower() == "retry-after":
            try:
                seconds = float(value.strip())
            except ValueError:
                return None  # an HTTP date: ignored, the backoff applies
            return seconds if seconds >= 0 else None
    return None


class AsyncQueue:
    """Runs the calls of :class:`AsyncStore` for a :class:`Gateway`; started and stopped with it."""

    def __init__(self, gateway: Gateway, settings: AsyncSettings | None = None) -> None:
        self.gateway = gateway
        self.settings = settings or AsyncSettings.from_env()
        self.store: AsyncStore | None = None
        self._ready: dict[str, deque[str]] = {}  # function -> call ids due now, in order
        self._delayed: list[tuple[float, int, str, str, str]] = []  # (due, seq, kind, id, function)
        self._seq = 0
        self._inflight: dict[str, int] = {}
        self._pending: dict[str, int] = {}  # function -> queued + running (the submit cap)
        self._callbacks: deque[str] = deque()
        self._callbacks_inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._purge_task: asyncio.Task[None] | None = None
        registry = gateway.metrics.registry
        self.m_submitted = Counter("hydro_gateway_async_submitted", "Async calls accepted (202)", ["function"],
                                   registry=registry)
        self.m_attempts = Counter("hydro_gateway_async_attempts", "Async call attempts by how they ended "
                                  "(succeeded, failed, retry, dead)", ["function", "outcome"], registry=registry)
        self.m_callbacks = Counter("hydro_gateway_async_callbacks", "Callback deliveries by how they ended "
                                   "(delivered, retry, failed)", ["outcome"], registry=registry)
        self.m_pending = Gauge("hydro_gateway_async_pending", "Async calls queued or running", ["function"],
                               registry=registry)

    # ---- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.store = AsyncStore(self.gateway.config.state_dir, fsync=self.settings.fsync)
        self._wake = asyncio.Event()
        queued, callbacks = self.store.recover()
        for call_id, function, next_at in queued:
            self._pending[function] = self._pending.get(function, 0) + 1
            self.m_pending.labels(function).inc()
            self._schedule("call", call_id, function, next_at)
        for call_id, next_at in callbacks:
            self._schedule("callback", call_id, "", next_at)
        if queued or callbacks:
            log.info("async queue: %d call(s) and %d callback(s) resumed", len(queued), len(callbacks))
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._dispatch_loop())
        self._purge_task = loop.create_task(self._purge_loop())

    async def stop(self) -> None:
        """Cancel attempts in flight (they run again at the next start) and close the store."""
        for task in (self._loop_task, self._purge_task, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._loop_task, self._purge_task, *self._tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.requeue_running()
            self.store.close()
            self.store = None

    # ---- submit -------------------------------------------------------------------------------------

    def submit(self, function: str, method: str, path: str, headers: Mapping[str, str] | CIMultiDict[str],
               body: bytes, callback: str | None, key_id: str | None) -> str:
        """Store the call (committed before this returns) and queue it; returns its id."""
        assert self.store is not None
        pending = self._pending.get(function, 0)
        if pending >= self.settings.max_pending:
            raise TooManyRequests(f"function '{function}' already has {pending} async calls waiting "
                                  "(HYDRO_ASYNC_MAX_PENDING); retry later", retry_after=5, field="async",
                                  function=function)
        call_id = str(uuid.uuid4())
        kept = [(k, v) for k, v in headers.items() if k.lower() not in NOT_STORED]
        now = time.time()
        self.store.insert(call_id, function, method, path, kept, body, callback, key_id, now)
        self._pending[function] = pending + 1
        self.m_submitted.labels(function).inc()
        self.m_pending.labels(function).inc()
        self._schedule("call", call_id, function, now)
        return call_id

    def redriven(self, calls: list[tuple[str, str]]) -> None:
        """Calls the store just put back to ``queued`` (redrive): run them."""
        now = time.time()
        for call_id, function in calls:
            self._pending[function] = self._pending.get(function, 0) + 1
            self.m_pending.labels(function).inc()
            self._schedule("call", call_id, function, now)

    # ---- scheduling ---------------------------------------------------------------------------------

    def _schedule(self, kind: str, call_id: str, function: str, due: float) -> None:
        if due <= time.time():
            if kind == "call":
                self._ready.setdefault(function, deque()).append(call_id)
            else:
                self._callbacks.append(call_id)
        else:
            self._seq += 1
            heapq.heappush(self._delayed, (due, self._seq, kind, call_id, function))
        if self._wake is not None:
            self._wake.set()

    def _limit(self, function: str) -> int:
        pool = self.gateway.pools.get(function)
        if pool is None:
            return 1
        return max(1, pool.spec.scale.max * pool.spec.scale.concurrency)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("async queue: a task failed: %r", task.exception())
        if self._wake is not None:
            self._wake.set()

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            now = time.time()
            while self._delayed and self._delayed[0][0] <= now:
                _, _, kind, call_id, function = heapq.heappop(self._delayed)
                if kind == "call":
                    self._ready.setdefault(function, deque()).append(call_id)
                else:
                    self._callbacks.append(call_id)
            for function, ready in list(self._ready.items()):
                limit = self._limit(function)
                while ready and self._inflight.get(function, 0) < limit:
                    self._inflight[function] = self._inflight.get(function, 0) + 1
                    self._spawn(self._run(ready.popleft(), function))
                if not ready:
                    del self._ready[function]
            while self._callbacks and self._callbacks_inflight < CALLBACK_CONCURRENCY:
                self._callbacks_inflight += 1
                self._spawn(self._deliver(self._callbacks.popleft()))
            timeout = max(0.0, self._delayed[0][0] - time.time()) if self._delayed else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_interval)
            if self.store is not None:
                try:
                    purged = self.store.purge_expired(time.time())
                except HydroError as exc:
                    log.warning("async queue: retention pass failed: %s", exc.message)
                    continue
                if purged:
                    log.info("async queue: %d call(s) past their retention purged", purged)

    # ---- one attempt --------------------------------------------------------------------------------

    async def _run(self, call_id: str, function: str) -> None:
        try:
            await self._attempt(call_id, function)
        except Exception as exc:  # e.g. the state disk is full: the call must not stay "running" until a restart
            log.error("async call %s of %s: attempt not recorded (%s); retried in %gs", call_id, function, exc,
                      UNRECORDED_RETRY)
            with contextlib.suppress(Exception):
                assert self.store is not None
                self.store.requeue(call_id)
            self._schedule("call", call_id, function, time.time() + UNRECORDED_RETRY)
        finally:
            self._inflight[function] -= 1
            if not self._inflight[function]:
                del self._inflight[function]

    def _policy(self, function: str) -> AsyncPolicy:
        pool = self.gateway.pools.get(function)
        return (pool.spec.async_policy if pool is not None else None) or DEFAULT_POLICY

    async def _attempt(self, call_id: str, function: str) -> None:
        store = self.store
        assert store is not None
        request = store.request(call_id)
        if request is None or request.status != "queued":  # purged or redriven meanwhile
            return
        attempt = store.start_attempt(call_id, time.time())
        if not attempt:
            return
        pool = self.gateway.pools.get(function)
        if pool is None:
            outcome = Outcome(None, [], b"", f"function '{function}' is not deployed (removed after the call was "
                                             "accepted?); retried until it is deployed again or retries run out")
        else:
            outcome = await self._call(pool, request, attempt)
        policy = self._policy(function)
        now = time.time()
        if is_retryable(outcome.status) and attempt <= policy.retries:
            delay = backoff_delay(policy, attempt, outcome.retry_after)
            store.retry_later(call_id, outcome, now + delay)
            log.info("async call %s of %s: attempt %d ended %s; retry in %.2fs", call_id, function, attempt,
                     outcome.status or outcome.error, delay)
            self.m_attempts.labels(function, "retry").inc()
            self._schedule("call", call_id, function, now + delay)
            return
        if outcome.status is not None and 200 <= outcome.status < 300:
            status = "succeeded"
        elif is_retryable(outcome.status):
            status = "dead"
            log.warning("async call %s of %s is dead after %d attempt(s): %s", call_id, function, attempt,
                        outcome.error or f"status {outcome.status}")
        else:
            status = "failed"
        callback = store.callback_row(call_id)
        has_callback = bool(callback and callback["callback"])
        expires = None if status == "dead" else now + policy.retention
        store.finish(call_id, status, outcome, now, expires, has_callback)
        self._pending[function] = max(0, self._pending.get(function, 0) - 1)
        self.m_pending.labels(function).dec()
        self.m_attempts.labels(function, status).inc()
        if has_callback:
            self._schedule("callback", call_id, "", now)

    async def _call(self, pool: FunctionPool, request: Request, attempt: int) -> Outcome:
        """One attempt through the function's pool: a replica from it (cold start included), the bytes sent."""
        gw = self.gateway
        assert gw.session is not None
        headers: CIMultiDict[str] = CIMultiDict(request.headers)
        headers[CALL_ID_HEADER] = request.id
        headers["X-Request-Id"] = request.id
        headers["X-Hydro-Async-Attempt"] = str(attempt)
        started = time.perf_counter()
        status: int | None = None
        try:
            try:
                replica, _, _ = await pool.acquire()
            except HydroError as exc:  # queue full (429), not ready in time (503), start failed (5xx), removed
                status = None if exc.status == 404 else exc.status  # removed meanwhile: retried, as if unreachable
                return Outcome(status, [], b"", exc.message, parse_retry_after(list(exc.headers.items())))
            try:
                url = upstream_url(replica.endpoint, request.path, 0)
                session = replica.session or gw.session  # a unix-socket replica's own pool, else the shared TCP one
                if replica.socket and session is gw.session:  # stopped while picked: as if unreachable
                    return Outcome(None, [], b"", "the replica stopped before the call was sent")
                async with session.request(request.method, url, headers=headers, data=request.body,
                                           allow_redirects=False, timeout=pool.request_timeout) as upstream:
                    data = await upstream.read()
                    status = upstream.status
                    out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP]
                    if status == 503 and replica_is_loading(upstream.headers, data, pool.name):
                        pool.suspect(replica, "loading")
                    return Outcome(status, out, data, None if status < 400 else f"the function answered {status}",
                                   parse_retry_after(out))
            except aiohttp.ClientConnectorError:
                pool.discard(replica, "unreachable")
                return Outcome(None, [], b"", "the replica refused the connection")
            except TimeoutError:
                return Outcome(None, [], b"", f"the function did not answer within {pool.spec.timeout:g}s")
            except aiohttp.ClientError as exc:
                if gw.provider.is_alive(replica):
                    pool.suspect(replica, "disconnected")
                return Outcome(None, [], b"", f"the connection to the replica was lost ({type(exc).__name__})")
            finally:
                pool.release(replica)
        finally:
            pool.invocations += 1
            pool.metrics.invoked(status or 502, time.perf_counter() - started)

    # ---- callbacks ----------------------------------------------------------------------------------

    async def _deliver(self, call_id: str) -> None:
        try:
            await self._deliver_once(call_id)
        finally:
            self._callbacks_inflight -= 1

    async def _deliver_once(self, call_id: str) -> None:
        store = self.store
        gw = self.gateway
        assert store is not None and gw.session is not None
        row = store.callback_row(call_id)
        if row is None or row["callback_state"] != "pending" or not row["callback"]:
            return
        policy = self._policy(row["function"])
        retries = policy.callback_retries if policy.callback_retries is not None else policy.retries
        headers = callback_headers(row)
        body = row["response_body"]
        if row["status"] == "dead" and not body:
            body = json.dumps({"error": row["error"] or "the call failed", "code": "dead", "callId": call_id}).encode()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            async with gw.session.post(row["callback"], headers=headers, data=body, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT)) as response:
                await response.read()
                status = response.status
                retry_after = parse_retry_after(list(response.headers.items()))
        except TimeoutError:
            error = f"the callback did not answer within {CALLBACK_TIMEOUT:g}s"
        except (aiohttp.ClientError, ValueError) as exc:
            error = f"the callback failed: {type(exc).__name__}: {str(exc)[:200]}"
        attempt = row["callback_attempts"] + 1
        if status is not None and 200 <= status < 300:
            store.callback_attempted(call_id, "delivered", status, None, None)
            self.m_callbacks.labels("delivered").inc()
            return
        error = error or f"the callback answered {status}"
        if is_retryable(status) and attempt <= retries:
            due = time.time() + backoff_delay(policy, attempt, retry_after)
            store.callback_attempted(call_id, "pending", status, error, due)
            self.m_callbacks.labels("retry").inc()
            self._schedule("callback", call_id, "", due)
            return
        log.warning("async call %s: callback to %s given up after %d attempt(s): %s", call_id, row["callback"],
                    attempt, error)
        store.callback_attempted(call_id, "failed", status, error, None)
        self.m_callbacks.labels("failed").inc()


def callback_headers(row: Mapping[str, Any]) -> dict[str, str]:
    """OpenFaaS's callback headers plus the function's content type and Hydro's status of the call."""
    headers = {k: v for k, v in row["response_headers"] if k.lower() in ("content-type", "content-encoding")}
    if "Content-Type" not in headers and "content-type" not in {k.lower() for k in headers}:
        headers["Content-Type"] = "application/json" if row["status"] == "dead" else "application/octet-stream"
    started, finished = row["started_at"] or row["submitted_at"], row["finished_at"] or time.time()
    headers.update({
        CALL_ID_HEADER: row["id"],
        "X-Duration-Seconds": f"{max(0.0, finished - started):.6f}",
        "X-Function-Status": str(row["response_status"] or 502),
        "X-Function-Name": row["function"],
        "X-Hydro-Async-Status": row["status"],
        "X-Hydro-Async-Attempts": str(row["attempts"]),
    })
    return headers
