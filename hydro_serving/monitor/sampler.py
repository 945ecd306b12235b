"""Payload sampling on the gateway's request path: a few dictionary lookups and a bounded queue.

Why the gateway and not the runtime: the gateway sees every function (routers and stages alike),
already holds both bodies as bytes, and is one process with one state directory; a runtime would
have to ship rows out of a sandbox that must not reach the gateway's state. Nothing is decoded
here: :meth:`Sampler.offer` appends references to the bytes the gateway already has to a
bounded deque and returns; the monitor's worker decodes later. A full queue drops the sample and
counts it; a response is never delayed.

**Request ids.** ``X-Request-Id`` if the caller sent one, else the ``traceparent`` trace id, else a
new one; the response carries it in ``X-Request-Id`` (what ``POST /system/feedback/<fn>`` joins
on). When the caller sent no ``traceparent`` the gateway forwards one whose trace id derives from
the request id, so a router's stage calls carry the same trace and every stage samples exactly the
requests the pipeline sampled: the decision is a hash of the trace id against the function's
``monitoring.sample``. ``X-Hydro-Monitor: off`` opts a request out (the router forwards it).
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REQUEST_ID_HEADER = "X-Request-Id"
OPT_OUT_HEADER = "X-Hydro-Monitor"
TIMINGS_HEADER = "X-Hydro-Stage-Timings"
OPT_OUT_VALUES = frozenset({"off", "0", "false", "no"})
DEFAULT_QUEUE = 10_000
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024  # bodies held by queued samples, at most (a few huge bodies cannot hoard memory)
MAX_REQUEST_ID = 128
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")  # the gateway's rule too (gateway/requestid.py)


def trace_id_for(request_id: str) -> str:
    """The trace id a request id travels under: itself when it is one, else 32 hex of its blake2b."""
    if _HEX32.match(request_id) and request_id != "0" * 32:
        return request_id
    return hashlib.blake2b(request_id.encode(), digest_size=16).hexdigest()


def sample_point(trace_id: str) -> float:
    """Where a trace falls in [0, 1): the same for every stage and every gateway replica."""
    return int(trace_id[:13], 16) / float(1 << 52)


@dataclass(frozen=True, slots=True)
class Tap:
    """What the gateway learns about one request before forwarding it."""

    request_id: str
    trace_id: str
    traceparent: str | None  # to add to the forwarded request (the caller sent none)
    opted_out: bool


@dataclass(frozen=True, slots=True)
class Offered:
    """One sampled exchange, as raw as the gateway had it."""

    ts: float
    function: str
    request_id: str
    trace_id: str
    request: bytes
    response: bytes
    status: int
    timings: str | None
    spec: Any  # the function's FunctionSpec at the time of the request


def tap(headers: Mapping[str, str]) -> Tap:
    """The request id, trace id and the ``traceparent`` to forward; never raises on hostile headers."""
    opted_out = headers.get(OPT_OUT_HEADER, "").strip().lower() in OPT_OUT_VALUES
    given = headers.get(REQUEST_ID_HEADER)
    if given is not None and not _SAFE_ID.match(given):
        given = None  # not an id we can hand back in a header: replaced, not trusted
    parent = headers.get("traceparent")
    trace = parent[3:35] if parent and len(parent) >= 55 and parent[2] == "-" and parent[35] == "-" else None
    if trace is not None and (not _HEX32.match(trace) or trace == "0" * 32):
        trace = None
    if trace is not None:
        return Tap(given or trace, trace, None, opted_out)
    if given is None:
        raw = os.urandom(24).hex()
        trace, span = raw[:32], raw[32:]
        return Tap(trace, trace, f"00-{trace}-{span}-01", opted_out)
    trace = trace_id_for(given)
    return Tap(given, trace, f"00-{trace}-{os.urandom(8).hex()}-01", opted_out)


class Sampler:
    """The bounded queue between the request path and the monitor's worker."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE, max_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.queue: collections.deque[Offered] = collections.deque()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.offered: collections.Counter[str] = collections.Counter()
        self._wake: Any = None  # an asyncio.Event set when the queue goes from empty to not empty

    def wants(self, spec: Any, t: Tap) -> bool:
        monitoring = spec.monitoring
        if monitoring is None or t.opted_out:
            return False
        rate = monitoring.sample
        return rate >= 1.0 or (rate > 0.0 and sample_point(t.trace_id) < rate)

    def offer(self, t: Tap, spec: Any, request: bytes, response: bytes, status: int,
              timings: str | None = None) -> bool:
        """Queue one exchange if the function samples it; False when not sampled or dropped. O(1), no I/O."""
        if not self.wants(spec, t):
            return False
        name = spec.name
        size = len(request) + len(response)
        if len(self.queue) >= self.maxsize or self.queued_bytes + size > self.max_bytes:
            self.dropped[name] += 1
            return False
        self.queued_bytes += size
        self.queue.append(Offered(time.time(), name, t.request_id, t.trace_id, request, response, status,
                                  timings, spec))
        self.offered[name] += 1
        if self._wake is not None and len(self.queue) == 1:
            self._wake.set()
        return True

    def drain(self, limit: int = 1000) -> list[Offered]:
        out = []
        while self.queue and len(out) < limit:
            item = self.queue.popleft()
            self.queued_bytes -= len(item.request) + len(item.response)
            out.append(item)
        return out
