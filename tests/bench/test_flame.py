"""bench.flame: py-spy records a real Python process into a valid SVG, and the summary names where the CPU went.

py-spy is a dependency of the ``profile`` extra (installed in the test venv); it attaches with ptrace,
which the test machine allows for root.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

from bench import flame
from bench.__main__ import parse_args
from bench.context import Context
from bench.load import Settings

BURNER = textwrap.dedent("""
    import sys, time
    def burn_here(n):
        s = 0
        for i in range(n):
            s += i * i
        return s
    def loop():
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        end = time.monotonic() + 30
        while time.monotonic() < end:
            burn_here(20000)
    loop()
""")


def test_py_spy_records_a_real_process_into_a_valid_svg_and_summary(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BURNER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        request = flame.Request(tmp_path, "test", "stamp", {"burner": proc.pid})
        recordings = request.start(duration_s=1)
        got = {r.name: r.finish() for r in recordings}
    finally:
        proc.kill()
        proc.wait(10)
    info = got["burner"]
    assert info["py_spy_exit"] == 0, info
    assert info["svg"] == "flame-test-burner-stamp.svg"  # beside the results JSON, named without a folder
    svg = tmp_path / info["svg"]
    root = ET.parse(svg).getroot()  # well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    frames = flame.parse_flamegraph(svg.read_text())
    assert info["samples"] == flame.total_samples(frames) > 0
    summary = (tmp_path / info["summary"]).read_text()
    self_, inclusive = flame.self_and_inclusive(frames)
    assert self_.most_common(1)[0][0] == "burn_here (<string>)"
    assert inclusive["loop (<string>)"] >= inclusive["burn_here (<string>)"]
    assert "burn_here (<string>)" in summary and "top 25 functions by self" in summary
    assert not svg.with_suffix(".log").exists()  # py-spy's own output is kept only when it failed


def test_a_process_that_is_gone_is_an_error_in_the_json_not_a_crash(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    info = flame.Request(tmp_path, "test", "s", {"gone": proc.pid}).start(duration_s=1)[0].finish()
    assert info["py_spy_exit"] != 0
    assert info["error"]
    assert "summary" not in info


def test_gateway_is_recorded_without_its_children_replicas_with_theirs() -> None:
    argv = flame.record_argv("py-spy", 10, Path("/x.svg"), 3, subprocesses=False)
    assert argv[:2] == ["py-spy", "record"] and "--nonblocking" in argv and "--subprocesses" not in argv
    assert argv[argv.index("-f") + 1] == "flamegraph" and argv[argv.index("--duration") + 1] == "3"
    assert "--subprocesses" in flame.record_argv("py-spy", 10, Path("/x.svg"), 3, subprocesses=True)


SVG = """<svg xmlns="http://www.w3.org/2000/svg"><svg id="frames" total_samples="10">
<g><title>all (10 samples, 100%)</title><rect x="0%" y="52" width="100%" height="15" fg:x="0" fg:w="10"/></g>
<g><title>process 7:&quot;python a (b)&quot; (10 samples, 100.00%)</title><rect x="0%" y="68" fg:x="0" fg:w="10"/></g>
<g><title>main (app.py:3) (10 samples, 100.00%)</title><rect x="0%" y="84" fg:x="0" fg:w="10"/></g>
<g><title>walk (app.py:9) (6 samples, 60.00%)</title><rect x="0%" y="100" fg:x="0" fg:w="6"/></g>
<g><title>walk (app.py:10) (4 samples, 40.00%)</title><rect x="0%" y="116" fg:x="0" fg:w="4"/></g>
<g><title>json &lt;dumps&gt; (json/e.py:231) (3 samples, 30.00%)</title><rect x="0%" y="100" fg:x="6" fg:w="3"/></g>
</svg></svg>"""


def test_self_and_inclusive_from_an_inferno_svg() -> None:
    frames = flame.parse_flamegraph(SVG)
    assert [f.depth for f in frames] == [0, 1, 2, 3, 4, 3]
    assert frames[1].name == 'process 7:"python a (b)"'
    self_, inclusive = flame.self_and_inclusive(frames)
    # main: 10 - (6 + 3) = 1 of its own; walk recursed: 2 + 4 of its own, inclusive counted once (6, not 10)
    assert self_ == {"main (app.py)": 1, "walk (app.py)": 6, "json <dumps> (json/e.py)": 3}
    assert inclusive == {"main (app.py)": 10, "walk (app.py)": 6, "json <dumps> (json/e.py)": 3}
    text = flame.summarize(frames, "t")
    assert "10 samples" in text and 'process 7:"python a (b)"' in text


def test_a_classic_bottom_up_flame_graph_is_read_the_same_way() -> None:
    flipped = SVG
    for old, new in (('y="52"', 'y="900"'), ('y="68"', 'y="884"'), ('y="84"', 'y="868"'), ('y="100"', 'y="852"'),
                     ('y="116"', 'y="836"')):
        flipped = flipped.replace(old, new)
    assert [f.depth for f in flame.parse_flamegraph(flipped)] == [0, 1, 2, 3, 4, 3]


def test_an_empty_or_hostile_svg_gives_an_empty_summary_not_a_crash() -> None:
    assert flame.parse_flamegraph("<svg/>") == []
    assert "no samples" in flame.summarize([], "t")
    hostile = '<g><title><script>alert(1)</script></title><rect y="1" fg:x="x" fg:w="-1"/></g>' * 3
    assert flame.parse_flamegraph(hostile) == []


def test_profiling_is_off_unless_asked(tmp_path: Path) -> None:
    assert parse_args([]).profile is False
    assert parse_args(["--profile", "--cases", "uds"]).profile is True
    ctx = Context(Settings.for_mode(True), tmp_path, True)
    assert ctx.flame("uds", {"gateway": 1}) is None
    on = Context(Settings.for_mode(True), tmp_path, True, profile=True, out=tmp_path / "r", stamp="S")
    request = on.flame("uds", {"gateway": 1, "replica": 2}, {"gateway": False})
    assert request is not None and request.svg("replica") == tmp_path / "r" / "flame-uds-replica-S.svg"
    assert request.svg("../../etc/passwd").parent == tmp_path / "r"  # a process name never leaves the folder
    assert request.subprocesses == {"gateway": False}


def test_ensure_py_spy_finds_the_venvs_copy() -> None:
    found = flame.ensure_py_spy()
    assert Path(found).exists()
    assert subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30).stdout.startswith("py-spy")
