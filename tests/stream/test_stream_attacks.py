"""Hostile and failing records, and the function's life cycle, against a real worker, gateway and tansu.

Every bad record lands on the error topic with an error naming the field and the original record;
the worker keeps going (a good record after them is answered). Removing the function stops its
consumption (offsets stay where they were); deploying it again resumes from there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.stream.conftest import create_topics, produce, run
from tests.stream.helpers import Reader, Worker

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

HANDLER = '''
import time


def handle(payload, context):
    """Echo; or be busy (503), slow, or broken, when the record asks."""
    if payload.get("busy"):
        from hydro_serving.errors import ServiceUnavailable

        raise ServiceUnavailable("busy, try later")
    if payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    if payload.get("boom"):
        raise RuntimeError("secret internals /etc/passwd")
    return {"echo": payload}
'''


def streaming_spec(gw: Any, folder: Path, topics: Any, **kw: Any) -> dict[str, Any]:
    gw.write_handler(folder, HANDLER)
    return gw.python_spec("victim", folder, streaming={"in": topics("in"), "out": topics("out"),
                                                       "errors": topics("errors"), "concurrency": 4}, **kw)


def test_hostile_records_go_to_the_error_topic_and_the_worker_keeps_going(
        tansu: str, gateway: Any, tmp_path: Path, topics: Any) -> None:
    gw = gateway
    gw.deploy(streaming_spec(gw, tmp_path / "victim", topics, timeout="1s"))
    run(create_topics(tansu, [topics("in"), topics("out"), topics("errors")]))
    hostile: list[tuple[str, bytes | None, list[tuple[str, bytes]], int, str]] = [
        # (request id, value, headers, status, field or words in the error)
        ("not-json", b"\x00\x01 this is not JSON", [], 400, "value"),
        ("enormous", b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}', [], 413, "value"),
        ("tombstone", None, [], 400, "value"),
        ("huge-trace", b"{}", [("traceparent", b"00-" + b"f" * 100_000)], 400, "headers.traceparent"),
        ("binary-trace", b"{}", [("traceparent", b"\xff\xfe\x00\x80" * 8)], 400, "headers.traceparent"),
        ("twice", b"{}", [("x-request-id", b"a"), ("X-Request-Id", b"b")], 400, "headers.x-request-id"),
        ("crlf-type", b"{}", [("content-type", b"application/json\r\nX-Admin: 1")], 415, "headers.content-type"),
        ("busy", b'{"busy": true}', [], 503, "busy"),
        ("slow", b'{"sleep": 5}', [], 504, ""),
        ("boom", b'{"boom": true}', [], 500, ""),
    ]
    items = []
    for rid, value, headers, _, _ in hostile:
        named = rid not in ("twice",)
        extra = [("x-request-id", rid.encode())] if named else []
        items.append((rid.encode(), value, [*extra, *headers, ("junk-" + rid, b"\xff" * 10)]))
    items += [(f"k{i}".encode(), json.dumps({"i": i}).encode(), [("x-request-id", f"good-{i}".encode())])
              for i in range(5)]
    run(produce(tansu, topics("in"), items, max_request_size=4 * 1024 * 1024))

    worker = Worker(tansu, gw, tmp_path / "worker.log", "--retries", "2").start()
    try:
        with Reader(tansu, [topics("out"), topics("errors")]) as reader:
            reader.wait(lambda: reader.count(topics("out")) >= 5 and reader.count(topics("errors")) >= len(hostile),
                        90, "answers and errors")
            errors = {rec.key.decode(): json.loads(rec.value) for rec in reader.records[topics("errors")]}
            outs = [json.loads(rec.value) for rec in reader.records[topics("out")]]
        assert worker.proc is not None and worker.proc.poll() is None  # still running
    finally:
        worker.stop()
    assert sorted(o["echo"]["i"] for o in outs) == [0, 1, 2, 3, 4]
    assert set(errors) == {h[0] for h in hostile}
    for rid, value, _headers, status, words in hostile:
        envelope = errors[rid]
        assert envelope["status"] == status, (rid, envelope)
        error_json = json.dumps(envelope["error"])
        assert words in error_json, (rid, envelope)
        assert "Traceback" not in error_json and "/etc/passwd" not in error_json, envelope
        kept = envelope["record"]["value"]
        assert kept["bytes"] == len(value or b"")
        # the original headers come along, binary ones as base64
        assert any(h["name"] == f"junk-{rid}" and "base64" in h for h in envelope["record"]["headers"])
    assert errors["enormous"]["record"]["value"]["truncated"] is True  # cut to what fits a broker message
    assert errors["busy"]["attempts"] == 3  # retried twice (--retries 2), then dead-lettered
    assert errors["not-json"]["attempts"] == 0 and errors["not-json"]["request_id"] == "not-json"
    assert errors["twice"]["request_id"] == f"{topics('in')}/0/5"  # an ambiguous id is not trusted


def test_removing_the_function_stops_consumption_and_deploying_it_resumes(
        tansu: str, gateway: Any, tmp_path: Path, topics: Any) -> None:
    gw = gateway
    spec = streaming_spec(gw, tmp_path / "victim", topics)
    gw.deploy(spec)
    run(create_topics(tansu, [topics("in"), topics("out"), topics("errors")]))

    def batch(start: int, n: int) -> list[Any]:
        return [(b"k", json.dumps({"i": i}).encode(), [("x-request-id", f"r{i}".encode())])
                for i in range(start, start + n)]

    run(produce(tansu, topics("in"), batch(0, 20)))
    worker = Worker(tansu, gw, tmp_path / "worker.log").start()
    try:
        with Reader(tansu, [topics("out"), topics("errors")]) as reader:
            reader.wait(lambda: reader.count(topics("out")) >= 20, 60, "the first 20 answers")
            status, _ = gw.admin("DELETE", "/system/functions", {"functionName": "victim"})
            assert status == 202
            worker.wait_log("stream: stopped consuming victim")
            run(produce(tansu, topics("in"), batch(20, 10)))
            time.sleep(2.0)  # several refreshes (0.3 s) and fetches: a consumer still running would answer
            assert reader.count(topics("out")) == 20 and reader.count(topics("errors")) == 0
            gw.deploy(spec)
            worker.wait_log("stream: consuming victim", count=2)
            reader.wait(lambda: reader.count(topics("out")) >= 30, 60, "the 10 records sent while removed")
            answers = [json.loads(rec.value)["echo"]["i"] for rec in reader.records[topics("out")]]
    finally:
        worker.stop()
    assert answers == list(range(30))  # one key: in order, none lost, none twice (a clean stop commits)


def test_a_gateway_outage_fails_no_record_the_worker_waits_and_resumes(
        tansu: str, gateway: Any, tmp_path: Path, topics: Any) -> None:
    gw = gateway
    gw.deploy(streaming_spec(gw, tmp_path / "victim", topics))
    run(create_topics(tansu, [topics("in"), topics("out"), topics("errors")]))
    records = [(f"k{i % 3}".encode(), json.dumps({"i": i}).encode(), [("x-request-id", f"r{i}".encode())])
               for i in range(40)]
    run(produce(tansu, topics("in"), records[:20]))
    worker = Worker(tansu, gw, tmp_path / "worker.log").start()
    try:
        with Reader(tansu, [topics("out"), topics("errors")]) as reader:
            reader.wait(lambda: reader.count(topics("out")) >= 20, 60, "answers before the outage")
            gw.stop()  # the gateway and its replicas are gone: connections refused
            run(produce(tansu, topics("in"), records[20:]))
            worker.wait_log("unreachable")
            assert reader.count(topics("errors")) == 0  # not the records' fault: nothing dead-lettered
            gw.start()  # same port and state: the function is known again
            reader.wait(lambda: len(reader.request_ids(topics("out"))) >= 40, 60, "answers after the outage")
            assert reader.count(topics("errors")) == 0
    finally:
        worker.stop()


def test_two_workers_share_a_group_and_hand_partitions_over_without_losing_records(
        tansu: str, gateway: Any, tmp_path: Path, topics: Any) -> None:
    gw = gateway
    gw.deploy(streaming_spec(gw, tmp_path / "victim", topics))
    run(create_topics(tansu, [topics("in")], partitions=4))
    run(create_topics(tansu, [topics("out"), topics("errors")]))
    total = 1500
    run(produce(tansu, topics("in"), [(f"k{i % 40}".encode(), json.dumps({"i": i}).encode(),
                                      [("x-request-id", f"r{i}".encode())]) for i in range(total)]))
    first = Worker(tansu, gw, tmp_path / "w1.log").start()
    second = Worker(tansu, gw, tmp_path / "w2.log")
    try:
        with Reader(tansu, [topics("out"), topics("errors")]) as reader:
            reader.wait(lambda: reader.count(topics("out")) >= 200, 60, "the first worker's answers")
            second.start()  # joins the group: a rebalance while the first is mid-stream
            second.wait_log("assigned", timeout=60)
            reader.wait(lambda: reader.count(topics("out")) >= 900, 60, "answers after the rebalance")
            assert first.stop() == 0  # SIGTERM: commits and leaves; its partitions move to the second
            reader.wait(lambda: len(reader.request_ids(topics("out"))) >= total, 90, "every record answered")
            time.sleep(0.5)
            ids = [dict(r.headers)["x-request-id"] for r in reader.records[topics("out")]]
            by_key: dict[bytes, list[int]] = {}
            for record in reader.records[topics("out")]:
                by_key.setdefault(record.key, []).append(json.loads(record.value)["echo"]["i"])
            assert reader.count(topics("errors")) == 0
    finally:
        first.stop()
        second.stop()
    assert "stopped consuming victim" in first.log() and "consuming victim" in second.log()
    assert len(set(ids)) == total
    for key, seen in by_key.items():  # first answers in order per key, across the hand-over
        firsts = list(dict.fromkeys(seen))
        assert firsts == sorted(firsts), (key, firsts[:30])
    print(f"\ntwo workers: {total} records, {len(ids) - total} duplicate answers across two rebalances")
