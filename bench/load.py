"""One load measurement of one target: warm-up, wrk, then the suite's own client at the same concurrency."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import client, results, wrk


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
            own_client: bool = True, **extra: Any) -> dict[str, Any]:
    """A results point for ``target`` at ``concurrency`` (wrk figures; own-client latencies alongside)."""
    script = wrk.write_script(scripts, target.replace(" ", "_").replace("/", "_"), body)
    if settings.warmup_s > 0:
        wrk.run(url, script, concurrency, settings.warmup_s)
    measured = wrk.run(url, script, concurrency, settings.duration_s)
    own = client.closed_loop(url, body, concurrency, settings.client_s) if own_client else None
    return results.point(target, concurrency, measured, own, **extra)
