"""bench.cpu and bench.settle against real processes: a tree of children that burn a known amount of CPU.

The children burn CPU until their own ``time.process_time()`` has advanced by a fixed amount, so
what the accounting must find is known in CPU seconds, whatever the machine's load (no wall-clock
timing is asserted: a busy machine makes the burn take longer, not cost more CPU).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import cpu, settle

BURN_S = 0.3

# a parent that starts two children; each waits for its go-file, burns BURN_S of CPU, writes a done-file, sleeps
TREE = textwrap.dedent("""
    import os, subprocess, sys, time
    folder = sys.argv[1]
    child = '''
    import os, sys, time
    go, done = sys.argv[1], sys.argv[2]
    while not os.path.exists(go):
        time.sleep(0.01)
    start = time.process_time()
    x = 0
    while time.process_time() - start < {burn}:
        x += 1
    open(done, "w").write(str(os.getpid()))
    time.sleep(600)
    '''
    kids = [subprocess.Popen([sys.executable, "-c", child, os.path.join(folder, "go"),
                              os.path.join(folder, f"done{{i}}")]) for i in range(2)]
    open(os.path.join(folder, "pids"), "w").write(" ".join(str(k.pid) for k in kids))
    time.sleep(600)
""").format(burn=BURN_S)


def _wait_for(path: Path) -> None:
    # bounded by the test's own timeout; this is a wait for an event, not a timed assertion
    import time

    for _ in range(6000):
        if path.exists() and path.read_text().strip():
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[int], Path]]:
    proc = subprocess.Popen([sys.executable, "-c", TREE, str(tmp_path)], start_new_session=True)
    try:
        _wait_for(tmp_path / "pids")
        kids = [int(p) for p in (tmp_path / "pids").read_text().split()]
        yield proc, kids, tmp_path
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)


def test_a_tree_is_the_root_and_its_descendants(tree: tuple[subprocess.Popen[bytes], list[int], Path]) -> None:
    proc, kids, _ = tree
    table = cpu.process_table()
    assert cpu.tree_pids(proc.pid, table) == {proc.pid, *kids}
    assert cpu.tree_pids(proc.pid, table, exclude=[kids[0]]) == {proc.pid, kids[1]}
    assert cpu.tree_pids(os.getpid(), table) >= {os.getpid(), proc.pid, *kids}
    assert cpu.tree_pids(2**22 + 17, table) == set()  # no such process: an empty tree, not an error


def test_cpu_burnt_by_the_children_is_counted_once_per_tree(
        tree: tuple[subprocess.Popen[bytes], list[int], Path]) -> None:
    proc, kids, folder = tree
    trees = {"whole": cpu.Tree((proc.pid,)), "first": cpu.Tree((kids[0],)),
             "parent only": cpu.Tree((proc.pid,), exclude=tuple(kids))}
    before = cpu.snapshot(trees)
    (folder / "go").write_text("1")
    _wait_for(folder / "done0")
    _wait_for(folder / "done1")
    usage = cpu.between(before, cpu.snapshot(trees), child=None)
    # each child burnt at least BURN_S of its own CPU; the jiffy clock (1/100 s) and the busy loop's last
    # iteration add a little; the sleeping parent adds next to nothing
    assert 2 * BURN_S - 0.02 <= usage.seconds["whole"] <= 2 * BURN_S + 0.25
    assert BURN_S - 0.02 <= usage.seconds["first"] <= BURN_S + 0.15
    assert usage.seconds["parent only"] <= 0.05
    assert usage.exited == {"whole": 0, "first": 0, "parent only": 0}
    assert [round(s, 1) for s in usage.per_process["whole"][:2]] == [pytest.approx(BURN_S, abs=0.15)] * 2
    assert usage.machine_busy_s >= usage.seconds["whole"] - 0.05  # the machine saw at least our burn
    assert 0.0 <= usage.machine_idle <= 1.0
    assert cpu.tree_cpu_seconds(proc.pid) >= 2 * BURN_S - 0.02


def test_a_reaped_child_counts_for_the_process_that_waited_for_it() -> None:
    """wrk is accounted this way: run to completion, then its CPU is in this process's RUSAGE_CHILDREN."""
    before = cpu.snapshot({})
    burn = f"import time\ns=time.process_time()\nwhile time.process_time()-s<{BURN_S}: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=120)
    usage = cpu.between(before, cpu.snapshot({}))
    assert usage.seconds["wrk"] >= BURN_S - 0.02


