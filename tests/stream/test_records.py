"""Record <-> call rules (pure functions), the offset book, and the ``streaming`` key of stack.yml."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from hydro_serving.errors import HydroError, StackError
from hydro_serving.stack import FunctionSpec, Streaming, parse_stack
from hydro_serving.stream import records
from hydro_serving.stream.offsets import OffsetBook
from hydro_serving.transport import Reply

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def rec(value: bytes | None = b'{"a": 1}', headers: tuple = (), key: bytes | None = b"k", offset: int = 7
        ) -> records.Inbound:
    return records.Inbound("in", 2, offset, key, value, headers)


def test_a_plain_record_becomes_a_call_with_a_derived_request_id_and_a_new_trace() -> None:
    call = records.prepare(rec(), max_bytes=1000)
    assert call.body == b'{"a": 1}' and call.request_id == "in/2/7"
    assert call.headers["X-Request-Id"] == "in/2/7" and call.headers["Content-Type"] == "application/json"
    assert call.headers["traceparent"].startswith("00-") and len(call.headers["traceparent"]) == 55


def test_the_records_request_id_and_trace_are_continued() -> None:
    call = records.prepare(rec(headers=(("X-Request-Id", b"order-42"), ("traceparent", TRACE.encode()))), 1000)
    assert call.request_id == "order-42"
    assert call.trace.trace_id == "0af7651916cd43dd8448eb211c80319c"  # same trace, a new span
    assert call.trace.span_id != "b7ad6b7169203331"


def test_other_headers_are_not_forwarded_and_a_declared_content_type_skips_the_json_check() -> None:
    call = records.prepare(rec(b"a,b\n1,2", (("content-type", b"text/csv"), ("authorization", b"Bearer x"))), 1000)
    assert call.headers["Content-Type"] == "text/csv" and "authorization" not in {k.lower() for k in call.headers}


@pytest.mark.parametrize(("record", "status", "field"), [
    (rec(b"not json"), 400, "value"),
    (rec(b"\xff\xfe"), 400, "value"),
    (rec(None), 400, "value"),
    (rec(b'{"a": "' + b"x" * 2000 + b'"}'), 413, "value"),
    (rec(headers=(("traceparent", b"00-" + b"a" * 5000),)), 400, "headers.traceparent"),
    (rec(headers=(("traceparent", b"\xff\xfe\xfd"),)), 400, "headers.traceparent"),
    (rec(headers=(("traceparent", b"00-zz-yy-01"),)), 400, "headers.traceparent"),
    (rec(headers=(("traceparent", TRACE.encode()), ("traceparent", TRACE.encode()))), 400, "headers.traceparent"),
    (rec(headers=(("x-request-id", b"a b\r\nX-Admin: yes"),)), 400, "headers.x-request-id"),
    (rec(headers=(("x-request-id", "é".encode()),)), 400, "headers.x-request-id"),
    (rec(headers=(("content-type", b"text/plain\r\nX-Evil: 1"),)), 415, "headers.content-type"),
])
def test_malformed_records_fail_naming_the_field(record: records.Inbound, status: int, field: str) -> None:
    with pytest.raises(HydroError) as info:
        records.prepare(record, max_bytes=1000)
    assert (info.value.status, info.value.field) == (status, field)


def test_a_hostile_request_id_still_gets_a_usable_id_for_the_error_record() -> None:
    assert records.request_id_of(rec(headers=(("x-request-id", b"\xff" * 9000),))) == "in/2/7"
    assert records.request_id_of(rec(headers=(("x-request-id", b"ok-1"),))) == "ok-1"


def test_the_answer_keeps_the_key_and_carries_the_request_id() -> None:
    call = records.prepare(rec(headers=(("x-request-id", b"r1"),)), 1000)
    out = records.answer(rec(), call, Reply(200, b'{"y": 2}', {"content-type": "application/json"}), "out")
    assert (out.topic, out.key, out.value) == ("out", b"k", b'{"y": 2}')
    assert dict(out.headers)["x-request-id"] == b"r1" and dict(out.headers)["traceparent"] == call.trace.header.encode()


def test_the_error_record_holds_the_error_and_the_original_value_and_headers() -> None:
    original = rec(b"\x00\xffbinary" * 10, (("x-trace", b"\xfe"), ("note", b"hello")))
    out = records.failure(original, "fn", "in/2/7", 400, {"error": "bad", "field": "value"}, 0, "errs", keep_bytes=16)
    envelope = json.loads(out.value)
    assert out.key == b"k" and out.topic == "errs" and dict(out.headers)["hydro-error-status"] == b"400"
    assert envelope["error"] == {"error": "bad", "field": "value"}
    assert envelope["record"]["topic"] == "in" and envelope["record"]["offset"] == 7
    value = envelope["record"]["value"]
    assert value["bytes"] == 80 and value["truncated"] is True
    assert base64.b64decode(value["base64"]) == original.value[:16]
    assert envelope["record"]["headers"] == [{"name": "x-trace", "bytes": 1, "base64": "/g=="},
                                             {"name": "note", "bytes": 5, "text": "hello"}]


def test_a_function_error_is_kept_as_sent_and_a_non_json_one_is_wrapped() -> None:
    assert records.reply_error("f", Reply(422, b'{"error": "x", "field": "a"}')) == {"error": "x", "field": "a"}
    wrapped = records.reply_error("f", Reply(502, b"<html>bad gateway</html>"))
    assert wrapped["error"] == "f answered 502" and wrapped["body"] == "<html>bad gateway</html>"


def test_offsets_commit_only_below_the_lowest_unfinished_record() -> None:
    book = OffsetBook()
    for offset in (10, 11, 12, 13):
        book.start("p0", offset)
    book.finish("p0", 11)
    book.finish("p0", 13)
    assert book.to_commit() == {"p0": 10}  # 10 is still running: a crash must re-read it
    book.committed({"p0": 10})
    assert book.to_commit() == {}  # nothing moved
    book.finish("p0", 10)
    assert book.to_commit() == {"p0": 12}
    book.finish("p0", 12)
    assert book.to_commit() == {"p0": 14} and book.pending() == 0
    book.forget(["p0"])
    book.finish("p0", 99)  # a late record of a revoked partition is ignored
    assert book.to_commit() == {}


def _stack(streaming: str) -> str:
    return f"functions:\n  f:\n    lang: python3\n    handler: ./f\n    streaming: {streaming}\n"


def test_the_streaming_key_parses_round_trips_and_defaults_the_group() -> None:
    spec = parse_stack(_stack("{in: a.in, out: a-out, errors: a_err, concurrency: 3}")).functions["f"]
    assert spec.streaming == Streaming("a.in", "a-out", "a_err", "hydro-f", 3)
    assert FunctionSpec.from_dict(spec.to_dict()).streaming == spec.streaming
    assert parse_stack(_stack("{in: a, out: b, errors: c}")).functions["f"].streaming.concurrency == 1


@pytest.mark.parametrize(("streaming", "field", "words"), [
    ("{in: a, out: b}", "functions.f.streaming", "errors"),
    ("{in: a, out: b, errors: c, partitions: 3}", "functions.f.streaming.partitions", "unknown key"),
    ("{in: 'a b', out: b, errors: c}", "functions.f.streaming.in", "does not match"),
    ("{in: a, out: b, errors: c, concurrency: 0}", "functions.f.streaming.concurrency", "minimum"),
    ("{in: a, out: a, errors: c}", "functions.f.streaming.in", "consume its own answers"),
])
def test_a_bad_streaming_key_is_an_error_with_its_path(streaming: str, field: str, words: str) -> None:
    with pytest.raises(StackError) as info:
        parse_stack(_stack(streaming))
    assert info.value.field == field, info.value.message
    assert words in info.value.message


def test_the_stack_source_follows_edits_and_keeps_its_consumers_over_a_broken_one(tmp_path: Path) -> None:
    from hydro_serving.stream.sources import StackSource

    path = tmp_path / "stack.yml"
    path.write_text(_stack("{in: a, out: b, errors: c}") + "  g:\n    lang: python3\n    handler: ./g\n")
    source = StackSource(path)
    assert list(source.streaming_functions() or {}) == ["f"]  # g does not stream
    path.write_text("functions: [not, a, mapping]\n")
    assert source.streaming_functions() is None  # keep what runs
    path.write_text(_stack("{in: a, out: b, errors: c}").replace("  f:", "  h:"))
    assert list(source.streaming_functions() or {}) == ["h"]
