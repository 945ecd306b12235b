"""Recent traffic per function, derived from the gateway's own Prometheus series.

Why a sampler and not a hook in the request path: the gateway already counts every invocation
(status, duration histogram, cold starts and their phases) for ``/metrics``. Snapshotting those
cumulative series every few seconds and differencing snapshots gives the last 5 minutes' p50/p95
latency, error rate and throughput, sparklines, and the split of the latest cold start, without
adding a single instruction to the hot path. Memory is bounded: a fixed number of snapshots per
function, and a removed function's history goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hydro_serving.gateway.metrics import DURATION_BUCKETS, GatewayMetrics

TICK = 2.0  # seconds between snapshots
WINDOW = 300.0  # "the last 5 minutes"
KEEP = int(WINDOW / TICK) + 2  # snapshots kept per function


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters of one function at one moment."""

    at: float
    count: float = 0.0
    total: float = 0.0  # sum of durations, seconds
    buckets: tuple[float, ...] = (0.0,) * (len(DURATION_BUCKETS) + 1)  # cumulative, +Inf last
    errors: float = 0.0  # status >= 500
    cold: float = 0.0
    process_start: tuple[float, float] = (0.0, 0.0)  # (count, sum)
    model_load: tuple[float, float] = (0.0, 0.0)


@dataclass
class ColdSplit:
    """The latest cold start of a function, by phase (seconds); ``at`` is wall-clock time."""

    process_start: float | None = None
    model_load: float | None = None
    at: float | None = None


@dataclass
class History:
    snapshots: deque[Snapshot] = field(default_factory=lambda: deque(maxlen=KEEP))
    cold: ColdSplit = field(default_factory=ColdSplit)


