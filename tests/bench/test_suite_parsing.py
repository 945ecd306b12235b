"""The benchmark suite's own arithmetic and parsing: wrk output, percentiles, ratios, results shape.

No timings are asserted here; these tests only pin down how the suite reads and reports numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import goals, machine, results, stats, wrk

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:8080/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.11ms    1.02ms  21.00ms   90.00%
    Req/Sec     1.90k   200.00     2.20k    70.00%
  Latency Distribution
     50%  845.00us
     75%    2.40ms
     90%    3.00ms
     99%    1.02s
  11376 requests in 3.00s, 1.50MB read
  Non-2xx or 3xx responses: 5
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   3790.12
Transfer/sec:    500.00KB
"""

HOOK = ('BENCH_JSON {"requests":11376,"duration_us":3000000,"bytes":1,"p50_us":850,"p75_us":2400,"p90_us":3000,'
        '"p99_us":1020000,"p999_us":1500000,"max_us":2000000,"mean_us":2110.0,"stdev_us":1020.0,"err_connect":0,'
        '"err_read":2,"err_write":0,"err_status":5,"err_timeout":1}')


def test_wrk_distribution_units_and_summary() -> None:
    result = wrk.parse_output(WRK_OUTPUT)
    assert result.latency_ms["50"] == pytest.approx(0.845)
    assert result.latency_ms["75"] == pytest.approx(2.4)
    assert result.latency_ms["99"] == pytest.approx(1020.0)
    assert result.rps == pytest.approx(3790.12)
    assert result.requests == 11376
    assert result.duration_s == pytest.approx(3.0)
    assert result.non_2xx == 5
    assert result.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 1}
    assert result.errors == 8


def test_wrk_lua_hook_gives_exact_percentiles() -> None:
    result = wrk.parse_output(WRK_OUTPUT + HOOK + "\n")
    assert result.p50_ms == pytest.approx(0.85)  # the hook's exact figure wins over the rounded one
    assert result.latency_ms["99.9"] == pytest.approx(1500.0)
    assert result.latency_ms["max"] == pytest.approx(2000.0)
    assert result.exact["requests"] == 11376


def test_wrk_hook_errors_count_when_wrk_prints_no_socket_line() -> None:
    text = WRK_OUTPUT.replace("  Socket errors: connect 0, read 2, write 0, timeout 1\n", "")
    text = text.replace("  Non-2xx or 3xx responses: 5\n", "")
    result = wrk.parse_output(text + HOOK)
    assert result.socket_errors["read"] == 2
    assert result.non_2xx == 5


@pytest.mark.parametrize("text", ["", "Requests/sec: 10\n", WRK_OUTPUT.replace("Latency Distribution", "x")])
def test_wrk_output_without_summary_or_distribution_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        wrk.parse_output(text)


def test_wrk_argv_whole_seconds_and_thread_cap(tmp_path: Path) -> None:
    script = wrk.write_script(tmp_path, "t", b'[[1, 2]]')
    argv = wrk.wrk_argv("http://127.0.0.1:1/", script, 32, 0.4)
    assert argv[argv.index("-d") + 1] == "1s"
    assert argv[argv.index("-t") + 1] == "2"
    assert argv[argv.index("-c") + 1] == "32"
    assert "--latency" in argv
    assert wrk.wrk_argv("http://x/", script, 1, 3)[3] == "1"  # one connection, one thread
    lua = script.read_text()
    assert str(tmp_path / "t.body") in lua and 'wrk.method = "POST"' in lua
    assert (tmp_path / "t.body").read_bytes() == b"[[1, 2]]"


def test_percentile_interpolates_like_numpy() -> None:
    values = [10.0, 1.0, 3.0, 2.0]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 10.0
    assert stats.percentile(values, 50) == pytest.approx(2.5)
    assert stats.percentile([5.0], 99) == 5.0
    assert stats.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_ratio_and_differs() -> None:
    assert stats.ratio(300.0, 600.0) == 0.5
    assert stats.ratio(1.0, 0.0) is None
    assert stats.ratio(None, 1.0) is None
    assert stats.differs(1.0, 1.2) is False
    assert stats.differs(1.0, 2.0) is True
    assert stats.differs(None, 2.0) is False


def _point(target: str, c: int, rps: float, p50: float, p99: float) -> dict:
    result = wrk.WrkResult(rps=rps, requests=int(rps), duration_s=1.0, latency_ms={"50": p50, "99": p99})
    return results.point(target, c, result, {"p50_ms": p50 * 2, "p99_ms": p99})


def test_ratios_are_per_concurrency_against_the_baseline() -> None:
    points = [_point("base", 1, 1000, 1.0, 2.0), _point("base", 8, 2000, 2.0, 4.0),
              _point("ours", 1, 500, 2.0, 2.0), _point("ours", 8, 3000, 1.0, 8.0), _point("ours", 32, 10, 1, 1)]
    results.add_ratios(points, "base")
    ours1, ours8, ours32 = points[2:]
    assert ours1["ratio"] == {"rps": 0.5, "p50_ms": 2.0, "p99_ms": 1.0}
    assert ours8["ratio"] == {"rps": 1.5, "p50_ms": 0.5, "p99_ms": 2.0}
    assert ours32["ratio"] == {"rps": None, "p50_ms": None, "p99_ms": None}  # no baseline at c=32
    assert points[0]["ratio"]["rps"] == 1.0
    assert ours1["client_differs"] is True  # the client's p50 is twice wrk's


