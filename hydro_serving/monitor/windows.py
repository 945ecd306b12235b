"""One closed window of sampled rows: per-field drift, output drift, variant comparison, histograms.

Pure functions from rows and references to a JSON-ready summary (stored as is, served by the
API, turned into metrics and alerts). The p-value tests of one side (inputs, or outputs) share one
Bonferroni-corrected significance level, so a window of fifteen stable fields is not expected to
flag one by chance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hydro_serving.monitor import stats
from hydro_serving.monitor.reference import FieldRef, Reference, columns, from_rows

TESTED_KINDS = ("numeric", "categorical", "text")
HIST_BINS = 10
OUTPUT_PREFIX = "output."


def field_drift(ref: FieldRef, raw: Sequence[Any], alpha: float, name: str | None = None) -> stats.FieldDrift | None:
    """The drift of one field, or None when it cannot be tested (an untested kind, no reference values)."""
    name = name or ref.name
    if ref.kind not in TESTED_KINDS:
        return None
    current = ref.current(raw)
    if ref.kind == "categorical":
        if not ref.categories or not current:
            return None
        return stats.categorical_drift(name, ref.categories, current, alpha, complete=ref.complete)
    if ref.values is None or ref.values.size == 0 or current.size == 0:
        return None
    return stats.numeric_drift(name, ref.values, current, alpha, kind=ref.kind)


def side_drift(reference: Reference | None, rows: Sequence[Mapping[str, Any]], alpha: float,
               prefix: str = "") -> list[stats.FieldDrift]:
    """Every testable field of one side against its reference, at ``alpha`` Bonferroni-corrected."""
    if reference is None or not rows:
        return []
    cols = columns(rows)
    testable = [f for f in reference.fields.values() if f.kind in TESTED_KINDS and f.name in cols]
    level = stats.corrected_alpha(alpha, len(testable))
    out = []
    for ref in testable:
        result = field_drift(ref, cols[ref.name], level, prefix + ref.name)
        if result is not None:
            out.append(result)
    return out


def histogram(ref: FieldRef, raw: Sequence[Any], name: str) -> dict[str, Any] | None:
    """Reference and production counts on the same bins (reference deciles; categories as they are)."""
    current = ref.current(raw)
    if ref.kind == "categorical":
        keys = list(ref.categories) + [k for k in current if k not in ref.categories]
        return {"field": name, "kind": "categorical", "bins": keys,
                "reference": [ref.categories.get(k, 0) for k in keys], "production": [current.get(k, 0) for k in keys]}
    if ref.kind not in ("numeric", "text") or ref.values is None or ref.values.size == 0:
        return None
    edges = stats.quantile_edges(ref.values, HIST_BINS)
    finite = edges.copy()
    low = float(min(ref.values.min(), current.min() if current.size else np.inf))
    high = float(max(ref.values.max(), current.max() if current.size else -np.inf))
    finite[0], finite[-1] = low, high
    return {"field": name, "kind": ref.kind, "edges": [float(e) for e in finite],
            "reference": stats.histogram(ref.values, edges).tolist(),
            "production": stats.histogram(current, edges).tolist()}


def variant_comparison(rows: Sequence[Mapping[str, Any]], variants: Sequence[str | None],
                       alpha: float) -> dict[str, Any] | None:
    """Outputs of each variant against the most served one, in the same window (an experiment's A/B view)."""
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for row, variant in zip(rows, variants, strict=True):
        if variant is not None:
            by_variant.setdefault(variant, []).append(row)
    if len(by_variant) < 2:
        return None
    counts = {k: len(v) for k, v in by_variant.items()}
    base = max(counts, key=lambda k: counts[k])
    reference = from_rows(by_variant[base])
    comparisons = []
    for variant, vrows in by_variant.items():
        if variant == base:
            continue
        fields = side_drift(reference, vrows, alpha, OUTPUT_PREFIX)
        comparisons.append({"variant": variant, "against": base,
                            "drifted": any(f.drifted for f in fields), "fields": [f.to_dict() for f in fields]})
    return {"rows": counts, "reference": base, "comparisons": comparisons}


def summarize(function: str, seq: int, started: float, ended: float, inputs: Sequence[Mapping[str, Any]],
              outputs: Sequence[Mapping[str, Any]], out_variants: Sequence[str | None], unhealthy: int,
              in_ref: Reference | None, out_ref: Reference | None, alpha: float = stats.ALPHA,
              baseline_inputs: bool = False, baseline_outputs: bool = False) -> dict[str, Any]:
    """The JSON summary of one window; a side whose reference this window became is not tested."""
    fields = [] if baseline_inputs else side_drift(in_ref, inputs, alpha)
    out_fields = [] if baseline_outputs else side_drift(out_ref, outputs, alpha, OUTPUT_PREFIX)
    share, drift = stats.dataset_drift(fields)
    hist = []
    if in_ref is not None and inputs:
        cols = columns(inputs)
        hist += [h for f in in_ref.fields.values() if f.name in cols and (h := histogram(f, cols[f.name], f.name))]
    if out_ref is not None and outputs:
        cols = columns(outputs)
        hist += [h for f in out_ref.fields.values()
                 if f.name in cols and (h := histogram(f, cols[f.name], OUTPUT_PREFIX + f.name))]
    return {
        "function": function, "seq": seq, "started": started, "ended": ended, "rows": len(inputs),
        "unhealthy": unhealthy, "baseline": baseline_inputs or baseline_outputs,
        "baseline_inputs": baseline_inputs, "baseline_outputs": baseline_outputs,
        "reference": in_ref.source if in_ref is not None else None,
        "alpha": alpha, "corrected_alpha": stats.corrected_alpha(alpha, len(fields)),
        "fields": [f.to_dict() for f in fields], "outputs": [f.to_dict() for f in out_fields],
        "drift_share": share, "drift": drift, "drifted_fields": [f.field for f in fields if f.drifted],
        "output_drift": any(f.drifted for f in out_fields),
        "variants": variant_comparison(outputs, out_variants, alpha) if outputs else None,
        "variant_rows": dict(Counter(v for v in out_variants if v is not None)),
        "histograms": hist,
    }
