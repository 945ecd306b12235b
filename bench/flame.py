"""Flame graphs of a measured point, recorded by the bench itself (``python -m bench --profile``).

A ratio that misses its goal needs the profile that explains it, from the same run. For one
measured point per case, py-spy samples each process of interest (the gateway, a replica and its
gunicorn workers, a router replica) while wrk runs, and writes an SVG flame graph per process to
``bench/results/flame-<case>-<process>-<stamp>.svg``, with a text summary beside it (top frames by
self and by inclusive samples) so the explanation can be read without a browser.

py-spy samples from outside (``--nonblocking``: it never stops the process), but it still takes
CPU on the same 2 cores, so profiling is opt-in and the profiled point says so in the JSON.
A gateway is recorded without ``--subprocesses``: its children are the zygote and the replicas,
which have flame graphs of their own. When py-spy is missing it is installed into the running
venv with pip (the ``profile`` extra of pyproject.toml).
"""

from __future__ import annotations

import bisect
import html
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RATE_HZ = 100
_FRAME = re.compile(r'<g><title>(?P<title>[^<]*)</title><rect [^>]*?y="(?P<y>\d+(?:\.\d+)?)"[^>]*?'
                    r'fg:x="(?P<x>\d+)" fg:w="(?P<w>\d+)"')
_SAMPLES = re.compile(r"^(?P<name>.*) \((?P<n>[\d,]+) samples?, [\d.]+%\)$")
_ERRORS = re.compile(r"Samples: \d+ Errors: (\d+)")
_LINENO = re.compile(r"(\([^()]*?):\d+\)$")


