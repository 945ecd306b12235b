"""The router's direct path: stage calls go straight to a warm replica beside it, the gateway stays in charge.

Through the gateway a stage call is two hops (router -> gateway -> replica). When the router runs
beside its stages (the local provider says so with ``HYDRO_ROUTER_DIRECT=1``), it *leases* a
stage's endpoints from the gateway and calls a ready replica itself:

* the lease is ``POST /function/<stage>`` with ``X-Hydro-Endpoints: lease``, sent through the same
  transport as stage calls (so it works over whatever carries them) with the router's own key: the
  gateway answers only a router's internal key scoped to that stage (401/403 otherwise), and only
  with *ready* replicas, newest generation, of a stage the direct path may skip the gateway for (no
  rate limit, no payload sampling: those happen at the gateway's door);
* the lease is short (``ttl``, about a second); a background thread renews the leases in use, and
  each renewal carries the calls made since the last one (``{"calls": {"200": n}, "seconds": s,
  "stages": [{"stage": "2", "shadow": false, "errors": 0, "seconds": [...]}]}``), so the gateway
  counts them as invocations and per-stage series and keeps the replicas from idling to zero while
  the router uses them. A lease not used during its ttl is not renewed: the stage idles normally;
* the router keeps at most ``concurrency`` direct calls in flight per replica (the stage's
  ``scale.concurrency``); beyond that the call goes through the gateway, which queues and scales up;
* any doubt goes to the gateway: no lease yet or no ready replica (a cold stage: the gateway starts
  it), a replica that refuses the connection (it died or was scaled to zero) or answers the runtime's
  "loading" 503 (it never ran the handler): the call is made again through the gateway, the endpoint
  is dropped and the lease renewed. A connection lost mid-call is *not* retried (the stage may have
  run): it is the same 502 as through the gateway.

Direct calls never carry the router's key nor the caller's Authorization: a replica is a stranger.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydro_serving.replica import contract
from hydro_serving.transport import Reply, Transport, TransportError, open_transport
from hydro_serving.transport.http import ConnectRetry

log = logging.getLogger(__name__)

ENDPOINTS_HEADER = contract.ENDPOINTS_HEADER
LEASE_TIMEOUT = 2.0  # seconds a lease call may take (it is a dictionary lookup at the gateway)
RETRY_REFUSED_LEASE = 5.0  # seconds before asking again after the gateway refused a lease (401/403/404)
RETRY_EMPTY_LEASE = 0.25  # seconds before asking again when the stage had no ready replica
TICK = 0.05  # how often the keeper looks for leases to renew
MAX_ENDPOINTS = 64  # replicas of one stage taken from a lease; the gateway is trusted, but stay bounded
MAX_SAMPLES = 4096  # stage latencies per report; beyond, calls are counted but their latency is not sampled


@dataclass(eq=False)
class Endpoint:
    """One ready replica of a stage: its transport (keep-alive pool) and the router's calls in flight."""

    url: str
    concurrency: int
    transport: Transport
    inflight: int = 0
    peak: int = 0  # the most calls in flight since the last report (the gateway scales up on it)


@dataclass
class Lease:
    endpoints: list[Endpoint] = field(default_factory=list)
    renew_at: float = 0.0  # the keeper renews a used lease after this
    expires_at: float = 0.0  # not used after this without a renewal
    used: bool = False  # a call used (or wanted) it since the last renewal
    calls: dict[int, int] = field(default_factory=dict)  # status -> direct calls not yet reported
    seconds: float = 0.0
    stages: dict[tuple[str, bool], StageTally] = field(default_factory=dict)  # (stage index, shadow) -> tally


@dataclass
class StageTally:
    """A pipeline stage's direct calls for the gateway's per-stage series (as if they had passed through it)."""

    seconds: list[float] = field(default_factory=list)  # at most MAX_SAMPLES per report
    errors: int = 0

    def merge(self, other: StageTally) -> None:
        self.seconds.extend(other.seconds[:max(0, MAX_SAMPLES - len(self.seconds))])
        self.errors += other.errors


