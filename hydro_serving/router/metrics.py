"""Prometheus metrics of one router: per stage latency and outcomes, shadows, breakers, prewarms.

The collectors are registered on a registry handed in at load (the runtime's, so ``/metrics``
shows them), never at import time; a router built twice in one process (tests) gets its own
registry and no duplicate-collector errors.

The labelled children a request touches are looked up once and kept (``_child``): prometheus'
``labels()`` validates and locks on every call, four times per pipeline request, which the router's
profile showed as a few per cent of its CPU (issue 18). The label sets are bounded by the spec (its
stages, variants, outcomes and the HTTP statuses).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hydro_serving.router.breaker import STATE_VALUES

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RouterMetrics:
    """Outcome labels: ok, client_error, error, timeout, connection, breaker_open (and dropped for shadows)."""

    def __init__(self, pipeline: str, registry: CollectorRegistry | None = None) -> None:
        self.pipeline = pipeline
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["pipeline", "stage", "function"]
        self.stage_requests = Counter(
            "hydro_router_stage_requests", "Stage calls made by the router, by outcome",
            [*labels, "outcome"], registry=self.registry)
        self.stage_latency = Histogram(
            "hydro_router_stage_latency_seconds", "Stage call latency seen by the router (cold starts included)",
            labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stage_cold_starts = Counter(
            "hydro_router_stage_cold_starts", "Stage calls the gateway answered with a cold start",
            labels, registry=self.registry)
        self.shadow_requests = Counter(
            "hydro_router_shadow_requests", "Shadow copies sent, by outcome (never affect the response)",
            [*labels, "outcome"], registry=self.registry)
        self.shadow_latency = Histogram(
            "hydro_router_shadow_latency_seconds", "Shadow call latency", labels, buckets=LATENCY_BUCKETS,
            registry=self.registry)
        self.connect_retries = Counter(
            "hydro_router_connect_retries", "Retries of stage connections that could not be opened",
            ["pipeline", "function"], registry=self.registry)
        self.breaker_state = Gauge(
            "hydro_router_breaker_state", "Circuit breaker per stage function: 0 closed, 1 half-open, 2 open",
            ["pipeline", "function"], registry=self.registry)
        self.prewarms = Counter(
            "hydro_router_prewarms", "Prewarm requests sent to the gateway for later stages",
            ["pipeline", "function", "outcome"], registry=self.registry)
        self.pipeline_requests = Counter(
            "hydro_router_pipeline_requests", "Pipeline requests by final HTTP status",
            ["pipeline", "status"], registry=self.registry)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def stage(self, index: int, function: str, outcome: str, seconds: float | None, cold: bool | None) -> None:
        self._child(self.stage_requests, self.pipeline, str(index), function, outcome).inc()
        if seconds is not None:
            self._child(self.stage_latency, self.pipeline, str(index), function).observe(seconds)
        if cold:
            self.stage_cold_starts.labels(self.pipeline, str(index), function).inc()

    def shadow(self, index: int, function: str, outcome: str, seconds: float | None) -> None:
        self.shadow_requests.labels(self.pipeline, str(index), function, outcome).inc()
        if seconds is not None:
            self.shadow_latency.labels(self.pipeline, str(index), function).observe(seconds)

    def breaker(self, function: str, state: str) -> None:
        self._child(self.breaker_state, self.pipeline, function).set(STATE_VALUES[state])

    def retry(self, function: str) -> None:
        self.connect_retries.labels(self.pipeline, function).inc()

    def prewarm(self, function: str, outcome: str) -> None:
        self.prewarms.labels(self.pipeline, function, outcome).inc()

    def finished(self, status: int) -> None:
        self._child(self.pipeline_requests, self.pipeline, str(status)).inc()
