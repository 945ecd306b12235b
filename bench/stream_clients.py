"""aiokafka vs confluent-kafka against the same Kafka-protocol broker (tansu), same small workload.

    python -m bench.stream_clients [--records 20000] [--bootstrap HOST:PORT]

Without ``--bootstrap`` (or KAFKA_BOOTSTRAP_SERVERS) it starts tansu on a free port with
shared/tools/kafka-up.sh and stops it afterwards. For each client, in the same run, on fresh topics:
produce N records of ~100 bytes to 4 partitions (acks=all), then one consumer in a new group reads
them all and commits: the time until its first record (the group join) and the steady read rate.
Prints a table and the ratios aiokafka / confluent-kafka. Why this decides the stream worker's
client: see README "Streaming with Kafka".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

TOOLS = Path(os.environ.get("HYDRO_SHARED_TOOLS", Path(__file__).resolve().parents[2] / "shared" / "tools"))


def _value(i: int) -> bytes:
    return b'{"seq": %d, "pad": "%s"}' % (i, b"x" * 80)


async def _aiokafka(bootstrap: str, n: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench-aio-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    futures = [await producer.send(topic, _value(i), key=b"k%d" % (i % 64)) for i in range(n)]
    await asyncio.gather(*futures)
    produce = time.perf_counter() - started
    await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    started = time.perf_counter()
    await consumer.start()
    got, first = 0, None
    while got < n:
        batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
        for records in batches.values():
            if records and first is None:
                first = time.perf_counter()
            got += len(records)
    await consumer.commit()
    end = time.perf_counter()
    await consumer.stop()
    assert first is not None
    return {"produce/s": n / produce, "first record s": first - started, "consume/s": n / max(end - first, 1e-9)}


def _confluent(bootstrap: str, n: int) -> dict[str, float]:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-ck-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept referenced until the futures resolve
    for future in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    started = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(topic, _value(i), key=b"k%d" % (i % 64))
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(60) == 0
    produce = time.perf_counter() - started
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    started = time.perf_counter()
    consumer.subscribe([topic])
    got, first = 0, None
    while got < n:
        messages = consumer.consume(2000, 1.0)
        ok = [m for m in messages if m.error() is None]
        if ok and first is None:
            first = time.perf_counter()
        got += len(ok)
        if time.perf_counter() - started > 300:
            raise RuntimeError(f"confluent-kafka read {got} of {n} records in 300 s")
    consumer.commit(asynchronous=False)
    end = time.perf_counter()
    consumer.close()
    assert first is not None
    return {"produce/s": n / produce, "first record s": first - started, "consume/s": n / max(end - first, 1e-9)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    args = parser.parse_args(argv)
    port = None
    bootstrap = args.bootstrap
    if not bootstrap:
        port = _free_port()
        subprocess.run(["bash", str(TOOLS / "kafka-up.sh"), str(port)], check=True, stdout=subprocess.DEVNULL)
        bootstrap = f"127.0.0.1:{port}"
    try:
        results: dict[str, Any] = {"aiokafka": asyncio.run(_aiokafka(bootstrap, args.records)),
                                   "confluent-kafka": _confluent(bootstrap, args.records)}
    finally:
        if port is not None:
            subprocess.run(["bash", str(TOOLS / "kafka-down.sh"), str(port)], check=False)
    keys = ["produce/s", "first record s", "consume/s"]
    print(f"{args.records} records of ~100 B, 4 partitions, tansu at {bootstrap}")
    print(f"{'client':<16}" + "".join(f"{k:>16}" for k in keys))
    for name, row in results.items():
        print(f"{name:<16}" + "".join(f"{row[k]:>16.1f}" for k in keys))
    aio, ck = results["aiokafka"], results["confluent-kafka"]
    print("aiokafka / confluent-kafka: " + ", ".join(f"{k} x{aio[k] / ck[k]:.2f}" for k in keys))


if __name__ == "__main__":
    main()
