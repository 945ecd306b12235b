"""What every case gets: settings, scratch folders, and the baselines every case can start."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import flame, procs
from bench.load import Settings

REPO = Path(__file__).resolve().parents[1]
GUNICORN_BASELINE = ["-w", "2", "-k", "gthread", "--threads", "4"]


@dataclass
class Context:
    settings: Settings
    work: Path  # scratch of this run (logs, specs, wrk scripts)
    quick: bool
    profile: bool = False  # --profile: flame graphs of one point per case (bench.flame)
    out: Path = REPO / "bench" / "results"  # where the flame graphs go, beside the results JSON
    stamp: str = field(default_factory=lambda: time.strftime("%Y-%m-%d-%H%M%S"))

    @property
    def scripts(self) -> Path:
        return self.work / "wrk"

    def folder(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def flame(self, case: str, processes: dict[str, int], whole_tree: dict[str, bool] | None = None
              ) -> flame.Request | None:
        """What to record for the point a case profiles; None unless the run has ``--profile``.

        ``whole_tree`` says per process whether py-spy follows its children (``--subprocesses``, the
        default: a replica's gunicorn workers); a gateway's children are replicas, profiled on their own.
        """
        if not self.profile:
            return None
        return flame.Request(self.out, case, self.stamp, processes, whole_tree or {})


@contextlib.contextmanager
def gunicorn_app(ctx: Context, name: str, factory: str, env: dict[str, str]) -> Iterator[tuple[procs.Server, str]]:
    """A hand-written Flask app under ``gunicorn -w 2 -k gthread --threads 4`` (the issue's baseline)."""
    port = procs.free_port()
    argv = [sys.executable, "-m", "gunicorn", *GUNICORN_BASELINE, "--bind", f"127.0.0.1:{port}",
            "--error-logfile", "-", factory]
    url = f"http://127.0.0.1:{port}"
    with procs.running(name, argv, ctx.folder("logs"), url + "/ready", cwd=REPO,
                       env={**env, "PYTHONPATH": str(REPO)}, timeout=120) as server:
        yield server, url + "/"
