"""Bounded metric cardinality (issue 12, point 4), against a real gateway process.

Caller-controlled headers never become Prometheus labels: 10 000 requests with random
``X-Hydro-Pipeline``/``X-Hydro-Stage``/``X-Hydro-Shadow`` values (and random unknown function names and
sub-paths) leave ``/metrics`` as large as it was; only a caller with the internal credentials labels
stage metrics; a removed function's series are all dropped.
"""

from __future__ import annotations

import asyncio
import random
import string
from pathlib import Path
from typing import Any

import aiohttp

REQUESTS = 10_000
CONCURRENCY = 16


def _word(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "-_.", k=rng.randint(1, 40)))


async def _hostile_traffic(url: str) -> dict[int, int]:
    rng = random.Random(12)
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            headers = {"X-Hydro-Pipeline": _word(rng), "X-Hydro-Stage": _word(rng),
                       "X-Hydro-Shadow": rng.choice(["true", "false", _word(rng)])}
            path = "/function/echo" if i % 4 else f"/function/{_word(rng).lower()}/{_word(rng)}"
            async with session.post(url + path, data=b"{}", headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return statuses


def _series(text: str) -> set[str]:
    return {line.rpartition(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_random_headers_do_not_grow_metrics(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(gateway.python_spec("echo", echo_dir, scale={"max": 1}))  # no scale-up series midway
    for _ in range(2):  # every series an ordinary call creates exists before the baseline
        assert gateway.invoke("echo", {})[0] == 200
    before = _series(gateway.metrics())
    statuses = asyncio.run(_hostile_traffic(gateway.url))
    assert statuses.get(200, 0) >= REQUESTS * 3 // 4 - 5 and set(statuses) <= {200, 400, 404}, statuses
    after = _series(gateway.metrics())
    assert after == before, sorted(after - before)[:20]
    assert not any(s.startswith("hydro_pipeline_") and "{" in s for s in after)


def test_stage_labels_come_only_from_internal_callers(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(gateway.python_spec("echo", echo_dir))
    stage = {"X-Hydro-Pipeline": "p", "X-Hydro-Stage": "1"}
    assert gateway.invoke("echo", {}, headers=stage)[0] == 200
    assert gateway.invoke("echo", {}, headers={**stage, "Authorization": "Bearer not-the-token"})[0] == 200
    assert gateway.metric("hydro_pipeline_stage_duration_seconds_count", pipeline="p", stage="1",
                          function="echo") == 0
    assert gateway.invoke("echo", {}, headers={**stage, "Authorization": f"Bearer {gateway.token}"})[0] == 200
    assert gateway.metric("hydro_pipeline_stage_duration_seconds_count", pipeline="p", stage="1",
                          function="echo") == 1


def test_a_removed_function_leaves_no_series(gateway: Any, echo_dir: Path) -> None:
    gateway.deploy(gateway.python_spec("gone", echo_dir, rate={"rps": 0.01, "burst": 1, "per": "function"}))
    internal = {"X-Hydro-Pipeline": "gone", "X-Hydro-Stage": "1", "Authorization": f"Bearer {gateway.token}"}
    assert gateway.invoke("gone", {}, headers=internal)[0] == 200
    assert gateway.invoke("gone", {})[0] == 429
    assert 'function="gone"' in gateway.metrics()
    assert gateway.admin("DELETE", "/system/function/gone")[0] == 202
    text = gateway.metrics()
    assert 'function="gone"' not in text and 'pipeline="gone"' not in text
