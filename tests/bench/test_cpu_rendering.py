"""How the CPU accounting shows in the results: the ceiling beside the measured ratio, the printed CPU line."""

from __future__ import annotations

from typing import Any

from bench import results
from bench.cases.router import one_worker
from bench.wrk import WrkResult


def _point(target: str, rps: float, cpu: dict[str, float] | None, **extra: Any) -> dict[str, Any]:
    result = WrkResult(rps=rps, requests=int(rps * 3), duration_s=3.0, latency_ms={"50": 1.0, "99": 2.0})
    accounting = {"cpu_us_per_request": cpu, "machine_idle": 0.06} if cpu else {}
    return results.point(target, 8, result, None, **accounting, **extra)


def lead_points() -> list[dict[str, Any]]:
    """The lead's hand measurement at c=8 (brief): direct replica 335 us; via the gateway 400 + 216 us."""
    return [_point("direct", 5000, {"replica": 335.0, "total": 335.0, "other": 3.0},
                   settled={"quiet": False, "waited_s": 15.4, "machine_idle": 0.044, "loadavg_1m": 5.89}),
            _point("via gateway", 2400, {"gateway": 216.0, "replica": 400.0, "total": 616.0, "other": 40.0},
                   replicas={"iris": 1}, core_share_per_process={"replica": [0.62, 0.58]}),
            _point("pipeline", 800, {"gateway": 313.0, "replica": 608.0, "router": 986.0, "total": 1907.0,
                                     "other": 0.0}, profiled={"gateway": {"svg": "x.svg"}}),
            _point("no accounting", 100, None)]


def test_the_ceiling_is_the_baselines_cpu_over_the_rows() -> None:
    points = lead_points()
    results.add_ratios(points, "direct")
    assert points[0]["cpu_ceiling"] == 1.0
    assert points[1]["cpu_ceiling"] == round(335 / 616, 3)  # 0.544: the arithmetic the lead did by hand
    assert points[2]["cpu_ceiling"] == round(335 / 1907, 3)
    assert "cpu_ceiling" not in points[3]  # no accounting, no ceiling (and no crash)
    assert points[1]["ratio"]["rps"] == 0.48


def test_the_table_prints_cpu_per_process_idle_ceiling_and_marks() -> None:
    points = lead_points()
    results.add_ratios(points, "direct")
    case = {"status": "ok", "title": "t", "baseline": "direct", "points": points}
    text = results.render_case("uds", case)
    lines = text.splitlines()
    via = lines.index(next(line for line in lines if line.strip().startswith("via gateway")))
    cpu_line = lines[via + 1]
    assert "cpu us/req: gateway 216 + replica 400 = 616 (other 40)" in cpu_line
    assert "idle 6%" in cpu_line and "ceiling 0.54x vs measured 0.48x" in cpu_line
    assert "cores per process replica 0.62+0.58" in cpu_line and "replicas iris 1" in cpu_line
    assert "PROFILED" in next(line for line in lines if "router 986" in line)
    assert "NOT QUIET after 15s (idle 4%, load 5.9)" in lines[lines.index(next(
        line for line in lines if line.strip().startswith("direct"))) + 1]
    after_plain = lines[lines.index(next(line for line in lines if line.strip().startswith("no accounting"))) + 1:]
    assert not any("cpu us/req" in line for line in after_plain)


def test_the_results_document_stays_valid_with_the_new_fields() -> None:
    points = lead_points()
    results.add_ratios(points, "direct")
    doc = results.new_results(["python", "-m", "bench"], "quick", {"nproc": 2, "cpu_model": "x",
                                                                   "memory_bytes": 1, "python": "3.11"},
                              {}, {"name": "wrk"}, {})
    doc["cases"]["uds"] = {"status": "ok", "title": "t", "baseline": "direct", "points": points}
    assert results.validate(doc) == []
    assert "ceiling = the baseline's total CPU per request / the row's" in results.render(doc)


def test_a_baseline_served_by_one_worker_is_recognised() -> None:
    assert one_worker({"core_share_per_process": {"monolith": [1.05]}}, "monolith")
    assert one_worker({"core_share_per_process": {"monolith": [0.98, 0.03]}}, "monolith")
    assert not one_worker({"core_share_per_process": {"monolith": [0.7, 0.6]}}, "monolith")
    assert not one_worker({"core_share_per_process": {"monolith": [0.05]}}, "monolith")  # idle, not lopsided
    assert not one_worker({}, "monolith")


def test_a_missed_throughput_goal_names_its_cpu_ceiling() -> None:
    from bench import goals
    from bench.cases.uds import DIRECT, VIA_TCP, VIA_UNIX

    points = []
    for c in (1, 8, 32):
        points += [_point(DIRECT, 5000, {"replica": 335.0, "wrk": 20.0, "total": 355.0, "other": 5.0}),
                   _point(VIA_TCP, 2400, {"gateway": 216.0, "replica": 400.0, "wrk": 20.0, "total": 636.0,
                                          "other": 5.0}),
                   _point(VIA_UNIX, 2500, {"gateway": 200.0, "replica": 390.0, "wrk": 20.0, "total": 610.0,
                                           "other": 300.0})]
        for p in points[-3:]:
            p["concurrency"] = c
    results.add_ratios(points, DIRECT)
    rps = next(g for g in goals.judge({"uds": {"status": "ok", "baseline": DIRECT, "points": points}})
               if g["goal"].startswith("through the gateway"))
    assert rps["met"] is False
    assert ("[c=8 CPU ceiling 0.58x: gateway 200 + replica 390 + wrk 20 = 610 us/req vs 355 for the baseline; "
            "idle 6%, other 300 us/req]") in rps["detail"]
    assert goals.cpu_reason(None) == "" and goals.cpu_reason({"rps": 1}) == ""
