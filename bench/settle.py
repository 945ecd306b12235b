"""A quiet start for a baseline: every replica a case will use is up and ready, and nothing is busy.

A ratio is only as good as its baseline. In the router case's run of 2026-11-30 10:09 the monolith
measured 113 req/s at c=8 and 420 at c=32 (its per-request service time "fell" 3.5x), because the
c=8 baseline was measured while something else burned the cores. So before each baseline a case
calls :func:`wait_quiet`: it samples the CPU of the processes the case knows (gateway, replicas,
router, the baseline server) and of the whole machine over short windows until the case's own
processes are idle, the machine is mostly idle and the load average is no longer rising, or a
timeout passes. It never fails the run (a shared machine may never be quiet); it returns what it saw,
which the case stores in the point, so a baseline measured on a busy machine says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench import cpu

WINDOW_S = 1.0
OWN_MAX_SHARE = 0.05  # each accounted tree: at most 5% of one core over a window counts as idle
MACHINE_IDLE_MIN = 0.5  # at least one of the two cores idle over a window
QUIET_WINDOWS = 2  # consecutive quiet windows needed


def quiet_window(usage: cpu.Usage, window_s: float, load_before: float, load_after: float) -> bool:
    """Whether one window was quiet: own trees idle, machine idle enough, load average not rising."""
    own_idle = all(s / window_s <= OWN_MAX_SHARE for s in usage.seconds.values())
    return own_idle and usage.machine_idle >= MACHINE_IDLE_MIN and load_after <= load_before + 0.05


def wait_quiet(trees: Callable[[], dict[str, cpu.Tree]], timeout_s: float, window_s: float = WINDOW_S,
               sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Wait (at most ``timeout_s``) for :data:`QUIET_WINDOWS` quiet windows in a row; what was seen, for the JSON."""
    started = time.monotonic()
    in_a_row = 0
    last: dict[str, Any] = {}
    while True:
        load_before = os.getloadavg()[0]
        before = cpu.snapshot(trees())
        sleep(window_s)
        usage = cpu.between(before, cpu.snapshot(trees()), child=None)
        load_after = os.getloadavg()[0]
        quiet = quiet_window(usage, window_s, load_before, load_after)
        in_a_row = in_a_row + 1 if quiet else 0
        last = {"machine_idle": round(usage.machine_idle, 3), "loadavg_1m": round(load_after, 2),
                "busy_share": {k: round(v / window_s, 3) for k, v in usage.seconds.items()}}
        waited = time.monotonic() - started
        if in_a_row >= QUIET_WINDOWS or waited >= timeout_s:
            return {"quiet": in_a_row >= QUIET_WINDOWS, "waited_s": round(waited, 1), **last}
