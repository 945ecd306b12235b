"""``python -m bench.soak [--minutes 10] [--rate 20]``: mixed traffic at a fixed rate against a real gateway.

Not a test: a measurement (issue 12, point 7). It starts a gateway (local provider, its own state
directory), deploys four functions and sends an open-loop request stream at ``--rate`` requests a
second for ``--minutes``:

* 60% direct calls to ``echo`` (a python3 function, ``scale.min: 0``);
* 20% pipeline calls to ``pipe`` (a router over ``stage-a`` -> ``stage-b``);
* 10% calls to ``limited`` (``rate: {rps: 1, burst: 2, per: function}``): the 429s are intended;
* 5% calls to ``sleepy`` (``scale.idle: 8s``) spaced so it scales to zero between them: cold starts;
* 5% bad requests (invalid JSON, JSON nested past the limit, a percent-encoded name): 4xx intended;
* every 60 s ``echo`` is redeployed with a new environment (a rolling replace under traffic);
* 5% calls to ``model``, a scikit-learn function serving ``iris:prod`` from a directory store; every 45 s
  the ``prod`` alias moves to the other of two versions and ``model`` is redeployed, so the gateway pins
  the new version and replaces its replicas under traffic.

It reports requests sent / answered / failed by status, p50/p99 latency of the good requests, the
gateway's RSS and open file descriptors at the start (after warm-up) and at the end, and processes
left after the gateway is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

HANDLER = '''
import os
import time


def handle(payload, context):
    if isinstance(payload, dict) and payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    return {"echo": payload, "version": os.environ.get("VERSION", "v1")}
'''
STAGE = '''
def handle(payload, context):
    data = payload if isinstance(payload, dict) else {"input": payload}
    data["trail"] = [*data.get("trail", []), "%s"]
    return data
'''
MIX = (("echo", 0.55), ("pipe", 0.20), ("limited", 0.10), ("model", 0.05), ("bad", 0.05), ("sleepy", 0.05))
ALIAS_EVERY = 45.0  # seconds between moves of iris:prod (each followed by a redeploy of ``model``)
IRIS_ROW = [[5.1, 3.5, 1.4, 0.2]]
SLEEPY_EVERY = 12.0  # seconds between calls to sleepy (> its idle of 8 s: each call is a cold start)
REDEPLOY_EVERY = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_stats(pid: int) -> dict[str, float]:
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return {"rss_mb": round(rss, 1), "open_fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Soak:
    def __init__(self, work: Path, rate: float, minutes: float, seed: int) -> None:
        self.work = work
        self.rate = rate
        self.seconds = minutes * 60
        self.rng = random.Random(seed)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = work / "state"
        self.proc: subprocess.Popen[bytes] | None = None
        self.results: list[tuple[str, int | str, float]] = []  # (kind, status or error, seconds)
        self.replica_pids: set[int] = set()
        self.redeploys = 0
        self.alias_moves = 0
        self.store_url = f"file://{work / 'store'}"

    # ---- set-up --------------------------------------------------------------------------------

    def start(self) -> None:
        log = open(self.work / "gateway.log", "ab")  # noqa: SIM115 - closed with the process
        argv = [sys.executable, "-m", "hydro_serving.cli.main", "gateway", "--port", str(self.port),
                "--state", str(self.state)]
        self.upload_models()
        env = {**os.environ, "HYDRO_STORE": self.store_url, "HYDRO_CACHE": str(self.work / "cache")}
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if _http("GET", self.url + "/healthz")[0] == 200:
                    break
            time.sleep(0.1)
        self.token = json.loads((self.state / "credentials.json").read_text())["token"]
        for name, source in (("echo", HANDLER), ("sleepy", HANDLER), ("limited", HANDLER),
                             ("stage-a", STAGE % "a"), ("stage-b", STAGE % "b")):
            folder = self.work / name
            folder.mkdir(exist_ok=True)
            (folder / "handler.py").write_text(source)
        self.deploy("echo", {"VERSION": "v0"})
        self.deploy("sleepy", scale={"idle": 8})
        self.deploy("limited", rate={"rps": 1, "burst": 2, "per": "function"})
        self.deploy("stage-a")
        self.deploy("stage-b")
        self.deploy_model()
        spec = {"name": "pipe", "lang": "router", "chain": ["stage-a", "stage-b"],
                "scale": {"min": 0, "max": 2, "idle": 300, "concurrency": 8}}
        status, out = _http("POST", self.url + "/system/functions", {"service": "pipe", "hydro": spec}, self.token)
        assert status == 202, out

    def deploy(self, name: str, env: dict[str, str] | None = None, **extra: Any) -> None:
        scale = {"min": 0, "max": 2, "idle": 300, "concurrency": 8, **extra.pop("scale", {})}
        spec = {"name": name, "lang": "python3", "handler": str(self.work / name), "scale": scale, **extra}
        if env:
            spec["environment"] = env
        body = {"service": name, "hydro": spec}
        status, out = _http("PUT", self.url + "/system/functions", body, self.token)
        if status == 404:
            status, out = _http("POST", self.url + "/system/functions", body, self.token)
        assert status == 202, out

    def upload_models(self) -> None:
        """Two versions of a tiny iris classifier in a directory store, ``prod`` on version 1."""
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        from hydro_serving.store import open_store

        x, y = load_iris(return_X_y=True)
        store = open_store(self.store_url)
        for c in (1.0, 0.1):
            path = self.work / f"iris-{c}.joblib"
            joblib.dump(LogisticRegression(C=c, max_iter=500).fit(x, y), path)
            store.upload(path, "iris")
        store.set_alias("iris", 1, "prod")

    def deploy_model(self) -> None:
        spec = {"name": "model", "lang": "sklearn", "model": "iris:prod",
                "scale": {"min": 0, "max": 2, "idle": 300, "concurrency": 8}}
        body = {"service": "model", "hydro": spec}
        status, out = _http("PUT", self.url + "/system/functions", body, self.token)
        if status == 404:
            status, out = _http("POST", self.url + "/system/functions", body, self.token)
        assert status == 202, out

    def move_alias(self) -> None:
        """``iris:prod`` to the other version, then a redeploy that pins it (replicas replaced under traffic)."""
        from hydro_serving.store import open_store

        store = open_store(self.store_url)
        store.set_alias("iris", 2 if store.aliases("iris")["prod"] == 1 else 1, "prod")
        self.alias_moves += 1
        self.deploy_model()

    def track_replicas(self) -> None:
        status, functions = _http("GET", self.url + "/system/functions", token=self.token)
        if status == 200:
            for fn in functions:
                self.replica_pids.update(i["pid"] for i in fn["status"]["instances"] if i.get("pid"))

    # ---- traffic ---------------------------------------------------------------------------------

    def request(self, kind: str) -> tuple[str, str, bytes, dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if kind == "bad":
            choice = self.rng.randrange(3)
            if choice == 0:
                return "POST", "/function/echo", b'{"not json', headers
            if choice == 1:
                return "POST", "/function/echo", b"[" * 200 + b"]" * 200, headers
            return "POST", "/function/%65cho", b"{}", headers
        if kind == "model":
            return "POST", "/function/model", json.dumps(IRIS_ROW).encode(), headers
        target = {"stage": 0} if kind == "pipe" else {"i": self.rng.randrange(1000)}
        return "POST", f"/function/{kind}", json.dumps(target).encode(), headers

    async def one(self, session: aiohttp.ClientSession, kind: str) -> None:
        method, path, body, headers = self.request(kind)
        started = time.perf_counter()
        try:
            url = URL(self.url + path, encoded=True)  # sent as written: %65cho must stay encoded
            async with session.request(method, url, data=body, headers=headers) as resp:
                await resp.read()
                outcome: int | str = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = type(exc).__name__
        self.results.append((kind, outcome, time.perf_counter() - started))

    async def traffic(self) -> None:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            next_sleepy = start
            next_redeploy = start + REDEPLOY_EVERY
            next_alias = start + ALIAS_EVERY
            next_track = start
            i = 0
            weights = [w for _, w in MIX[:-1]]
            kinds = [k for k, _ in MIX[:-1]]
            while True:
                now = time.monotonic()
                if now - start >= self.seconds:
                    break
                due = start + i / self.rate
                if due > now:
                    await asyncio.sleep(due - now)
                i += 1
                kind = self.rng.choices(kinds, weights)[0]
                if time.monotonic() >= next_sleepy:
                    kind, next_sleepy = "sleepy", time.monotonic() + SLEEPY_EVERY
                task = asyncio.create_task(self.one(session, kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if time.monotonic() >= next_redeploy:
                    next_redeploy += REDEPLOY_EVERY
                    self.redeploys += 1
                    await asyncio.to_thread(self.deploy, "echo", {"VERSION": f"v{self.redeploys}"})
                if time.monotonic() >= next_alias:
                    next_alias += ALIAS_EVERY
                    await asyncio.to_thread(self.move_alias)
                if time.monotonic() >= next_track:
                    next_track += 5
                    await asyncio.to_thread(self.track_replicas)
            if tasks:
                await asyncio.gather(*tasks)

    # ---- the end -----------------------------------------------------------------------------------

    def stop(self) -> list[int]:
        """SIGTERM the gateway; the replica processes still alive afterwards (should be none)."""
        assert self.proc is not None
        self.track_replicas()
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(60)
        time.sleep(1.0)
        left = []
        for pid in sorted(self.replica_pids):
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):
                state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
                if state != "Z":
                    left.append(pid)
        for pid in left:  # never leave them behind, but report them
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return left


def summarise(soak: Soak, start: dict[str, float], end: dict[str, float], left: list[int],
              minutes: float) -> dict[str, Any]:
    by_kind: dict[str, Counter[str]] = {}
    for kind, outcome, _ in soak.results:
        by_kind.setdefault(kind, Counter())[str(outcome)] += 1
    intended = {"limited": {"429"}}
    unexpected = 0
    good_latencies = []
    for kind, outcome, seconds in soak.results:
        if kind == "bad":  # a bad request must get a 4xx, and anything else is a failure
            unexpected += not (isinstance(outcome, int) and 400 <= outcome < 500)
            continue
        if outcome == 200:
            good_latencies.append(seconds)
        elif str(outcome) not in intended.get(kind, set()):
            unexpected += 1
    good_latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * good_latencies[min(len(good_latencies) - 1, int(q * len(good_latencies)))], 1)

    return {
        "minutes": minutes, "rate_per_s": soak.rate, "sent": len(soak.results),
        "answered": sum(1 for _, o, _ in soak.results if isinstance(o, int)),
        "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())},
        "unexpected_failures": unexpected,
        "p50_ms": pct(0.50), "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(good_latencies), 1),
        "gateway_start": start, "gateway_end": end,
        "redeploys": soak.redeploys, "alias_moves": soak.alias_moves, "replica_processes_seen": len(soak.replica_pids),
        "processes_left_after_stop": left,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (open loop)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hydro-soak-") as tmp:
        soak = Soak(Path(tmp), args.rate, args.minutes, args.seed)
        soak.start()
        try:
            for _ in range(3):  # warm-up: every function once, so the baseline is a running gateway
                for name in ("echo", "pipe", "limited"):
                    _http("POST", f"{soak.url}/function/{name}", {})
                _http("POST", f"{soak.url}/function/model", IRIS_ROW)
            assert soak.proc is not None
            start = _proc_stats(soak.proc.pid)
            asyncio.run(soak.traffic())
            time.sleep(2.0)
            end = _proc_stats(soak.proc.pid)
        finally:
            left = soak.stop()
        report = summarise(soak, start, end, left, args.minutes)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"soak-{time.strftime('%Y-%m-%dT%H%M', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {path}")
    return 0 if report["unexpected_failures"] == 0 and not left else 1


if __name__ == "__main__":
    raise SystemExit(main())
