"""``python -m bench.ui_render [--functions 100] [--rounds 30]``: server time of the web UI's pages.

Starts a real gateway (local provider, its own state and file:// store in a scratch folder),
deploys ``--functions`` python3 functions (at zero, plus a few warmed by traffic so the rows carry
numbers), a router over two of them and one monitored function, logs in through the login form
and GETs every screen ``--rounds`` times. The server's time is the page's ``Server-Timing:
render;dur=`` (from session check to the rendered HTML); the round trip over loopback is printed
beside it. Goal (issue 16): under 200 ms with 100 functions deployed.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

HANDLER = "def handle(payload, context):\n    return payload\n"
PAGES = ("/ui/functions", "/ui/functions/fn-000", "/ui/functions/pipe", "/ui/pipelines", "/ui/models",
         "/ui/monitoring", "/ui/monitoring/watched", "/ui/async")
GOAL_MS = 200.0


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=120) as resp:
        return json.loads(resp.read() or b"null")


def run(functions: int, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    env = {**os.environ, "HYDRO_HOME": str(work), "HYDRO_STORE": f"file://{work / 'store'}",
           "HYDRO_STATE": str(work / "state")}
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "gateway.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "hydro_serving.cli.main", "gateway", "--port", str(port),
                             "--state", str(work / "state")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(300):
            try:
                opener.open(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        token = json.loads((work / "state" / "credentials.json").read_text())["token"]
        password = json.loads((work / "state" / "credentials.json").read_text())["password"]
        folder = work / "fn"
        folder.mkdir()
        (folder / "handler.py").write_text(HANDLER)
        sig = {"inputs": [{"name": "x", "dtype": "float64", "shape": [-1]}], "outputs": []}
        for i in range(functions):
            spec = {"name": f"fn-{i:03d}", "lang": "python3", "handler": str(folder), "signature": sig,
                    "scale": {"min": 0, "max": 1, "idle": 600}}
            _admin(url, token, "POST", "/system/functions", {"service": spec["name"], "hydro": spec})
        watched = {"name": "watched", "lang": "python3", "handler": str(folder), "signature": sig,
                   "monitoring": {"sample": 1.0, "window": {"rows": 20, "time": "1h"}}}
        _admin(url, token, "POST", "/system/functions", {"service": "watched", "hydro": watched})
        pipe = {"name": "pipe", "lang": "router", "chain": [{"variants": {"fn-000": 50, "fn-001": 50}}]}
        _admin(url, token, "POST", "/system/functions", {"service": "pipe", "hydro": pipe})
        for name in ("fn-000", "fn-001", "fn-002", "watched", "pipe"):  # a few warm rows with numbers
            for _ in range(25):
                opener.open(urllib.request.Request(f"{url}/function/{name}", data=b'[{"x": 1.0}]', method="POST",
                                                   headers={"Content-Type": "application/json"}), timeout=120).read()
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                              urllib.request.ProxyHandler({}))
        page = browser.open(url + "/ui/login", timeout=30).read().decode()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"csrf": csrf, "user": "admin", "password": password}).encode()
        browser.open(urllib.request.Request(url + "/ui/login", data=form), timeout=30).read()
        out: dict[str, Any] = {"functions": functions + 2, "rounds": rounds, "pages": {}}
        for path in PAGES:
            server, total = [], []
            for _ in range(rounds):
                started = time.perf_counter()
                with browser.open(url + path, timeout=30) as resp:
                    body = resp.read()
                    timing = resp.headers["Server-Timing"]
                total.append((time.perf_counter() - started) * 1000)
                server.append(float(timing.split("dur=")[1]))
            out["pages"][path] = {
                "bytes": len(body), "server_p50_ms": statistics.median(server),
                "server_p95_ms": sorted(server)[int(0.95 * (len(server) - 1))],
                "round_trip_p50_ms": statistics.median(total)}
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    result = run(args.functions, args.rounds)
    print(f"{result['functions']} functions deployed, {result['rounds']} GETs per page")
    print(f"{'page':32} {'server p50':>11} {'server p95':>11} {'round trip p50':>15} {'bytes':>8}")
    worst = 0.0
    for path, r in result["pages"].items():
        worst = max(worst, r["server_p95_ms"])
        print(f"{path:32} {r['server_p50_ms']:>9.1f}ms {r['server_p95_ms']:>9.1f}ms "
              f"{r['round_trip_p50_ms']:>13.1f}ms {r['bytes']:>8}")
    print(f"worst server p95 {worst:.1f} ms: goal < {GOAL_MS:.0f} ms {'met' if worst < GOAL_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
