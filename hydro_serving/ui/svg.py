"""Inline SVG drawn on the server: sparklines, paired histograms, bar series, pipeline graphs.

Why on the server: the pages are readable without JavaScript and without any chart library (nothing
fetched from the internet), and an SVG string is cheap to render and to resend over SSE. Every
drawing has ``role="img"`` and a ``<title>`` that says in words what it shows (screen readers), and
every text in it is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from markupsafe import Markup

REFERENCE_COLOR = "#4a6fa5"
PRODUCTION_COLOR = "#d9822b"
LINE_COLOR = "#2f6f4f"


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}"


def sparkline(values: Sequence[float], title: str, width: int = 160, height: int = 32,
              color: str = LINE_COLOR) -> Markup:
    """A polyline of ``values`` scaled to the box; the title states the last and the highest value."""
    vals = [v if math.isfinite(v) else 0.0 for v in values] or [0.0]
    top = max(vals) or 1.0
    step = width / max(len(vals) - 1, 1)
    points = " ".join(f"{_fmt(i * step)},{_fmt(height - 2 - (v / top) * (height - 4))}" for i, v in enumerate(vals))
    words = f"{title}: last {_label(vals[-1])}, max {_label(max(vals))} over {len(vals)} points"
    return Markup(
        f'<svg class="spark" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{escape(words)}</title>"
        f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/></svg>')


def bars(values: Sequence[float], title: str, width: int = 320, height: int = 60, top: float | None = None,
         color: str = PRODUCTION_COLOR) -> Markup:
    """One bar per value (e.g. the drifted share of each window), scaled to ``top`` (default: the max)."""
    vals = [v if v is not None and math.isfinite(v) else 0.0 for v in values] or [0.0]
    top = top or max(vals) or 1.0
    w = width / len(vals)
    rects = "".join(
        f'<rect x="{_fmt(i * w + 1)}" y="{_fmt(height - v / top * (height - 2))}" width="{_fmt(max(w - 2, 1))}" '
        f'height="{_fmt(v / top * (height - 2))}" fill="{color}"/>' for i, v in enumerate(vals))
    words = f"{title}: " + ", ".join(_label(v) for v in vals[-20:])
    return Markup(f'<svg class="bars" role="img" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}"><title>{escape(words)}</title>{rects}</svg>')


def histogram_pair(hist: dict[str, Any], width: int = 360, height: int = 120) -> Markup:
    """Reference (training) and production counts on the same bins, as shares, side by side per bin.

    ``hist`` is the monitor's histogram: ``edges`` (numeric/text) or ``bins`` (categorical) with
    ``reference`` and ``production`` counts.
    """
    ref = [float(x) for x in hist.get("reference") or []]
    prod = [float(x) for x in hist.get("production") or []]
    n = max(len(ref), len(prod), 1)
    ref += [0.0] * (n - len(ref))
    prod += [0.0] * (n - len(prod))
    rs, ps = sum(ref) or 1.0, sum(prod) or 1.0
    rshare, pshare = [r / rs for r in ref], [p / ps for p in prod]
    top = max([*rshare, *pshare, 1e-9])
    plot_h = height - 18
    w = width / n
    parts = []
    for i in range(n):
        for j, (share, color) in enumerate(((rshare[i], REFERENCE_COLOR), (pshare[i], PRODUCTION_COLOR))):
            h = share / top * (plot_h - 2)
            parts.append(f'<rect x="{_fmt(i * w + 1 + j * (w - 2) / 2)}" y="{_fmt(plot_h - h)}" '
                         f'width="{_fmt(max((w - 2) / 2, 0.5))}" height="{_fmt(h)}" fill="{color}"/>')
    if hist.get("edges"):
        edges = hist["edges"]
        labels = [(0, _label(edges[0])), (width, _label(edges[-1]))]
    else:
        bins = [str(b) for b in hist.get("bins") or []]
        labels = [(i * w + w / 2, b[:8]) for i, b in enumerate(bins)] if len(bins) <= 8 else []
    texts = "".join(
        f'<text x="{_fmt(x)}" y="{height - 4}" font-size="10" text-anchor="'
        f'{"start" if x == 0 else "end" if x == width else "middle"}">{escape(t)}</text>' for x, t in labels)
    name = hist.get("field", "field")
    words = (f"{name}: training (blue) vs production (orange) share per bin: "
             + "; ".join(f"{r:.0%}/{p:.0%}" for r, p in zip(rshare, pshare, strict=True)))
    return Markup(f'<svg class="hist" role="img" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}"><title>{escape(words)}</title>{"".join(parts)}{texts}</svg>')


def profile_histogram(column: dict[str, Any], width: int = 300, height: int = 90) -> Markup | None:
    """A training-profile column drawn as a histogram: its value sample (numbers), else its top values."""
    sample = column.get("sample")
    if sample:
        import numpy as np

        values = np.asarray([v for v in sample if isinstance(v, int | float)], dtype=float)
        if values.size == 0:
            return None
        counts, edges = np.histogram(values, bins=10)
        hist = {"field": column.get("name"), "edges": edges.tolist(), "reference": counts.tolist(),
                "production": []}
    elif column.get("top"):
        top = column["top"]
        hist = {"field": column.get("name"), "bins": [str(t.get("value")) for t in top],
                "reference": [t.get("count", 0) for t in top], "production": []}
    else:
        return None
    ref = [float(x) for x in hist["reference"]]
    total = max(ref) or 1.0
    n = len(ref)
    plot_h = height - 16
    w = width / n
    rects = "".join(f'<rect x="{_fmt(i * w + 1)}" y="{_fmt(plot_h - r / total * (plot_h - 2))}" '
                    f'width="{_fmt(max(w - 2, 1))}" height="{_fmt(r / total * (plot_h - 2))}" '
                    f'fill="{REFERENCE_COLOR}"/>' for i, r in enumerate(ref))
    if "edges" in hist:
        label = f"{_label(hist['edges'][0])} to {_label(hist['edges'][-1])}"
    else:
        label = ", ".join(hist["bins"][:3])
    words = f"training profile of {column.get('name')}: {n} bins, {label}; counts " + ", ".join(
        _label(r) for r in ref)
    return Markup(f'<svg class="hist" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
                  f'<title>{escape(words)}</title>{rects}<text x="0" y="{height - 3}" font-size="10">'
                  f"{escape(label[:60])}</text></svg>")


def pipeline_graph(name: str, stages: Sequence[dict[str, Any]]) -> Markup:
    """Stages left to right; a stage's variants stacked with their weights; shadows dashed below.

    ``stages``: ``[{"variants": [{"function", "weight", "observed"}], "shadow": [name, ...]}]``.
    """
    box_w, box_h, gap_x, gap_y = 170, 44, 50, 14
    rows = max([len(s["variants"]) + len(s.get("shadow", [])) for s in stages] or [1])
    height = 30 + rows * (box_h + gap_y)
    width = 20 + 110 + gap_x + len(stages) * (box_w + gap_x) + 110
    parts = [f'<defs><marker id="arrow-{escape(name)}" markerWidth="8" markerHeight="8" refX="7" refY="4" '
             'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>']
    mid = 15 + box_h / 2
    parts.append(f'<rect x="10" y="15" width="110" height="{box_h}" rx="22" fill="#eef" stroke="#557"/>'
                 f'<text x="65" y="{mid + 4}" text-anchor="middle" font-size="12">request</text>')
    prev_x = 120
    arrow = f'marker-end="url(#arrow-{escape(name)})"'
    for i, stage in enumerate(stages):
        x = prev_x + gap_x
        for j, variant in enumerate(stage["variants"]):
            y = 15 + j * (box_h + gap_y)
            weight = variant.get("weight", 100)
            observed = variant.get("observed")
            sub = f"{weight}%" + (f" · seen {observed:.0%}" if observed is not None else "")
            parts.append(f'<line x1="{prev_x}" y1="{mid}" x2="{x}" y2="{y + box_h / 2}" stroke="#555" {arrow}/>')
            parts.append(f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="4" fill="#f6f6f0" '
                         f'stroke="#333"/><text x="{x + 8}" y="{y + 18}" font-size="12" font-weight="bold">'
                         f'{escape(variant["function"][:24])}</text><text x="{x + 8}" y="{y + 35}" '
                         f'font-size="11">{escape(sub)}</text>')
        for k, shadow in enumerate(stage.get("shadow", [])):
            y = 15 + (len(stage["variants"]) + k) * (box_h + gap_y)
            parts.append(f'<line x1="{x + box_w / 2}" y1="{y - gap_y}" x2="{x + box_w / 2}" y2="{y}" stroke="#888" '
                         f'stroke-dasharray="4 3"/><rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="4" '
                         f'fill="#fff" stroke="#888" stroke-dasharray="4 3"/><text x="{x + 8}" y="{y + 18}" '
                         f'font-size="12">{escape(shadow[:24])}</text><text x="{x + 8}" y="{y + 35}" '
                         'font-size="11">shadow (copy, never answers)</text>')
        prev_x = x + box_w
        del i
    parts.append(f'<line x1="{prev_x}" y1="{mid}" x2="{prev_x + gap_x}" y2="{mid}" stroke="#555" {arrow}/>'
                 f'<rect x="{prev_x + gap_x}" y="15" width="100" height="{box_h}" rx="22" fill="#efe" '
                 f'stroke="#575"/><text x="{prev_x + gap_x + 50}" y="{mid + 4}" text-anchor="middle" '
                 'font-size="12">response</text>')
    words = f"pipeline {name}: " + " then ".join(
        " or ".join(f"{v['function']} {v.get('weight', 100)}%" for v in s["variants"])
        + (f" (shadow {', '.join(s['shadow'])})" if s.get("shadow") else "") for s in stages)
    return Markup(f'<svg class="graph" role="img" width="{width}" height="{height}" '
                  f'viewBox="0 0 {width} {height}"><title>{escape(words)}</title>{"".join(parts)}</svg>')
