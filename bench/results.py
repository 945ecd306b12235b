"""The results of a run: measurement points, ratios to the baseline, the JSON file and the table.

A point is one target under one load (``target``, ``concurrency``): wrk's req/s and percentiles,
the suite's own client's percentiles, and ``ratio`` to the case's baseline at the same
concurrency. Every case names its baseline; ratios are computed here, once, for every case.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.cpu import ceiling
from bench.stats import differs, ratio
from bench.wrk import WrkResult

SCHEMA = 1
RATIO_KEYS = ("rps", "p50_ms", "p99_ms")


def point(target: str, concurrency: int, result: WrkResult, client: dict[str, float] | None = None,
          **extra: Any) -> dict[str, Any]:
    """One measurement as stored in the JSON (ratios are added by :func:`add_ratios`)."""
    out: dict[str, Any] = {
        "target": target, "concurrency": concurrency,
        "rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
        "errors": result.errors, "wrk": result.to_dict(),
    }
    if client:
        out["client"] = client
        out["client_differs"] = (differs(client.get("p50_ms"), result.p50_ms)
                                 or differs(client.get("p99_ms"), result.p99_ms))
    out.update(extra)
    return out


def add_ratios(points: list[dict[str, Any]], baseline: str) -> None:
    """Set ``ratio`` on every point against the ``baseline`` target's point at the same concurrency."""
    base = {p["concurrency"]: p for p in points if p["target"] == baseline}
    for p in points:
        ref = base.get(p["concurrency"])
        p["ratio"] = {k: ratio(p.get(k), ref.get(k) if ref else None) for k in RATIO_KEYS}
        if "cpu_us_per_request" in p:  # what the CPU arithmetic predicts, beside the measured req/s ratio
            p["cpu_ceiling"] = ceiling(ref, p)


def new_results(command: list[str], mode: str, machine: dict[str, Any], packages: dict[str, str],
                generator: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "mode": mode,
        "generator": generator,
        "machine": machine,
        "packages": packages,
        "settings": settings,
        "cases": {},
        "goals": [],
    }


def validate(results: dict[str, Any]) -> list[str]:
    """Problems with a results document's shape (empty when it is well-formed)."""
    problems = []
    for key, kind in (("schema", int), ("date", str), ("command", list), ("mode", str), ("generator", dict),
                      ("machine", dict), ("packages", dict), ("settings", dict), ("cases", dict), ("goals", list)):
        if not isinstance(results.get(key), kind):
            problems.append(f"'{key}' must be a {kind.__name__}")
    for key in ("nproc", "cpu_model", "memory_bytes", "python"):
        if key not in results.get("machine", {}):
            problems.append(f"machine.{key} is missing")
    for name, case in (results.get("cases") or {}).items():
        status = case.get("status")
        if status not in ("ok", "skipped", "failed"):
            problems.append(f"cases.{name}.status must be ok, skipped or failed")
        if status != "ok":
            if not case.get("reason"):
                problems.append(f"cases.{name}: a {status} case needs a reason")
            continue
        if not case.get("baseline"):
            problems.append(f"cases.{name}.baseline is missing")
        for i, p in enumerate(case.get("points", [])):
            for key in ("target", "concurrency", "rps", "p50_ms", "p99_ms", "ratio"):
                if key not in p:
                    problems.append(f"cases.{name}.points[{i}].{key} is missing")
    for i, goal in enumerate(results.get("goals", [])):
        for key in ("goal", "met", "detail"):
            if key not in goal:
                problems.append(f"goals[{i}].{key} is missing")
    return problems