def test_an_exited_process_is_reported_not_hidden(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        trees = {"sleeper": cpu.Tree((sleeper.pid,))}
        before = cpu.snapshot(trees)
        sleeper.kill()
        sleeper.wait(10)
        usage = cpu.between(before, cpu.snapshot(trees), child=None)
    finally:
        sleeper.kill()
    assert usage.exited == {"sleeper": 1}
    assert cpu.per_request(usage, 10)["cpu_exited_processes"] == {"sleeper": 1}


def test_per_request_and_ceiling_arithmetic() -> None:
    usage = cpu.Usage(seconds={"gateway": 0.216, "replica": 0.400, "wrk": 0.03}, exited={"gateway": 0},
                      machine_busy_s=0.70, machine_idle=0.06, per_process={"replica": [0.25, 0.15, 0.0]}, wall_s=0.5)
    out = cpu.per_request(usage, 1000)
    assert out["cpu_us_per_request"] == {"gateway": 216.0, "replica": 400.0, "wrk": 30.0, "total": 646.0,
                                         "other": 54.0}
    assert out["machine_idle"] == 0.06
    assert out["core_share_per_process"] == {"replica": [0.5, 0.3]}
    assert "cpu_exited_processes" not in out
    direct = {"cpu_us_per_request": {"replica": 335.0, "total": 335.0}}
    assert cpu.ceiling(direct, out) == pytest.approx(335 / 646, abs=1e-3)
    assert cpu.ceiling(None, out) is None
    assert cpu.ceiling(direct, {"rps": 1.0}) is None
    # zero requests (a failed point) must not divide by zero
    assert cpu.per_request(usage, 0)["cpu_us_per_request"]["gateway"] == 216000.0


def test_machine_times_reads_the_cpu_line(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n")
    assert cpu.machine_times(tmp_path) == (820.0, 981.0)
    (tmp_path / "stat").write_text("intr 1\n")
    with pytest.raises(ValueError, match="cpu line"):
        cpu.machine_times(tmp_path)


def test_a_process_name_with_spaces_and_parentheses_is_parsed(tmp_path: Path) -> None:
    """/proc/PID/stat's comm field is user-controlled (a hostile process can name itself ``a) 1 2 (b``)."""
    (tmp_path / "42").mkdir()
    fields = ["S", "7"] + ["0"] * 9 + ["150", "50"] + ["0"] * 30
    (tmp_path / "42" / "stat").write_text("42 (evil) 1 2 (x) " + " ".join(fields) + "\n")
    ticks = os.sysconf("SC_CLK_TCK")
    assert cpu.read_stat(42, tmp_path) == (7, 200 / ticks)
    assert cpu.read_stat(43, tmp_path) is None


def test_settle_waits_for_quiet_and_says_what_it_saw() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        seen = settle.wait_quiet(lambda: {"sleeper": cpu.Tree((sleeper.pid,))}, timeout_s=1.0, window_s=0.2)
    finally:
        sleeper.kill()
        sleeper.wait(10)
    assert set(seen) == {"quiet", "waited_s", "machine_idle", "loadavg_1m", "busy_share"}
    assert seen["busy_share"]["sleeper"] <= settle.OWN_MAX_SHARE  # a sleeping process is idle
    assert isinstance(seen["quiet"], bool)


def test_a_quiet_window_needs_own_trees_idle_machine_idle_and_load_not_rising() -> None:
    idle = cpu.Usage({"replica": 0.01}, {}, machine_busy_s=0.2, machine_idle=0.9)
    assert settle.quiet_window(idle, 1.0, load_before=2.0, load_after=1.9)
    assert not settle.quiet_window(idle, 1.0, load_before=1.0, load_after=1.5)  # load still rising
    busy_replica = cpu.Usage({"replica": 0.5}, {}, machine_busy_s=0.6, machine_idle=0.7)
    assert not settle.quiet_window(busy_replica, 1.0, 1.0, 1.0)
    busy_machine = cpu.Usage({"replica": 0.0}, {}, machine_busy_s=1.8, machine_idle=0.1)
    assert not settle.quiet_window(busy_machine, 1.0, 1.0, 1.0)