class DirectPaths:
    """Leases per stage function and the direct calls made with them; thread-safe, one per router."""

    def __init__(self, gateway: Transport, key: str | None, pipeline: str, *, pool_size: int = 16,
                 connect_timeout: float = 0.25, max_response: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 opener: Callable[..., Transport] = open_transport) -> None:
        self.gateway = gateway
        self.key = key
        self.pipeline = pipeline
        self._clock = clock
        self._opener = opener
        self._options: dict[str, Any] = {"pool_size": pool_size, "connect_timeout": connect_timeout,
                                         "retry": ConnectRetry(attempts=0), "max_response": max_response}
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._renewing: set[str] = set()
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    # ---- one call ----------------------------------------------------------------------------

    def call(self, function: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply | None:
        """The replica's reply, or None when the call should go through the gateway instead.

        ``headers`` must hold no credential (the caller strips them). Raises :class:`TransportError`
        for failures that are final (a timeout, a connection lost mid-call, an answer too large).
        """
        endpoint = self._acquire(function)
        if endpoint is None:
            return None
        stage = (headers.get(contract.STAGE_HEADER, ""), headers.get(contract.SHADOW_HEADER) == "true")
        try:
            reply = endpoint.transport.invoke(function, body, headers, timeout)
        except TransportError as err:
            self._release(function, endpoint)
            if err.kind == "connect":  # it died or was stopped: nothing ran, the gateway path runs it
                self._drop(function, endpoint, "refused the connection")
                return None
            if err.kind == "connection_lost":
                self._drop(function, endpoint, "lost the connection")
            self._count(function, stage, 504 if err.kind == "timeout" else 502, 0.0)
            raise
        self._release(function, endpoint)
        if reply.status == 503 and is_loading(reply, function):  # the handler did not run
            self._drop(function, endpoint, "is reloading its model")
            return None
        self._count(function, stage, reply.status, reply.seconds)
        reply.headers.setdefault("x-cold-start", "false")  # a leased replica was ready: never a cold start
        return reply

    def _acquire(self, function: str) -> Endpoint | None:
        now = self._clock()
        with self._lock:
            lease = self._leases.get(function)
            fresh = lease is not None and now < lease.expires_at
            if lease is not None:
                lease.used = True
            if not fresh:
                if function in self._renewing:
                    return None  # another thread is asking: this call goes through the gateway meanwhile
                self._renewing.add(function)
        if not fresh:
            try:
                self._renew(function)  # first use, or unused for a while: ask now (one thread per stage)
            except Exception:  # never fail a call over a lease: it goes through the gateway
                log.exception("router %s: leasing %s failed", self.pipeline, function)
                return None
            finally:
                with self._lock:
                    self._renewing.discard(function)
            self._start_keeper()
        with self._lock:
            lease = self._leases.get(function)
            if lease is None:
                return None
            best = None
            for endpoint in lease.endpoints:
                if endpoint.inflight < endpoint.concurrency and (best is None or endpoint.inflight < best.inflight):
                    best = endpoint
            if best is not None:
                best.inflight += 1
                best.peak = max(best.peak, best.inflight)
            elif lease.endpoints:  # every replica is at its concurrency: say so with the next report
                for endpoint in lease.endpoints:
                    endpoint.peak = max(endpoint.peak, endpoint.concurrency)
            return best

    def _release(self, function: str, endpoint: Endpoint) -> None:
        with self._lock:
            endpoint.inflight -= 1

    def _count(self, function: str, stage: tuple[str, bool], status: int, seconds: float) -> None:
        with self._lock:
            lease = self._leases.get(function)
            if lease is None:
                return
            lease.used = True  # calls to report: the keeper renews it (and so delivers them)
            lease.calls[status] = lease.calls.get(status, 0) + 1
            lease.seconds += seconds
            if stage[0]:
                tally = lease.stages.get(stage)
                if tally is None:
                    tally = lease.stages[stage] = StageTally()
                if len(tally.seconds) < MAX_SAMPLES:
                    tally.seconds.append(seconds)
                if status >= 400:
                    tally.errors += 1

    def _drop(self, function: str, endpoint: Endpoint, why: str) -> None:
        """Stop using one endpoint now, and renew the lease at the keeper's next tick."""
        with self._lock:
            lease = self._leases.get(function)
            if lease is not None and endpoint in lease.endpoints:
                lease.endpoints = [e for e in lease.endpoints if e is not endpoint]
                lease.renew_at = 0.0
                lease.used = True
        log.info("router %s: replica %s of %s %s; calling it through the gateway", self.pipeline, endpoint.url,
                 function, why)

    # ---- leases ------------------------------------------------------------------------------

    def _renew(self, function: str) -> None:
        """Ask the gateway for ``function``'s ready replicas, reporting the direct calls made since last time."""
        with self._lock:
            old = self._leases.get(function)
            calls, seconds, stages = (old.calls, old.seconds, old.stages) if old is not None else ({}, 0.0, {})
            inflight = {e.url: e.peak for e in old.endpoints if e.peak} if old is not None else {}
            if old is not None:
                old.calls, old.seconds, old.stages, old.used = {}, 0.0, {}, False
                for endpoint in old.endpoints:
                    endpoint.peak = endpoint.inflight
        report = {"calls": {str(k): v for k, v in calls.items()}, "seconds": round(seconds, 6),
                  "pipeline": self.pipeline,
                  "stages": [{"stage": index, "shadow": shadow, "errors": tally.errors,
                              "seconds": [round(x, 6) for x in tally.seconds]}
                             for (index, shadow), tally in stages.items()],
                  "inflight": inflight}
        headers = {ENDPOINTS_HEADER: "lease", "Content-Type": "application/json"}
        if self.key is not None:
            headers["Authorization"] = f"Bearer {self.key}"
        answer: Any = None
        try:
            reply = self.gateway.invoke(function, json.dumps(report).encode(), headers, LEASE_TIMEOUT)
            if reply.status == 200:
                answer = json.loads(reply.body)
            else:
                log.warning("router %s: the gateway refused a lease of %s (%d); calls go through it",
                            self.pipeline, function, reply.status)
        except (TransportError, ValueError, UnicodeDecodeError) as exc:
            log.info("router %s: no lease of %s (%s); calls go through the gateway", self.pipeline, function, exc)
        now = self._clock()
        with self._lock:
            lease = self._leases.setdefault(function, Lease())
            if answer is None or not isinstance(answer, dict):
                if calls:  # not delivered: keep them for the next renewal
                    for status, n in calls.items():
                        lease.calls[status] = lease.calls.get(status, 0) + n
                    lease.seconds += seconds
                    for where, tally in stages.items():
                        lease.stages.setdefault(where, StageTally()).merge(tally)
                lease.endpoints = []
                lease.renew_at = lease.expires_at = now + RETRY_REFUSED_LEASE
                return
            ttl = _number(answer.get("ttl"), 1.0, 0.05, 60.0)
            current = {e.url: e for e in lease.endpoints}
            endpoints = []
            for item in (answer.get("endpoints") or [])[:MAX_ENDPOINTS]:
                if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                    continue
                url = item["url"].rstrip("/")
                concurrency = int(_number(item.get("concurrency"), 1, 1, 10_000))
                endpoint = current.get(url)
                if endpoint is None:
                    try:  # a replica's root, whatever the function: the fragment is never sent
                        transport = self._opener(url + "/#{name}", {}, **self._options)
                    except Exception as exc:  # a scheme this router has no transport for: the gateway path
                        log.info("router %s: no transport for %s (%s)", self.pipeline, url, exc)
                        continue
                    endpoint = Endpoint(url, concurrency, transport)
                endpoint.concurrency = concurrency
                endpoints.append(endpoint)
            for gone in set(current) - {e.url for e in endpoints}:
                if current[gone].inflight == 0:
                    current[gone].transport.close()
            lease.endpoints = endpoints
            wait = ttl if endpoints else min(ttl, RETRY_EMPTY_LEASE)
            lease.renew_at = now + wait
            lease.expires_at = now + (3 * ttl if endpoints else wait)

    def _start_keeper(self) -> None:
        with self._lock:
            if self._keeper is not None or self._stop.is_set():
                return
            self._keeper = threading.Thread(target=self._keep, name=f"{self.pipeline}-leases", daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        """Renew leases that were used since their last renewal (and so deliver their counts)."""
        while not self._stop.wait(TICK):
            now = self._clock()
            with self._lock:
                due = [fn for fn, lease in self._leases.items()
                       if lease.used and now >= lease.renew_at and fn not in self._renewing]
                self._renewing.update(due)
            for function in due:
                try:
                    self._renew(function)
                except Exception:  # a bug here must not stop the renewals of the other stages
                    log.exception("router %s: renewing the lease of %s failed", self.pipeline, function)
                finally:
                    with self._lock:
                        self._renewing.discard(function)

    def flush(self) -> None:
        """Report every call not yet reported (at close, and for tests that read the gateway's counts)."""
        with self._lock:
            pending = [fn for fn, lease in self._leases.items() if lease.calls]
        for function in pending:
            self._renew(function)

    def close(self) -> None:
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
        try:
            self.flush()
        except Exception:  # closing must not fail on a gateway that is gone
            log.info("router %s: the last direct-call counts could not be reported", self.pipeline)
        with self._lock:
            for lease in self._leases.values():
                for endpoint in lease.endpoints:
                    endpoint.transport.close()
            self._leases.clear()


def is_loading(reply: Reply, function: str) -> bool:
    """The runtime's readiness 503 ("function 'x' is loading"): the request never reached the handler."""
    if reply.headers.get(contract.READY_HEADER.lower(), "").lower() == "false":
        return True
    if len(reply.body) > 4096 or not reply.body.lstrip().startswith(b"{"):
        return False
    try:
        data = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        return False
    return (isinstance(data, dict) and data.get("code") == "unavailable" and data.get("function") == function
            and data.get("details") == {"status": "loading"})


def _number(value: Any, default: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return default
    return min(max(float(value), low), high)
