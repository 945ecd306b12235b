"""The goals of issues 7 and 18, judged from a run's results (None when the run lacks the case)."""

from __future__ import annotations

from typing import Any


def _point(case: dict[str, Any] | None, target_prefix: str, concurrency: int) -> dict[str, Any] | None:
    if not case or case.get("status") != "ok":
        return None
    return next((p for p in case.get("points", [])
                 if p["target"].startswith(target_prefix) and p["concurrency"] == concurrency), None)


def _goal(goal: str, met: bool | None, detail: str) -> dict[str, Any]:
    return {"goal": goal, "met": met, "detail": detail}


def gateway_hop(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "gateway adds <= 1 ms p50 at c=1"
    direct = (_point(cases.get("hop"), "hydro gateway's replica, called directly", 1)
              or _point(cases.get("hop"), "hydro runtime direct", 1))
    via = _point(cases.get("hop"), "hydro via gateway", 1)
    if not direct or not via:
        return _goal(goal, None, "hop case not run")
    added = via["p50_ms"] - direct["p50_ms"]
    return _goal(goal, added <= 1.0, f"gateway p50 {via['p50_ms']:.2f} ms vs direct {direct['p50_ms']:.2f} ms: "
                                     f"{added:+.2f} ms")


def pipeline_share(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "two-stage pipeline >= 60% of the monolith's req/s at c=8"
    pipe = _point(cases.get("pipeline"), "hydro 2-stage", 8)
    if not pipe:
        return _goal(goal, None, "pipeline case not run")
    share = pipe["ratio"]["rps"]
    if share is None:
        return _goal(goal, None, "no monolith figure")
    return _goal(goal, share >= 0.6, f"{pipe['rps']:.0f} req/s = {share:.0%} of the monolith")


def cold_start(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "cold start p50 < 300 ms and < 2x the floor"
    case = cases.get("coldstart")
    if not case or case.get("status") != "ok":
        return _goal(goal, None, "cold-start case not run")
    p50 = case["cold"]["summary"]["total_ms"]["p50"]
    floor = case["floor"]["summary"]["total_ms"]["p50"]
    times = case["ratio"]["p50"]
    return _goal(goal, p50 < 300 and times < 2, f"p50 {p50:.0f} ms = {times:.2f}x the floor ({floor:.0f} ms)")


def ahead_of_peers(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "at c=32 more req/s than every peer, direct and through the gateway"
    case = cases.get("peers")
    if not case or case.get("status") != "ok":
        return _goal(goal, None, "peers case not run")
    ours = {p["target"]: p["rps"] for p in case["points"] if p["concurrency"] == 32 and p["target"].startswith("hydro")}
    theirs = {p["target"]: p["rps"] for p in case["points"] if p["concurrency"] == 32
              and not p["target"].startswith("hydro") and p["target"] != case["baseline"]}
    if not theirs:
        return _goal(goal, None, "no peer ran")
    best_name, best = max(theirs.items(), key=lambda kv: kv[1])
    met = all(rps > best for rps in ours.values())
    detail = ", ".join(f"{t} {r:.0f}" for t, r in ours.items()) + f" vs best peer {best_name} {best:.0f} req/s"
    return _goal(goal, met, detail)


def batching_matches_flask(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "with batching, a directly called function >= the two-worker Flask app (c=32)"
    case = cases.get("batching")
    if not case or case.get("status") != "ok":
        reason = case.get("reason") if case else "batching case not run"
        return _goal(goal, None, reason or "batching case not run")
    on = next((p for p in case["points"] if "batching" in p["target"] and "off" not in p["target"]
               and "WORKERS" not in p["target"]), None)
    if on is None or on["ratio"]["rps"] is None:
        return _goal(goal, None, "no batching figure")
    return _goal(goal, on["ratio"]["rps"] >= 1.0, f"{on['rps']:.0f} req/s = {on['ratio']['rps']:.2f}x Flask")


def monitoring_overhead(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "payload sampling at 1.0 adds <= 0.1 ms p50 to the invocation path"
    case = cases.get("monitor")
    if not case or case.get("status") != "ok":
        return _goal(goal, None, "monitor case not run")
    hot = case["hot_path_us"]["sample 1.0"]["p50_us"]
    return _goal(goal, hot <= 100.0, f"gateway tap+offer {hot:.1f} us p50 per request; demo pipeline p50 "
                                     f"{case['added_p50_ms']:+.2f} ms with every stage sampled")


# ---- issue 18 (runtime: points 1, 4, 5) -------------------------------------------------------------------


def runtime_vs_handwritten(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "issue 18: the runtime called directly >= 1.0x the hand-written Flask+gunicorn app at c=1, 8 and 32"
    inter = cases.get("runtime")
    if inter and inter.get("status") == "ok" and inter.get("summary"):  # interleaved rounds: the better figure
        medians = {c: s["median_ratio_rps"] for c, s in inter["summary"].items()}
        return _goal(goal, all(r >= 1.0 for r in medians.values()),
                     "interleaved, median of rounds: " + ", ".join(f"c={c} {r:.2f}x" for c, r in medians.items()))
    case = cases.get("hop")
    if not case or case.get("status") != "ok":
        return _goal(goal, None, "hop case not run")
    found = [p for p in case["points"] if p["target"] == "hydro runtime direct"]
    if not found or any(p["ratio"]["rps"] is None for p in found):
        return _goal(goal, None, "no runtime-direct figures")
    return _goal(goal, all(p["ratio"]["rps"] >= 1.0 for p in found),
                 ", ".join(f"c={p['concurrency']} {p['ratio']['rps']:.2f}x" for p in found))


def forest_batching_pays(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "issue 18: batching the demo's forest >= 1.5x the forest without batching at c=32"
    case = cases.get("batching")
    if not case or case.get("status") != "ok":
        return _goal(goal, None, (case or {}).get("reason") or "batching case not run")
    on = next((p for p in case["points"] if p["target"].startswith("forest, batching ") and "off" not in p["target"]
               and "WORKERS" not in p["target"]), None)
    if on is None or on.get("vs_batching_off") is None:
        return _goal(goal, None, "no forest batching figure")
    return _goal(goal, on["vs_batching_off"] >= 1.5, f"{on['rps']:.0f} req/s = {on['vs_batching_off']:.2f}x batching "
                                                     f"off (mean batch {on.get('mean_batch_size') or 0:.1f})")


def cold_start_halved(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "issue 18: cold start through the gateway <= 150 ms p50 (demo's forest)"
    case = cases.get("coldstart")
    if not case or case.get("status") != "ok":
        return _goal(goal, None, "cold-start case not run")
    p50 = case["cold"]["summary"]["total_ms"]["p50"]
    detail = f"p50 {p50:.0f} ms = {case['ratio']['p50']:.2f}x the fresh-process floor"
    ab = case.get("ratio", {}).get("vs_per_worker_load_p50")
    if ab is not None:
        detail += f"; {ab:.2f}x the same run with each worker loading (HYDRO_LOAD_BEFORE_FORK=0)"
    return _goal(goal, p50 <= 150, detail)


def cpu_reason(point: dict[str, Any] | None) -> str:
    """Why a throughput ratio is what it is, from the point's CPU accounting (empty without one).

    ``ceiling 0.55x (gateway 213 + replica 418 + wrk 20 = 651 us/req vs 358 direct; idle 0%, other 1890)``:
    a CPU-bound machine cannot give the row more than the ceiling; ``other`` is what else ran.
    """
    if not point or point.get("cpu_ceiling") is None:
        return ""
    cpu = point["cpu_us_per_request"]
    parts = " + ".join(f"{k} {v:.0f}" for k, v in cpu.items() if k not in ("total", "other"))
    base_total = cpu["total"] * point["cpu_ceiling"]
    return (f" [c={point['concurrency']} CPU ceiling {point['cpu_ceiling']:.2f}x: {parts} = {cpu['total']:.0f} "
            f"us/req vs {base_total:.0f} for the baseline; idle {100 * point.get('machine_idle', 0):.0f}%, "
            f"other {cpu.get('other', 0):.0f} us/req]")


def _uds_point(cases: dict[str, Any], target: str, concurrency: int) -> dict[str, Any] | None:
    return _point(cases.get("uds"), target, concurrency)


def uds_hop(cases: dict[str, Any]) -> dict[str, Any]:
    """Issue 18 point 2: the gateway hop over a unix socket costs <= 0.5 ms p50 at one client."""
    goal = "gateway hop (replica on a unix socket) <= +0.5 ms p50 at c=1"
    direct = _uds_point(cases, "replica called directly", 1)
    via = _uds_point(cases, "through the gateway, replica over a unix socket", 1)
    tcp = _uds_point(cases, "through the gateway, replica over TCP", 1)
    if not direct or not via:
        return _goal(goal, None, "uds case not run")
    added = via["p50_ms"] - direct["p50_ms"]
    detail = f"p50 {via['p50_ms']:.2f} ms vs direct {direct['p50_ms']:.2f} ms: {added:+.2f} ms"
    if tcp:
        detail += f" (replica over TCP: {tcp['p50_ms'] - direct['p50_ms']:+.2f} ms)"
    return _goal(goal, added <= 0.5, detail)


def uds_throughput(cases: dict[str, Any]) -> dict[str, Any]:
    """Issue 17 point 3 / 18 point 2: through-gateway req/s >= 0.8x the replica called directly, c=8 and c=32."""
    goal = "through the gateway (unix socket) >= 0.8x the direct replica's req/s at c=8 and c=32"
    shares = {}
    for c in (8, 32):
        via = _uds_point(cases, "through the gateway, replica over a unix socket", c)
        if not via or via["ratio"]["rps"] is None:
            return _goal(goal, None, "uds case not run")
        shares[c] = via["ratio"]["rps"]
    tcp = {c: (_uds_point(cases, "through the gateway, replica over TCP", c) or {}).get("ratio", {}).get("rps")
           for c in (8, 32)}
    detail = ", ".join(f"c={c}: {s:.2f}x" + (f" (TCP {tcp[c]:.2f}x)" if tcp[c] is not None else "")
                       for c, s in shares.items())
    detail += "".join(cpu_reason(_uds_point(cases, "through the gateway, replica over a unix socket", c))
                      for c in (8, 32))
    return _goal(goal, all(s >= 0.8 for s in shares.values()), detail)


def _router_point(cases: dict[str, Any], target: str, concurrency: int) -> dict[str, Any] | None:
    case = cases.get("router")
    if not case or case.get("status") != "ok":
        return None
    return next((p for p in case["points"] if p["target"] == target and p["concurrency"] == concurrency), None)


def router_one_stage(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "1-stage pipeline (direct path) within +1 ms p50 of its replica at c=1 and >= 0.7x its req/s at c=8"
    c1 = _router_point(cases, "1-stage pipeline, direct path", 1)
    c8 = _router_point(cases, "1-stage pipeline, direct path", 8)
    base1 = _router_point(cases, "iris replica, called directly", 1)
    if not c1 or not c8 or not base1 or c8["ratio"]["rps"] is None:
        return _goal(goal, None, "router case not run")
    added = c1["p50_ms"] - base1["p50_ms"]
    share = c8["ratio"]["rps"]
    return _goal(goal, added <= 1.0 and share >= 0.7,
                 f"c=1 p50 {c1['p50_ms']:.2f} ms vs {base1['p50_ms']:.2f} ms ({added:+.2f} ms); c=8 {share:.2f}x"
                 + cpu_reason(c8))


def router_two_stage(cases: dict[str, Any]) -> dict[str, Any]:
    goal = "2-stage demo pipeline (direct path) >= 0.8x the monolith's req/s at c=8 and c=32"
    shares = {c: (_router_point(cases, "2-stage pipeline, direct path", c) or {}).get("ratio", {}).get("rps")
              for c in (8, 32)}
    if any(v is None for v in shares.values()):
        return _goal(goal, None, "router case not run")
    return _goal(goal, all(v >= 0.8 for v in shares.values()),
                 ", ".join(f"c={c} {v:.2f}x" for c, v in shares.items())
                 + "".join(cpu_reason(_router_point(cases, "2-stage pipeline, direct path", c)) for c in (8, 32)))




JUDGES = (gateway_hop, uds_hop, uds_throughput, pipeline_share, cold_start, ahead_of_peers, batching_matches_flask,
          monitoring_overhead, runtime_vs_handwritten, forest_batching_pays, cold_start_halved, router_one_stage,
          router_two_stage)


def judge(cases: dict[str, Any]) -> list[dict[str, Any]]:
    return [j(cases) for j in JUDGES]