def py_spy_path() -> str | None:
    """py-spy beside the running interpreter (the venv's), else on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def ensure_py_spy() -> str:
    """The py-spy executable, installed into the running venv with pip when missing."""
    found = py_spy_path()
    if found:
        return found
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy>=0.3"], check=True, timeout=600)
    found = py_spy_path()
    if not found:
        raise RuntimeError("py-spy was installed but is not beside the interpreter nor on PATH")
    return found


def record_argv(py_spy: str, pid: int, svg: Path, duration_s: int, subprocesses: bool,
                rate: int = RATE_HZ) -> list[str]:
    argv = [py_spy, "record", "--pid", str(pid), "-f", "flamegraph", "-o", str(svg), "--nonblocking",
            "--duration", str(max(1, duration_s)), "--rate", str(rate)]
    return argv + (["--subprocesses"] if subprocesses else [])


@dataclass
class Recording:
    """One running ``py-spy record``; :meth:`finish` waits for it and writes the text summary."""

    name: str
    pid: int
    svg: Path
    proc: subprocess.Popen[str]
    log: Path

    def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        # file names only: they sit beside the results JSON, wherever that folder is moved
        out: dict[str, Any] = {"pid": self.pid, "svg": self.svg.name, "py_spy_exit": self.proc.returncode}
        if self.proc.returncode != 0 or not self.svg.exists():
            out["error"] = self.log.read_text(errors="replace")[-600:] if self.log.exists() else "no output"
            return out
        frames = parse_flamegraph(self.svg.read_text(errors="replace"))
        txt = self.svg.with_suffix(".txt")
        txt.write_text(summarize(frames, title=f"{self.name} (pid {self.pid})"))
        out["summary"] = txt.name
        out["samples"] = total_samples(frames)
        said = _ERRORS.search(self.log.read_text(errors="replace")) if self.log.exists() else None
        if said:  # samples py-spy could not take (a thread or process changing under it): a lower bound
            out["py_spy_errors"] = int(said.group(1))
        self.log.unlink(missing_ok=True)
        return out


def start(name: str, pid: int, svg: Path, duration_s: int, subprocesses: bool) -> Recording:
    """Start py-spy on ``pid`` for ``duration_s`` seconds (it writes ``svg`` when the time is up)."""
    svg.parent.mkdir(parents=True, exist_ok=True)
    log = svg.with_suffix(".log")
    with open(log, "w") as handle:
        proc = subprocess.Popen(record_argv(ensure_py_spy(), pid, svg, duration_s, subprocesses),
                                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    return Recording(name, pid, svg, proc, log)


@dataclass
class Request:
    """Which processes to record during one point, and where the files go."""

    out: Path
    case: str
    stamp: str
    processes: dict[str, int]  # name -> root pid
    subprocesses: dict[str, bool] = field(default_factory=dict)  # default True (gunicorn workers)

    def svg(self, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        return self.out / f"flame-{self.case}-{safe}-{self.stamp}.svg"

    def start(self, duration_s: int) -> list[Recording]:
        return [start(name, pid, self.svg(name), duration_s, self.subprocesses.get(name, True))
                for name, pid in self.processes.items()]


# ---- reading py-spy's (inferno's) SVG -------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    name: str
    depth: int
    x: int  # first sample (fg:x)
    w: int  # samples (fg:w)


def parse_flamegraph(svg: str) -> list[Frame]:
    """The frames of an inferno flame graph (py-spy's ``-f flamegraph``): name, depth, sample span."""
    raw = []
    for m in _FRAME.finditer(svg):
        title = html.unescape(m.group("title"))
        named = _SAMPLES.match(title)
        raw.append((named.group("name") if named else title, float(m.group("y")), int(m.group("x")),
                    int(m.group("w"))))
    levels = sorted({y for _, y, _, _ in raw})
    if raw and _is_inverted(raw, levels):
        levels.reverse()
    depth = {y: i for i, y in enumerate(levels)}
    return [Frame(name, depth[y], x, w) for name, y, x, w in raw]


def _is_inverted(raw: list[tuple[str, float, int, int]], levels: list[float]) -> bool:
    """Whether the root ("all") sits at the largest y (a classic flame graph) rather than the smallest (icicle)."""
    root = next((y for name, y, _, _ in raw if name == "all"), levels[0])
    return root == levels[-1] and len(levels) > 1


def total_samples(frames: list[Frame]) -> int:
    return max((f.w for f in frames if f.depth == 0), default=0)


def _pseudo(frame: Frame) -> bool:
    return frame.depth == 0 or frame.name.startswith("process ") or frame.name.startswith("thread (")


def function_name(frame_name: str) -> str:
    """``inner (burn.py:4)`` -> ``inner (burn.py)``: one function, whatever line it was on."""
    return _LINENO.sub(r"\1)", frame_name)


def parents(frames: list[Frame]) -> list[int | None]:
    """Index of each frame's parent (the frame one level up whose sample span holds it), or None."""
    by_depth: dict[int, list[tuple[int, int]]] = {}
    for i, f in enumerate(frames):
        by_depth.setdefault(f.depth, []).append((f.x, i))
    for spans in by_depth.values():
        spans.sort()
    out: list[int | None] = []
    for f in frames:
        spans = by_depth.get(f.depth - 1, [])
        k = bisect.bisect_right(spans, (f.x, len(frames))) - 1
        parent = spans[k][1] if k >= 0 else None
        out.append(parent if parent is not None and f.x < frames[parent].x + frames[parent].w else None)
    return out


def self_and_inclusive(frames: list[Frame]) -> tuple[Counter[str], Counter[str]]:
    """Samples per function: where the CPU was (self) and under it (inclusive, recursion counted once)."""
    up = parents(frames)
    below: Counter[int] = Counter()
    for i, parent in enumerate(up):
        if parent is not None:
            below[parent] += frames[i].w
    self_: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for i, f in enumerate(frames):
        if _pseudo(f):
            continue
        name = function_name(f.name)
        if f.w - below[i] > 0:
            self_[name] += f.w - below[i]
        ancestor, recursive = up[i], False
        while ancestor is not None and not recursive:
            recursive = function_name(frames[ancestor].name) == name
            ancestor = up[ancestor]
        if not recursive:
            inclusive[name] += f.w
    return self_, inclusive


def summarize(frames: list[Frame], title: str, top: int = 25) -> str:
    """The text beside the SVG: samples per process, then the top functions by self and inclusive samples."""
    total = total_samples(frames)
    lines = [f"# flame graph summary: {title}", f"# {total} samples at {RATE_HZ} Hz (on-CPU stacks only; "
             "py-spy --nonblocking)",
             "# a wait frame here (Condition.wait, select, _worker's queue get) was running when sampled: thread "
             "wake-ups and GIL hand-offs, not idle time"]
    if not total:
        return "\n".join([*lines, "no samples (the process was idle or could not be read)", ""])
    processes = [f for f in frames if f.name.startswith("process ")]  # a child's frame nests in its parent's
    if processes:
        lines.append("\n## samples per process (a parent's figure includes its children's)")
        lines += [f"{f.w:>8} {100 * f.w / total:6.1f}%  {'  ' * (f.depth - 1)}{f.name[:110]}"
                  for f in sorted(processes, key=lambda p: (p.depth, -p.w))]
    self_, inclusive = self_and_inclusive(frames)
    for label, counts in (("self (where the CPU was)", self_), ("inclusive (what it was spent under)", inclusive)):
        lines.append(f"\n## top {top} functions by {label}")
        lines += [f"{n:>8} {100 * n / total:6.1f}%  {name}" for name, n in counts.most_common(top)]
    return "\n".join(lines) + "\n"