def write(results: dict[str, Any], out_dir: Path) -> Path:
    """``out_dir/<date>.json`` (written whole through a temporary file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    path = out_dir / f"{stamp}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


# ---- the table ----------------------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rel(value: float | None) -> str:
    return "" if value is None else f" ({value:.2f}x)"


def render_case(name: str, case: dict[str, Any]) -> str:
    """A plain-text table of one case: figures with their ratio to the baseline in parentheses."""
    lines = [f"== {name}: {case.get('title', '')}"]
    if case.get("status") != "ok":
        lines.append(f"   {case.get('status', '?').upper()}: {case.get('reason', '')}")
        return "\n".join(lines)
    lines.append(f"   baseline: {case['baseline']}")
    if case.get("points"):
        header = f"   {'target':<42} {'c':>3} {'req/s':>18} {'p50 ms':>16} {'p99 ms':>16} {'client p50/p99 ms':>18} err"
        lines.append(header)
        for p in case["points"]:
            r = p.get("ratio", {})
            client = p.get("client") or {}
            cl = f"{_fmt(client.get('p50_ms'))}/{_fmt(client.get('p99_ms'))}" if client else "-"
            mark = "*" if p.get("client_differs") else " "
            lines.append(f"   {p['target']:<42} {p['concurrency']:>3} "
                         f"{_fmt(p['rps'], 0) + _rel(r.get('rps')):>18} "
                         f"{_fmt(p['p50_ms']) + _rel(r.get('p50_ms')):>16} "
                         f"{_fmt(p['p99_ms']) + _rel(r.get('p99_ms')):>16} {cl:>17}{mark} {p.get('errors', 0)}")
            cpu_line = render_cpu(p)
            if cpu_line:
                lines.append(cpu_line)
    for row in case.get("rows", []):  # non-load cases (cold start) render their own rows
        lines.append("   " + row)
    for note in case.get("notes", []):
        lines.append(f"   note: {note}")
    return "\n".join(lines)


def render_cpu(p: dict[str, Any]) -> str:
    """The CPU line under a point: us of CPU per request per process tree, the machine's idle, the ceiling."""
    cpu = p.get("cpu_us_per_request")
    if not cpu:
        return ""
    parts = [f"{name} {us:.0f}" for name, us in cpu.items() if name not in ("total", "other")]
    text = f"      cpu us/req: {' + '.join(parts)} = {cpu.get('total', 0):.0f} (other {cpu.get('other', 0):.0f})"
    if p.get("machine_idle") is not None:
        text += f"; idle {100 * p['machine_idle']:.0f}%"
    if p.get("cpu_ceiling") is not None:
        text += f"; ceiling {p['cpu_ceiling']:.2f}x vs measured {_fmt((p.get('ratio') or {}).get('rps'))}x"
    spread = {k: v for k, v in (p.get("core_share_per_process") or {}).items() if len(v) > 1}
    if spread:  # cores used by each busy process of a tree (a GIL-bound worker sits near 1.0)
        text += "; cores per process " + ", ".join(f"{k} {'+'.join(f'{x:.2f}' for x in v)}" for k, v in spread.items())
    if p.get("replicas"):
        text += "; replicas " + ", ".join(f"{k} {v}" for k, v in p["replicas"].items())
    settled = p.get("settled")
    if settled:  # the wait for a quiet machine before a baseline (bench.settle)
        text += (f"; quiet after {settled['waited_s']:.0f}s" if settled.get("quiet") else
                 f"; NOT QUIET after {settled['waited_s']:.0f}s (idle {100 * settled.get('machine_idle', 0):.0f}%, "
                 f"load {settled.get('loadavg_1m', 0):.1f})")
    if p.get("profiled"):
        text += "; PROFILED (py-spy running: figures perturbed)"
    return text


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    mem = m.get("memory_bytes")
    head = [f"Hydro Serving benchmarks - {results['date']} - mode {results['mode']}",
            f"machine: {m.get('nproc')} cores, {m.get('cpu_model')}, "
            f"{(mem or 0) / 2**30:.1f} GiB, Python {m.get('python')}",
            f"load generator: {results['generator'].get('version')}",
            "ratios in parentheses are to the case's baseline at the same concurrency, measured in this run; "
            "* = the suite's own client disagrees with wrk by more than 25%",
            "cpu us/req: CPU microseconds per request of each process tree over the wrk run (other = the rest of "
            "the machine's busy CPU); ceiling = the baseline's total CPU per request / the row's"]
    body = [render_case(name, case) for name, case in results["cases"].items()]
    goals = ["== goals (issues 7 and 18)"] + [
        f"   [{'MET ' if g['met'] else ('MISS' if g['met'] is False else 'n/a ')}] {g['goal']}: {g['detail']}"
        for g in results.get("goals", [])]
    return "\n".join([*head, "", *body, "", *goals])
