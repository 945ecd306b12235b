"""Percentiles and ratios: the only arithmetic the tables rest on, kept small and unit-tested.

Ratios are always ``value / baseline`` of the same metric from the same run. For latency a ratio
above 1 is worse, for requests/s a ratio below 1 is worse; the table says which (``lower`` flag).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def summarize(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of a sample of latencies in ms (empty dict for no sample)."""
    if not latencies_ms:
        return {}
    return {
        "p50_ms": percentile(latencies_ms, 50), "p95_ms": percentile(latencies_ms, 95),
        "p99_ms": percentile(latencies_ms, 99), "max_ms": max(latencies_ms),
        "mean_ms": sum(latencies_ms) / len(latencies_ms), "count": float(len(latencies_ms)),
    }


def differs(a: float | None, b: float | None, tolerance: float = 0.25) -> bool:
    """True when two measures of the same thing differ by more than ``tolerance`` (relative to the larger)."""
    if a is None or b is None:
        return False
    top = max(abs(a), abs(b))
    return top > 0 and abs(a - b) / top > tolerance
