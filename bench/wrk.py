"""Driving wrk (the Debian package, wg/wrk 4.x) and reading what it prints.

wrk sends the same POST body on keep-alive connections from a Lua script. Two outputs are parsed:
the ``--latency`` distribution wrk prints (50/75/90/99 %), and a JSON line our Lua ``done()`` hook
writes with exact microsecond percentiles, the error counters and the request count. wg/wrk 4.x is
a closed-loop generator: a request's latency is measured from its send, so a server that stalls
delays the next sends instead of showing up in the tail (no coordinated-omission correction; that
is wrk2's ``-R`` mode). The suite's own client (bench.client) measures the same closed loop from
Python, and both are recorded.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

JSON_MARK = "BENCH_JSON "

LUA_TEMPLATE = """-- written by bench/wrk.py: POST one fixed body, report exact percentiles as JSON
local f = assert(io.open([==[{body_path}]==], "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "{content_type}"
{extra_headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p75_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,"stdev_us":%.1f,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    latency.stdev, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DIST = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$")
_RPS = re.compile(r"^Requests/sec:\s+(\d+(?:\.\d+)?)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in (\d+(?:\.\d+)?)(us|ms|s|m|h)", re.M)
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass
class WrkResult:
    """One wrk run: throughput, latency percentiles in ms, and everything that went wrong."""

    rps: float
    requests: int
    duration_s: float
    latency_ms: dict[str, float]  # "50", "75", "90", "99" from --latency; "99.9", "max", "mean" from the Lua hook
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    exact: dict[str, Any] = field(default_factory=dict)  # the Lua hook's JSON as printed

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    @property
    def p50_ms(self) -> float:
        return self.latency_ms["50"]

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["99"]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def to_ms(number: str, unit: str) -> float:
    """wrk's ``1.23ms`` / ``845.00us`` / ``1.02s`` as milliseconds."""
    return float(number) * _UNITS_MS[unit]


def parse_output(text: str) -> WrkResult:
    """Parse wrk's stdout (run with ``--latency`` and our Lua script); raises ValueError when it is not there."""
    latency: dict[str, float] = {}
    in_dist = False
    for line in text.splitlines():
        if "Latency Distribution" in line:
            in_dist = True
            continue
        if in_dist:
            match = _DIST.match(line)
            if match:
                latency[_pct_key(match.group(1))] = to_ms(match.group(2), match.group(3))
                continue
            in_dist = False
    rps_match = _RPS.search(text)
    total_match = _TOTAL.search(text)
    if rps_match is None or total_match is None:
        raise ValueError(f"no wrk summary in output: {text[-500:]!r}")
    socket = _SOCKET.search(text)
    socket_errors = ({k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), socket.groups(),
                                                strict=True)} if socket else {})
    non2xx = _NON2XX.search(text)
    exact: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(JSON_MARK):
            exact = json.loads(line[len(JSON_MARK):])
    if exact:
        for key in ("50", "75", "90", "99", "99.9"):
            name = "p" + key.replace(".", "") + "_us"
            if name in exact:
                latency[key] = exact[name] / 1000.0
        latency["max"] = exact["max_us"] / 1000.0
        latency["mean"] = exact["mean_us"] / 1000.0
        # wrk prints "Socket errors" only when one is non-zero; the hook always reports them
        socket_errors = {k: int(exact.get(f"err_{k}", 0)) for k in ("connect", "read", "write", "timeout")}
    if "50" not in latency or "99" not in latency:
        raise ValueError(f"no latency distribution in wrk output (run with --latency): {text[-500:]!r}")
    return WrkResult(
        rps=float(rps_match.group(1)),
        requests=int(total_match.group(1)),
        duration_s=to_ms(total_match.group(2), total_match.group(3)) / 1000.0,
        latency_ms=latency,
        non_2xx=max(int(non2xx.group(1)) if non2xx else 0, int(exact.get("err_status", 0))),
        socket_errors=socket_errors,
        exact=exact,
    )


def _pct_key(raw: str) -> str:
    value = float(raw)
    return str(int(value)) if value.is_integer() else str(value)


def write_script(folder: Path, name: str, body: bytes, content_type: str = "application/json",
                 headers: dict[str, str] | None = None) -> Path:
    """The Lua script (and the body file it reads) for one target."""
    folder.mkdir(parents=True, exist_ok=True)
    body_path = folder / f"{name}.body"
    body_path.write_bytes(body)
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items())
    script = folder / f"{name}.lua"
    script.write_text(LUA_TEMPLATE.format(body_path=body_path, content_type=content_type, mark=JSON_MARK,
                                          extra_headers=extra))
    return script


def wrk_argv(url: str, script: Path, connections: int, duration_s: float, threads: int | None = None,
             timeout_s: float = 10.0) -> list[str]:
    """wrk's command line: one thread per connection up to 2 (the machine has 2 cores to share)."""
    threads = threads or max(1, min(connections, 2))
    # wrk reads whole seconds only ("0.5s" is a usage error)
    return ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration_s))}s",
            "--timeout", f"{max(1, round(timeout_s))}s", "-s", str(script), url]


def run(url: str, script: Path, connections: int, duration_s: float) -> WrkResult:
    """Run wrk to completion (bounded) and parse it."""
    argv = wrk_argv(url, script, connections, duration_s)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {(done.stderr + done.stdout).strip()[-500:]}")
    return parse_output(done.stdout)


def version() -> str:
    """``wrk debian/4.1.0-3+b2 [epoll]`` or the reason there is none."""
    if shutil.which("wrk") is None:
        return "not installed"
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"