def _doc() -> dict:
    doc = results.new_results(["python", "-m", "bench", "--quick"], "quick", machine.describe(),
                              machine.package_versions(), {"name": "wrk", "version": "wrk 4"}, {"duration_s": 3})
    points = [_point("flask", 1, 1000, 1.0, 2.0), _point("hydro runtime direct", 1, 900, 1.2, 3.0),
              _point("hydro via gateway", 1, 700, 1.9, 4.0)]
    results.add_ratios(points, "flask")
    doc["cases"]["hop"] = {"status": "ok", "title": "hop", "baseline": "flask", "points": points}
    doc["cases"]["batching"] = {"status": "skipped", "title": "batching", "reason": "not implemented"}
    doc["goals"] = goals.judge(doc["cases"])
    return doc


def test_results_document_shape_round_trips(tmp_path: Path) -> None:
    doc = _doc()
    assert results.validate(doc) == []
    path = results.write(doc, tmp_path)
    assert path.suffix == ".json" and path.parent == tmp_path
    loaded = json.loads(path.read_text())
    assert results.validate(loaded) == []
    assert loaded["machine"]["nproc"] >= 1 and loaded["machine"]["python"]
    table = results.render(loaded)
    assert "hydro via gateway" in table and "(0.70x)" in table and "SKIPPED: not implemented" in table


def test_validate_names_what_is_missing() -> None:
    doc = _doc()
    del doc["machine"]["cpu_model"]
    doc["cases"]["hop"]["points"][0].pop("ratio")
    doc["cases"]["batching"].pop("reason")
    problems = results.validate(doc)
    assert "machine.cpu_model is missing" in problems
    assert "cases.hop.points[0].ratio is missing" in problems
    assert "cases.batching: a skipped case needs a reason" in problems


def test_goals_judge_from_points() -> None:
    by_goal = {g["goal"]: g for g in _doc()["goals"]}
    hop = by_goal["gateway adds <= 1 ms p50 at c=1"]
    assert hop["met"] is True and "+0.70 ms" in hop["detail"]
    assert by_goal["two-stage pipeline >= 60% of the monolith's req/s at c=8"]["met"] is None
    assert by_goal["with batching, a directly called function >= the two-worker Flask app (c=32)"]["detail"] == \
        "not implemented"


def test_router_goals_judge_each_part_against_its_own_baseline() -> None:
    one = [_point("iris replica, called directly", 1, 1000, 0.5, 1.0),
           _point("iris replica, called directly", 8, 2000, 2.0, 4.0),
           _point("1-stage pipeline, direct path", 1, 600, 1.3, 3.0),
           _point("1-stage pipeline, direct path", 8, 1500, 3.0, 6.0)]
    two = [_point("monolith flask+gunicorn (-w2 gthread x4)", 8, 100, 80, 300),
           _point("monolith flask+gunicorn (-w2 gthread x4)", 32, 100, 250, 900),
           _point("2-stage pipeline, direct path", 8, 90, 90, 300),
           _point("2-stage pipeline, direct path", 32, 70, 400, 900)]
    results.add_ratios(one, "iris replica, called directly")
    results.add_ratios(two, "monolith flask+gunicorn (-w2 gthread x4)")
    by_goal = {g["goal"].split(" (")[0]: g for g in goals.judge({"router": {"status": "ok", "points": one + two}})}
    first, second = by_goal["1-stage pipeline"], by_goal["2-stage demo pipeline"]
    assert first["met"] is True and "+0.80 ms" in first["detail"] and "0.75x" in first["detail"]
    assert second["met"] is False and second["detail"] == "c=8 0.90x, c=32 0.70x"
    assert all(g["met"] is None for g in goals.judge({})[-2:])  # no router case: not judged


def test_machine_parsers() -> None:
    assert machine.cpu_model("processor : 0\nmodel name\t: Some CPU @ 2GHz\n") == "Some CPU @ 2GHz"
    assert machine.memory_bytes("MemTotal:       16384 kB\n") == 16384 * 1024


def test_uds_goals_judge_the_hop_and_throughput_against_the_direct_call() -> None:
    from bench.cases.uds import DIRECT, VIA_TCP, VIA_UNIX

    points = []
    for c, direct_rps in ((1, 1000), (8, 2000), (32, 2200)):
        points += [_point(DIRECT, c, direct_rps, 1.0, 2.0), _point(VIA_TCP, c, direct_rps * 0.7, 1.8, 3.0),
                   _point(VIA_UNIX, c, direct_rps * (0.85 if c == 8 else 0.75), 1.4, 3.0)]
    results.add_ratios(points, DIRECT)
    by_goal = {g["goal"]: g for g in goals.judge({"uds": {"status": "ok", "baseline": DIRECT, "points": points}})}
    hop = by_goal["gateway hop (replica on a unix socket) <= +0.5 ms p50 at c=1"]
    assert hop["met"] is True and "+0.40 ms" in hop["detail"] and "TCP: +0.80 ms" in hop["detail"]
    rps = by_goal["through the gateway (unix socket) >= 0.8x the direct replica's req/s at c=8 and c=32"]
    assert rps["met"] is False and "c=8: 0.85x (TCP 0.70x), c=32: 0.75x" in rps["detail"]
    assert by_goal["gateway hop (replica on a unix socket) <= +0.5 ms p50 at c=1"]["goal"] in [
        g["goal"] for g in goals.judge({})]
    assert all(g["met"] is None for g in goals.judge({}) if "unix socket" in g["goal"])
