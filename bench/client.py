"""The suite's own closed-loop client: N threads on keep-alive connections, every latency kept.

wrk reports percentiles from its own histogram; this client keeps each request's latency as
measured by a Python caller (``http.client``, what many services calling a model use), so the two
can be compared. It is run briefly after wrk at the same concurrency. On a 2-core machine a Python
client competes with the server for CPU, so its req/s is not a throughput figure; only its
latency percentiles are reported, next to wrk's.
"""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlsplit

from bench.stats import summarize


def closed_loop(url: str, body: bytes, concurrency: int, duration_s: float,
                headers: dict[str, str] | None = None) -> dict[str, float]:
    """Latency summary (ms) plus ``errors`` and ``rps`` over ``duration_s`` at ``concurrency`` callers."""
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    stop_at = time.monotonic() + duration_s

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine = latencies[i]
        try:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    conn.request("POST", path, body, all_headers)
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status < 400
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                elapsed = (time.perf_counter() - started) * 1000.0
                if ok:
                    mine.append(elapsed)
                else:
                    errors[i] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration_s + 60)
    wall = time.monotonic() - began
    flat = [x for chunk in latencies for x in chunk]
    out = summarize(flat)
    out["errors"] = float(sum(errors))
    out["rps"] = len(flat) / wall if wall > 0 else 0.0
    return out
