"""Prometheus metrics of one runtime process, in a registry the app factory owns.

A registry per app (not prometheus_client's global one) keeps two apps in one test process, or
a reloaded worker, from colliding on metric names, and builds nothing at import time.

With several gunicorn workers (the default for model templates), /metrics must still describe the
replica, not whichever worker the kernel handed the scrape to: :func:`enable_multiprocess` (called
in each worker right after fork) switches prometheus_client to its multiprocess mode, where every
value lives in a memory-mapped file of a directory the arbiter owns, and :meth:`RuntimeMetrics.render`
then sums the files of all workers. Each gauge declares how workers combine (``MODES``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# how the workers' values of each gauge combine on /metrics: in flight adds up over live workers,
# ready only when every live worker is, load time and start time of the slowest/oldest worker
MODES = {"inflight": "livesum", "ready": "livemin", "load_seconds": "max", "start": "min"}


def enable_multiprocess(directory: str) -> None:
    """In a freshly forked worker: store every metric value in ``directory`` (shared by the workers).

    prometheus_client picks its value class once, at import, from ``PROMETHEUS_MULTIPROC_DIR``; the
    runtime is imported before the arbiter (or the zygote) knows how many workers there will be, so
    the worker switches it here, before its app creates any metric.
    """
    from prometheus_client import values

    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.MultiProcessValue()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RuntimeMetrics:
    """The runtime's counters, histograms and gauges, labelled by function name."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, function: str) -> None:
        self.function = function
        self.registry = CollectorRegistry()
        self._multiproc = multiprocess_dir()
        self.requests = Counter(
            "hydro_function_requests", "Requests answered, by endpoint and HTTP status code.",
            ["function", "endpoint", "code"], registry=self.registry,
        )
        self.latency = Histogram(
            "hydro_function_request_duration_seconds", "Time to answer a request, by endpoint.",
            ["function", "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.inflight = Gauge(
            "hydro_function_inflight_requests", "Invocations being executed right now.",
            ["function"], registry=self.registry, multiprocess_mode=MODES["inflight"],
        )
        self.load_seconds = Gauge(
            "hydro_function_model_load_seconds", "Seconds the handler and model took to load.",
            ["function"], registry=self.registry, multiprocess_mode=MODES["load_seconds"],
        )
        self.ready = Gauge(
            "hydro_function_ready", "1 once the model is loaded, 0 while loading or after a failed load.",
            ["function"], registry=self.registry, multiprocess_mode=MODES["ready"],
        )
        self.batch_size = Histogram(
            "hydro_function_batch_size", "Requests merged into one predict call (adaptive batching).",
            ["function"], buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry,
        )
        start = Gauge(
            "hydro_function_process_start_time_seconds", "Start time of the process since the epoch.",
            ["function"], registry=self.registry, multiprocess_mode=MODES["start"],
        )
        start.labels(function).set(time.time())
        self.ready.labels(function).set(0)
        self.inflight.labels(function).set(0)
        # labelled children by (endpoint, code): ``labels()`` re-validates and hashes its arguments under
        # a lock on every call, a measurable share of an iris-sized request (BENCHMARKS.md, runtime path)
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        children = self._children.get((endpoint, code))
        if children is None:
            children = (self.requests.labels(self.function, endpoint, str(code)),
                        self.latency.labels(self.function, endpoint))
            self._children[(endpoint, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        """The replica's metrics: this registry, or with several workers the sum over all their files."""
        if self._multiproc is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._multiproc)
        return generate_latest(registry)