def quantile(q: float, buckets: Iterable[float]) -> float | None:
    """The q-quantile (seconds) from cumulative histogram buckets, interpolated inside a bucket."""
    cumulative = list(buckets)
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip((*DURATION_BUCKETS, math.inf), cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return DURATION_BUCKETS[-1]
            span = count - lower_count
            frac = (rank - lower_count) / span if span > 0 else 1.0
            return lower_bound + (bound - lower_bound) * frac
        lower_bound, lower_count = bound, count
    return DURATION_BUCKETS[-1]


def _children(metric: Any) -> list[tuple[tuple[str, ...], Any]]:
    """The label children of a metric (private in prometheus_client, as GatewayMetrics.forget uses it).

    Why not ``collect()``: it builds a Sample object per bucket of every series, 35 ms for 100
    functions on a loaded 2-core machine; reading the children's values is about 20 times cheaper.
    """
    with metric._lock:
        return list(metric._metrics.items())


def read_snapshots(metrics: GatewayMetrics, now: float) -> dict[str, Snapshot]:
    """One snapshot per function that has any series, read from the metrics' label children."""
    raw: dict[str, dict[str, Any]] = {}

    def slot(fn: str) -> dict[str, Any]:
        return raw.setdefault(fn, {"buckets": None, "count": 0.0, "total": 0.0, "errors": 0.0, "cold": 0.0,
                                   "process_start": (0.0, 0.0), "model_load": (0.0, 0.0)})

    for (fn,), child in _children(metrics.duration):
        counts = list(itertools.accumulate(b.get() for b in child._buckets))
        entry = slot(fn)
        entry["buckets"], entry["count"], entry["total"] = tuple(counts), counts[-1], child._sum.get()
    for (fn, status), child in _children(metrics.invocations):
        if status.isdigit() and int(status) >= 500:
            slot(fn)["errors"] += child._value.get()
    for (fn,), child in _children(metrics.cold_starts):
        slot(fn)["cold"] = child._value.get()
    for (fn, phase), child in _children(metrics.cold_start_seconds):
        if phase in ("process_start", "model_load"):
            slot(fn)[phase] = (sum(b.get() for b in child._buckets), child._sum.get())
    empty = Snapshot(0.0).buckets
    return {fn: Snapshot(now, r["count"], r["total"], r["buckets"] or empty, r["errors"], r["cold"],
                         r["process_start"], r["model_load"]) for fn, r in raw.items()}


class Recorder:
    """Snapshots of every function's series every :data:`TICK` seconds; windows and series from them."""

    def __init__(self, metrics: GatewayMetrics, clock: Any = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self.history: dict[str, History] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self, names: Iterable[str]) -> None:
        """Take one snapshot now (also called before a page renders, so it shows the latest numbers)."""
        now = self.clock()
        snaps = read_snapshots(self.metrics, now)
        wanted = set(names)
        for gone in set(self.history) - wanted:
            del self.history[gone]
        for name in wanted:
            hist = self.history.get(name)
            if hist is None:  # a new function's counters start at zero: that is its baseline
                hist = self.history[name] = History()
                hist.snapshots.append(Snapshot(now - TICK))
            snap = snaps.get(name, Snapshot(now))
            prev = hist.snapshots[-1]
            self._cold_split(hist.cold, prev, snap)
            if now - prev.at < TICK / 2 and len(hist.snapshots) > 1:
                hist.snapshots[-1] = snap  # sampled again soon (a page render): replace, keep the spacing
            else:
                hist.snapshots.append(snap)

    @staticmethod
    def _cold_split(cold: ColdSplit, prev: Snapshot, snap: Snapshot) -> None:
        for phase in ("process_start", "model_load"):
            (c0, s0), (c1, s1) = getattr(prev, phase), getattr(snap, phase)
            if c1 > c0:
                setattr(cold, phase, (s1 - s0) / (c1 - c0))
                cold.at = time.time()
                if phase == "process_start":
                    cold.model_load = None  # the new start's load phase is still to come

    async def run(self, names: Any) -> None:
        """Sample forever (until cancelled); ``names()`` lists the deployed functions."""
        while True:
            with contextlib.suppress(Exception):  # a metrics glitch must never kill the sampler
                self.sample(names())
            await asyncio.sleep(TICK)

    def start(self, names: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(names))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ---- views ------------------------------------------------------------------------------------

    def window(self, name: str) -> dict[str, Any]:
        """The last 5 minutes: requests, rps, p50/p95 (ms), error rate, cold starts (total and in window)."""
        hist = self.history.get(name)
        empty = {"requests": 0, "rps": 0.0, "p50_ms": None, "p95_ms": None, "error_rate": None, "cold_starts": 0,
                 "cold_in_window": 0}
        if hist is None or not hist.snapshots:
            return empty
        last = hist.snapshots[-1]
        first = next((s for s in hist.snapshots if last.at - s.at <= WINDOW + TICK), hist.snapshots[0])
        count = last.count - first.count
        span = max(last.at - first.at, TICK)
        diff = [b1 - b0 for b0, b1 in zip(first.buckets, last.buckets, strict=True)]
        p50, p95 = quantile(0.5, diff), quantile(0.95, diff)
        return {"requests": int(count), "rps": count / span,
                "p50_ms": None if p50 is None else p50 * 1000, "p95_ms": None if p95 is None else p95 * 1000,
                "error_rate": (last.errors - first.errors) / count if count > 0 else None,
                "cold_starts": int(last.cold), "cold_in_window": int(last.cold - first.cold)}

    def series(self, name: str) -> dict[str, list[float]]:
        """Per tick: throughput (requests/s) and mean latency (ms; 0 where no request) for sparklines."""
        hist = self.history.get(name)
        rps: list[float] = []
        latency: list[float] = []
        if hist is None:
            return {"rps": rps, "latency_ms": latency}
        snaps = list(hist.snapshots)
        for a, b in itertools.pairwise(snaps):
            dc = b.count - a.count
            rps.append(dc / max(b.at - a.at, 1e-3))
            latency.append((b.total - a.total) / dc * 1000 if dc > 0 else 0.0)
        return {"rps": rps, "latency_ms": latency}

    def cold(self, name: str) -> ColdSplit:
        hist = self.history.get(name)
        return hist.cold if hist is not None else ColdSplit()
