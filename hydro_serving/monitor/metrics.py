"""The monitor's Prometheus series, registered in the gateway's registry (served on its ``/metrics``).

Drift is exported as evidence, not only as a flag: ``hydro_drift_score{function,field,stat}`` for
every statistic of the last window, ``hydro_drift_p_value`` where the statistic has one,
``hydro_drift_detected{function,field}`` from the field's deciding test. Samples dropped by a
full queue are read from the sampler's counters at scrape time, so the request path never
touches a Prometheus object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hydro_serving.monitor.sampler import Sampler

METRIC_NAMES = (
    "hydro_drift_score", "hydro_drift_p_value", "hydro_drift_detected", "hydro_drift_share", "hydro_dataset_drift",
    "hydro_output_drift", "hydro_rows_unhealthy_total", "hydro_row_checks_failed_total",
    "hydro_monitor_rows_total", "hydro_monitor_undecodable_total", "hydro_monitor_windows_total",
    "hydro_monitor_samples_dropped_total", "hydro_monitor_samples_offered_total", "hydro_monitor_queue_depth",
    "hydro_monitor_alerts_total", "hydro_model_quality",
)


class _SamplerCollector(Collector):
    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Any]:
        dropped = CounterMetricFamily("hydro_monitor_samples_dropped", "Samples dropped because the monitor's "
                                      "queue was full (the response was not delayed)", labels=["function"])
        offered = CounterMetricFamily("hydro_monitor_samples_offered", "Samples queued for the monitor",
                                      labels=["function"])
        for name, n in list(self.sampler.dropped.items()):
            dropped.add_metric([name], n)
        for name, n in list(self.sampler.offered.items()):
            offered.add_metric([name], n)
        depth = GaugeMetricFamily("hydro_monitor_queue_depth", "Samples waiting for the monitor's worker")
        depth.add_metric([], len(self.sampler.queue))
        yield from (dropped, offered, depth)


class MonitorMetrics:
    def __init__(self, sampler: Sampler, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.score = Gauge("hydro_drift_score", "Drift statistic of the last window per field and statistic",
                           ["function", "field", "stat"], registry=r)
        self.p_value = Gauge("hydro_drift_p_value", "p-value of the last window's test per field and statistic",
                             ["function", "field", "stat"], registry=r)
        self.detected = Gauge("hydro_drift_detected", "1 when the field drifted in the last window",
                              ["function", "field"], registry=r)
        self.share = Gauge("hydro_drift_share", "Share of input fields that drifted in the last window",
                           ["function"], registry=r)
        self.dataset = Gauge("hydro_dataset_drift", "1 when at least half of the input fields drifted",
                             ["function"], registry=r)
        self.output = Gauge("hydro_output_drift", "1 when an output drifted from the first window after deploy",
                            ["function"], registry=r)
        self.unhealthy = Counter("hydro_rows_unhealthy", "Sampled rows that failed a profile or signature check",
                                 ["function"], registry=r)
        self.failed = Counter("hydro_row_checks_failed", "Failed row checks", ["function", "check"], registry=r)
        self.rows = Counter("hydro_monitor_rows", "Sampled rows decoded and checked", ["function"], registry=r)
        self.undecodable = Counter("hydro_monitor_undecodable", "Sampled bodies that are not rows",
                                   ["function"], registry=r)
        self.windows = Counter("hydro_monitor_windows", "Windows closed", ["function"], registry=r)
        self.alerts = Counter("hydro_monitor_alerts", "Alert webhooks sent", ["function", "event", "outcome"],
                              registry=r)
        self.quality = Gauge("hydro_model_quality", "Quality against ground truth of the last window with labels",
                             ["function", "variant", "metric"], registry=r)
        r.register(_SamplerCollector(sampler))

    def window(self, function: str, summary: dict[str, Any]) -> None:
        """Export one closed window (a baseline window exports nothing but its count)."""
        self.windows.labels(function).inc()
        if summary.get("baseline") and not summary.get("fields"):
            return
        for field in [*summary.get("fields", []), *summary.get("outputs", [])]:
            for result in field["results"]:
                if result["statistic"] is not None:
                    self.score.labels(function, field["field"], result["stat"]).set(result["statistic"])
                if result["p_value"] is not None:
                    self.p_value.labels(function, field["field"], result["stat"]).set(result["p_value"])
            self.detected.labels(function, field["field"]).set(1 if field["drifted"] else 0)
        self.share.labels(function).set(summary.get("drift_share", 0.0))
        self.dataset.labels(function).set(1 if summary.get("drift") else 0)
        self.output.labels(function).set(1 if summary.get("output_drift") else 0)
