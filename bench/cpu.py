"""CPU accounting of a measured point: CPU microseconds per request of each process tree, and the machine's idle.

On a 2-core machine a throughput ratio is CPU arithmetic: when the cores are busy, req/s is the
busy core-seconds divided by the CPU every process spends on one request. So each measured wrk
point records, over exactly the wrk run, the user+system CPU of every process tree involved (a
gateway, a replica's gunicorn master and workers, a router replica, wrk itself) and the idle
fraction of the whole machine from ``/proc/stat``. What the machine spent beyond the processes we
know (``other``) is what somebody else ran during the point: the hygiene check of a shared machine.

Trees are read from ``/proc`` (Linux only): a root pid and every descendant, minus subtrees the
caller excludes (a gateway's tree holds its zygote and replicas, which are accounted on their own).
A process that exits during the window takes its CPU since the first snapshot with it (its parent
reaps it into ``cutime``, which we do not count, because that would add its whole life); the
snapshot says how many did, so an undercount is visible instead of silent.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def read_stat(pid: int, proc: Path = PROC) -> tuple[int, float] | None:
    """``(ppid, user+system CPU seconds)`` of one process, or None when it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _ticks()


def process_table(proc: Path = PROC) -> dict[int, tuple[int, float]]:
    """Every visible process: ``{pid: (ppid, cpu_seconds)}``."""
    table = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name), proc)
            if stat is not None:
                table[int(entry.name)] = stat
    return table


def tree_pids(root: int, table: dict[int, tuple[int, float]], exclude: Iterable[int] = ()) -> set[int]:
    """``root`` and its descendants in ``table``, without the subtrees rooted at ``exclude``."""
    skip = set(exclude)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = [root] if root in table and root not in skip else []
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack.extend(c for c in children.get(pid, ()) if c not in skip and c not in found)
    return found


def tree_cpu_seconds(root: int, exclude: Iterable[int] = (), proc: Path = PROC) -> float:
    """User+system CPU seconds used so far by the live processes of ``root``'s tree (minus ``exclude``)."""
    table = process_table(proc)
    return sum(table[pid][1] for pid in tree_pids(root, table, exclude))


@dataclass(frozen=True)
class Tree:
    """Process trees accounted as one (e.g. every replica of a function), minus subtrees (other trees' roots)."""

    roots: tuple[int, ...]
    exclude: tuple[int, ...] = ()

    def pids(self, table: dict[int, tuple[int, float]]) -> set[int]:
        return set().union(*(tree_pids(r, table, self.exclude) for r in self.roots))


def machine_times(proc: Path = PROC) -> tuple[float, float]:
    """``(idle, total)`` jiffies of all cores from the ``cpu`` line of ``/proc/stat`` (idle counts iowait)."""
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("cpu "):
            values = [float(v) for v in line.split()[1:]]
            # user nice system idle iowait irq softirq steal (guest and guest_nice are already in user/nice)
            return values[3] + values[4], sum(values[:8])
    raise ValueError("no cpu line in /proc/stat")


def children_cpu_seconds() -> float:
    """User+system CPU seconds of this process's reaped children (wrk runs as one, reaped when it ends)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Snapshot:
    """The state at one instant: each named tree's pids and CPU per pid, the machine's jiffies."""

    trees: dict[str, dict[int, float]]
    idle: float
    total: float
    children: float


def snapshot(trees: dict[str, Tree], proc: Path = PROC) -> Snapshot:
    table = process_table(proc)
    idle, total = machine_times(proc)
    return Snapshot({name: {pid: table[pid][1] for pid in t.pids(table)} for name, t in trees.items()},
                    idle, total, children_cpu_seconds())


@dataclass
class Usage:
    """CPU seconds used between two snapshots, per tree and for the machine."""

    seconds: dict[str, float]
    exited: dict[str, int]
    machine_busy_s: float
    machine_idle: float
    per_process: dict[str, list[float]] = field(default_factory=dict)  # each tree's processes, busiest first
    wall_s: float = 0.0


def between(before: Snapshot, after: Snapshot, child: str | None = "wrk") -> Usage:
    """What each tree used from ``before`` to ``after``; the reaped children's CPU goes to ``child`` (wrk)."""
    seconds: dict[str, float] = {}
    exited: dict[str, int] = {}
    per_process: dict[str, list[float]] = {}
    for name, now in after.trees.items():
        then = before.trees.get(name, {})
        used = sorted((cpu - then.get(pid, 0.0) for pid, cpu in now.items()), reverse=True)
        seconds[name] = sum(used)
        per_process[name] = used
        exited[name] = len(set(then) - set(now))
    if child:
        seconds[child] = after.children - before.children
    total = after.total - before.total
    idle = (after.idle - before.idle) / total if total > 0 else 0.0
    ncpu = os.cpu_count() or 1
    return Usage(seconds, exited, (total - (after.idle - before.idle)) / _ticks(), idle, per_process,
                 wall_s=total / _ticks() / ncpu)


def per_request(usage: Usage, requests: int) -> dict[str, Any]:
    """The JSON of a point: ``cpu_us_per_request`` per tree (+ ``other`` and ``total``) and ``machine_idle``.

    ``other`` is the machine's busy CPU not used by any accounted tree (a neighbour's job, the bench's
    own Python, the kernel's share of networking), per request, so a disturbed point shows itself.
    """
    n = max(1, requests)
    cpu = {name: round(s / n * 1e6, 1) for name, s in usage.seconds.items()}
    accounted = sum(usage.seconds.values())
    cpu["total"] = round(accounted / n * 1e6, 1)
    cpu["other"] = round(max(0.0, usage.machine_busy_s - accounted) / n * 1e6, 1)
    out: dict[str, Any] = {"cpu_us_per_request": cpu, "machine_idle": round(usage.machine_idle, 3)}
    if usage.wall_s > 0:  # a GIL-bound process sits near 1.0 while a sibling idles: the load is not spread
        out["core_share_per_process"] = {name: [round(u / usage.wall_s, 2) for u in used if u / usage.wall_s >= 0.01]
                                         for name, used in usage.per_process.items() if len(used) > 1}
    if any(usage.exited.values()):
        out["cpu_exited_processes"] = {k: v for k, v in usage.exited.items() if v}
    return out


def ceiling(base: dict[str, Any] | None, row: dict[str, Any]) -> float | None:
    """The throughput ratio CPU alone predicts: the baseline's total CPU per request over the row's.

    On a CPU-bound machine req/s = busy core-seconds / CPU per request, so with the same cores busy
    a row can reach at most this fraction of its baseline (``other`` is left out: it is not the row's).
    """
    if not base:
        return None
    b = (base.get("cpu_us_per_request") or {}).get("total")
    r = (row.get("cpu_us_per_request") or {}).get("total")
    if not b or not r:
        return None
    return round(b / r, 3)
