"""One load measurement of one target: warm-up, wrk, then the suite's own client at the same concurrency.

Optionally, over exactly the measured wrk run: the CPU per request of named process trees and the
machine's idle fraction (bench.cpu), and py-spy flame graphs of some of them (bench.flame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import client, cpu, flame, results, wrk

Processes = Callable[[], dict[str, cpu.Tree]]  # asked at both ends of the run: replicas may come and go


@dataclass(frozen=True)
class Settings:
    """How long each part of a run takes; quick mode keeps the whole run under 5 minutes."""

    duration_s: float
    warmup_s: float
    client_s: float
    cold_starts: int
    floor_runs: int
    build_venvs: bool

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(duration_s=3, warmup_s=1, client_s=1, cold_starts=5, floor_runs=5, build_venvs=False)
        return cls(duration_s=10, warmup_s=2, client_s=3, cold_starts=20, floor_runs=20, build_venvs=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(target: str, url: str, body: bytes, concurrency: int, settings: Settings, scripts: Path,
            own_client: bool = True, *, processes: Processes | None = None, profile: flame.Request | None = None,
            **extra: Any) -> dict[str, Any]:
    """A results point for ``target`` at ``concurrency`` (wrk figures; own-client latencies alongside).

    ``processes`` adds ``cpu_us_per_request`` (each tree, ``wrk``, ``total``, ``other``) and
    ``machine_idle``; ``profile`` records flame graphs during the measured run and lists them under
    ``profiled`` (the point's figures are then perturbed by py-spy, and say so).
    """
    script = wrk.write_script(scripts, target.replace(" ", "_").replace("/", "_"), body)
    if settings.warmup_s > 0:
        wrk.run(url, script, concurrency, settings.warmup_s)
    measured, accounting, profiled = run_accounted(url, script, concurrency, settings.duration_s, processes,
                                                   profile)
    own = client.closed_loop(url, body, concurrency, settings.client_s) if own_client else None
    if profiled is not None:
        extra["profiled"] = profiled
    return results.point(target, concurrency, measured, own, **accounting, **extra)


def run_accounted(url: str, script: Path, concurrency: int, duration_s: float, processes: Processes | None = None,
                  profile: flame.Request | None = None
                  ) -> tuple[wrk.WrkResult, dict[str, Any], dict[str, Any] | None]:
    """One wrk run, with the CPU accounting ({} without ``processes``) and flame graphs (None without ``profile``)."""
    recordings = profile.start(round(duration_s) + 1) if profile is not None else []
    before = cpu.snapshot(processes()) if processes else None
    measured = wrk.run(url, script, concurrency, duration_s)
    accounting: dict[str, Any] = {}
    if processes and before is not None:
        usage = cpu.between(before, cpu.snapshot(processes()))
        accounting = cpu.per_request(usage, measured.requests)
    profiled = {r.name: r.finish() for r in recordings} if profile is not None else None
    return measured, accounting, profiled
