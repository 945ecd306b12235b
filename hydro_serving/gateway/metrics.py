"""Prometheus metrics of the gateway, on a registry owned by one app (no import-time globals).

Label children are cached per function by :class:`FunctionMetrics` so the request path does a
dictionary lookup instead of prometheus_client's label resolution on every call.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
COLD_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
REPLICA_STATES = ("starting", "ready", "recovering", "draining")  # the states the replica gauge reports


class GatewayMetrics:
    """Every metric the gateway exports; ``registry`` is what ``/metrics`` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.invocations = Counter("hydro_gateway_invocations", "Function invocations through the gateway",
                                   ["function", "status"], registry=r)
        self.duration = Histogram("hydro_gateway_request_duration_seconds",
                                  "Time from request to response at the gateway (includes any cold start)",
                                  ["function"], buckets=DURATION_BUCKETS, registry=r)
        self.cold_starts = Counter("hydro_gateway_cold_starts", "Replica starts that requests waited for "
                                   "(the function had no ready replica)", ["function"], registry=r)
        self.cold_start_seconds = Histogram("hydro_gateway_cold_start_seconds",
                                            "Replica start time by phase: process_start (spawn until health "
                                            "answers) and model_load (health until ready)",
                                            ["function", "phase"], buckets=COLD_BUCKETS, registry=r)
        self.replica_starts = Counter("hydro_gateway_replica_starts", "Replica starts by reason",
                                      ["function", "reason"], registry=r)
        self.replica_stops = Counter("hydro_gateway_replica_stops", "Replica stops and exits by reason",
                                     ["function", "reason"], registry=r)
        self.replicas = Gauge("hydro_gateway_replicas", "Current replicas by state (recovering: alive but out of "
                              "rotation until ready again, e.g. a crashed worker is reloading the model)",
                              ["function", "state"], registry=r)
        self.recoveries = Counter("hydro_gateway_replica_recoveries", "Live replicas taken out of rotation until "
                                  "their readiness probe passes again, by reason (disconnected: a request lost its "
                                  "connection; loading: the replica answered 503 loading)",
                                  ["function", "reason"], registry=r)
        self.queued = Gauge("hydro_gateway_queued_requests", "Requests waiting for a ready replica", ["function"],
                            registry=r)
        self.inflight = Gauge("hydro_gateway_inflight_requests", "Requests being served by replicas",
                              ["function"], registry=r)
        self.rate_limited = Counter("hydro_gateway_rate_limited", "Invocations refused with 429 by the function's "
                                    "rate limit (rate: in stack.yml), before any replica was involved",
                                    ["function"], registry=r)
        self.stage_duration = Histogram("hydro_pipeline_stage_duration_seconds",
                                        "Latency of pipeline stage calls (from X-Hydro-Pipeline/X-Hydro-Stage); "
                                        "shadow calls (X-Hydro-Shadow: true) are not counted here but in "
                                        "hydro_pipeline_shadow_duration_seconds",
                                        ["pipeline", "stage", "function"], buckets=DURATION_BUCKETS, registry=r)
        self.stage_errors = Counter("hydro_pipeline_stage_errors", "Pipeline stage calls that failed (status >= 400); "
                                    "failed shadow calls are counted in hydro_pipeline_shadow_errors instead",
                                    ["pipeline", "stage", "function"], registry=r)
        # A shadow's latency and failures never reach the client, so they must not move the stage's
        # error rate or latency SLO: they get their own series (same labels, so dashboards can compare).
        self.shadow_duration = Histogram("hydro_pipeline_shadow_duration_seconds",
                                         "Latency of shadow calls (X-Hydro-Shadow: true) of a pipeline stage; "
                                         "'stage' is the stage shadowed, 'function' the shadow function",
                                         ["pipeline", "stage", "function"], buckets=DURATION_BUCKETS, registry=r)
        self.shadow_errors = Counter("hydro_pipeline_shadow_errors", "Shadow calls (X-Hydro-Shadow: true) that failed "
                                     "(status >= 400); they never change the pipeline's response",
                                     ["pipeline", "stage", "function"], registry=r)

    def observe_stage(self, pipeline: str, stage: str, function: str, shadow: bool, status: int,
                      seconds: float) -> None:
        """Account one call a router made to a stage (a shadow call in the shadow series)."""
        duration, errors = (self.shadow_duration, self.shadow_errors) if shadow else (
            self.stage_duration, self.stage_errors)
        duration.labels(pipeline, stage, function).observe(seconds)
        if status >= 400:
            errors.labels(pipeline, stage, function).inc()

    def for_function(self, name: str) -> FunctionMetrics:
        return FunctionMetrics(self, name)

    def forget(self, name: str) -> None:
        """Drop every series of a removed function (as a function, a stage or a pipeline): no ghosts, no growth.

        Without this, deploying and removing functions under changing names grows ``/metrics``
        without bound.
        """
        for metric in self._labelled():
            names = metric._labelnames  # private: prometheus_client has no "remove where"
            wanted = [i for i, label in enumerate(names) if label in ("function", "pipeline")]
            for values in list(metric._metrics):
                if any(values[i] == name for i in wanted):
                    with contextlib.suppress(KeyError):
                        metric.remove(*values)

    def _labelled(self) -> list[Counter | Gauge | Histogram]:
        return [m for m in vars(self).values() if isinstance(m, Counter | Gauge | Histogram)]

    def series(self) -> int:
        """How many labelled series exist (a test's measure of cardinality)."""
        return sum(len(m._metrics) for m in self._labelled())


class FunctionMetrics:
    """The label children of one function, resolved once."""

    def __init__(self, metrics: GatewayMetrics, name: str) -> None:
        self._m = metrics
        self.name = name
        self.duration = metrics.duration.labels(name)
        self.cold_starts = metrics.cold_starts.labels(name)
        self.process_start = metrics.cold_start_seconds.labels(name, "process_start")
        self.model_load = metrics.cold_start_seconds.labels(name, "model_load")
        self.queued = metrics.queued.labels(name)
        self.inflight = metrics.inflight.labels(name)
        self.rate_limited = metrics.rate_limited.labels(name)
        self.replicas = {state: metrics.replicas.labels(name, state) for state in REPLICA_STATES}
        self._status: dict[int, Counter] = {}

    def invoked(self, status: int, seconds: float) -> None:
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = self._m.invocations.labels(self.name, str(status))
        child.inc()
        self.duration.observe(seconds)

    def invoked_many(self, status: int, n: int) -> None:
        """Count ``n`` invocations (a router's direct calls reported with its lease: no duration of each)."""
        child = self._status.get(status)
        if child is None:
            child = self._status[status] = self._m.invocations.labels(self.name, str(status))
        child.inc(n)

    def started(self, reason: str) -> None:
        self._m.replica_starts.labels(self.name, reason).inc()

    def recovering(self, reason: str) -> None:
        self._m.recoveries.labels(self.name, reason).inc()

    def stopped(self, reason: str) -> None:
        self._m.replica_stops.labels(self.name, reason).inc()

    def set_replicas(self, counts: dict[str, int]) -> None:
        for state, gauge in self.replicas.items():
            gauge.set(counts.get(state, 0))
