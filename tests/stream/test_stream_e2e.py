"""Kafka streaming pipelines end to end: real tansu broker, real gateway, real replicas, ``hydro stream``
as a real process (SIGKILLed mid-way in the acceptance test).

The pipeline is a router over two python3 functions; records carry a sequence number per key so the
order of the answers per key can be checked, and bad records are mixed in.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.stream.conftest import create_topics, produce, run
from tests.stream.helpers import Reader, Worker

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

STAGE = '''
import os

NAME = os.environ["STAGE_NAME"]


def handle(payload, context):
    """Add this stage's mark; refuse a record that asks this stage to fail."""
    if payload.get("fail") == NAME:
        from hydro_serving.errors import ValidationError

        raise ValidationError(f"{NAME} refuses record {payload.get('seq')}", field="fail")
    return {**payload, NAME: True}
'''

GOOD = 10_000
KEYS = 200


def deploy_pipeline(gw: Any, folder: Path, topics: Any, concurrency: int = 8) -> None:
    gw.write_handler(folder, STAGE)
    for name in ("stage-a", "stage-b"):
        gw.deploy(gw.python_spec(name, folder, environment={"STAGE_NAME": name},
                                 scale={"min": 0, "max": 2, "concurrency": 16}))
    gw.deploy({"name": "pipe", "lang": "router", "chain": ["stage-a", "stage-b"],
               "scale": {"min": 0, "max": 1, "idle": 300, "concurrency": 32},
               "streaming": {"in": topics("in"), "out": topics("out"), "errors": topics("errors"),
                             "concurrency": concurrency}})


def test_pipeline_answers_every_record_in_order_per_key_and_survives_a_sigkill(
        tansu: str, gateway: Any, tmp_path: Path, topics: Any) -> None:
    gw = gateway
    run(create_topics(tansu, [topics("in")], partitions=4))
    run(create_topics(tansu, [topics("out"), topics("errors")], partitions=3))
    deploy_pipeline(gw, tmp_path / "stage", topics)
    assert gw.replica_pids() == []  # everything at zero: the stream scales it up like HTTP traffic

    items: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    bad: dict[str, str] = {}  # request id -> why it must fail
    for i in range(GOOD):
        key = f"k{i % KEYS}"
        headers = [] if i % 10 == 0 else [("x-request-id", f"r{i}".encode())]  # 1 in 10: id derived
        items.append((key.encode(), json.dumps({"seq": i, "key": key}).encode(), headers))
        if i % 500 == 250:
            bad[f"bad-json-{i}"] = "value"
            items.append((key.encode(), b"{not json", [("x-request-id", f"bad-json-{i}".encode())]))
            bad[f"bad-stage-{i}"] = "fail"
            items.append((key.encode(), json.dumps({"seq": -1, "fail": "stage-b"}).encode(),
                          [("x-request-id", f"bad-stage-{i}".encode())]))
    run(produce(tansu, topics("in"), items))

    worker = Worker(tansu, gw, tmp_path / "worker.log")
    started = time.monotonic()
    with Reader(tansu, [topics("out"), topics("errors")]) as reader:
        worker.start()
        reader.wait(lambda: reader.count(topics("out")) >= 3000, 120, "3000 answers before the kill")
        worker.kill()  # SIGKILL: no commit, no goodbye
        killed_at = reader.count(topics("out"))
        worker.start()
        worker.wait_log("stream: consuming pipe", count=2)
        done = lambda: (len(reader.request_ids(topics("out"))) >= GOOD  # noqa: E731
                        and len(reader.request_ids(topics("errors"))) >= len(bad))
        try:
            reader.wait(done, 150, "every record answered")
        finally:
            worker.stop()
        time.sleep(0.5)  # anything still in flight lands in the counts below
        outs, errors = list(reader.records[topics("out")]), list(reader.records[topics("errors")])
    seconds = time.monotonic() - started

    # every good record answered at least once, with its key, request id and trace; none lost to the kill
    answered: Counter[str] = Counter()
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for record in outs:
        headers = dict(record.headers)
        rid = headers["x-request-id"].decode()
        body = json.loads(record.value)
        assert body["stage-a"] is True and body["stage-b"] is True
        assert record.key.decode() == body["key"]
        assert headers["traceparent"].startswith(b"00-")
        seq = body["seq"]
        expected = f"r{seq}" if seq % 10 else None
        if expected:
            assert rid == expected
        else:
            topic, partition, offset = rid.split("/")  # derived: the same on every delivery
            assert topic == topics("in") and partition.isdigit() and offset.isdigit()
        answered[f"seq-{seq}"] += 1
        if rid not in seen:
            seen.add(rid)
            firsts[body["key"]].append(seq)
    assert set(answered) == {f"seq-{i}" for i in range(GOOD)}, f"lost: {GOOD - len(answered)}"
    duplicates = sum(answered.values()) - GOOD
    # in order per key: the first answer of each request id comes in the order the records were produced
    for key, seqs in firsts.items():
        assert seqs == sorted(seqs), f"answers of {key} out of order: {seqs[:20]}"
    assert len(firsts) == KEYS

    # bad records, and only they, on the error topic, with the error and the original record
    failed: Counter[str] = Counter()
    for record in errors:
        envelope = json.loads(record.value)
        rid = envelope["request_id"]
        assert rid in bad, envelope
        failed[rid] += 1
        assert envelope["function"] == "pipe" and envelope["record"]["topic"] == topics("in")
        assert envelope["error"]["field"] == bad[rid] or bad[rid] in json.dumps(envelope["error"]), envelope
        assert record.key == envelope["record"]["key"]["text"].encode()
        if rid.startswith("bad-json"):
            assert envelope["status"] == 400 and envelope["record"]["value"]["text"] == "{not json"
            assert envelope["attempts"] == 0  # refused by the worker: the function was never called
        else:
            assert envelope["status"] >= 400 and envelope["attempts"] == 1
    assert set(failed) == set(bad)
    print(f"\nstream acceptance: {GOOD} answers + {len(bad)} errors in {seconds:.1f}s; SIGKILL after "
          f"{killed_at} answers; duplicates after restart: {duplicates} answers, "
          f"{sum(failed.values()) - len(bad)} errors (at-least-once, detectable by request id)")
