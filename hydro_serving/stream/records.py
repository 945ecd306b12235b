"""From a Kafka record to a function call and back: pure functions, no client library, no I/O.

The Hydro Serving way of carrying a request on Kafka:

* the record's **value is the request body** (JSON unless a ``content-type`` header says otherwise);
* its headers may carry ``traceparent`` (W3C) and ``x-request-id``; a record without a request id
  gets ``<topic>/<partition>/<offset>``, which is the same on every delivery of that record, so a
  duplicate after a crash is detectable by request id whether or not the producer set one;
* the **answer record keeps the key** (so it lands in the same output partition for every record of
  a key), and carries the request id, the trace and the answer's content type;
* a **failed record** goes to the error topic, same key, as a JSON envelope: what went wrong (the
  function's own error JSON when it sent one), where the record came from, and the original value
  and headers (text when UTF-8, base64 otherwise; cut to ``keep_bytes`` so the envelope fits the
  broker's message size).

Headers and values are untrusted: a record whose known headers are malformed (not UTF-8, too long,
repeated, not the right form) or whose value is too big or not JSON fails with a
:class:`HydroError` that names the field, and goes to the error topic like any failure.
Other headers are not forwarded to the function.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydro_serving.errors import BadRequest, HydroError, PayloadTooLarge, UnsupportedMediaType
from hydro_serving.router.tracing import TraceContext, new_span_id, new_trace_id, parse_traceparent
from hydro_serving.transport import Reply

REQUEST_ID = "x-request-id"
TRACEPARENT = "traceparent"
CONTENT_TYPE = "content-type"
ERROR_STATUS = "hydro-error-status"
MAX_HEADER_BYTES = 256
_REQUEST_ID_FORM = re.compile(r"^[A-Za-z0-9._:/@+=-]{1,128}$")
_CONTENT_TYPE_FORM = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+( *;[ -~]*)?$")

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Inbound:
    """A consumed record, independent of the Kafka client that fetched it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()

    @property
    def derived_request_id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class Call:
    """A record made ready for a function: the body and the headers to send."""

    request_id: str
    body: bytes
    headers: dict[str, str]
    trace: TraceContext


@dataclass(frozen=True)
class Outbound:
    """A record to produce: answer or error."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


def _header(record: Inbound, name: str) -> str | None:
    """The one value of header ``name`` (case-insensitive), decoded; BadRequest when it is malformed."""
    values = [v for k, v in record.headers if isinstance(k, str) and k.lower() == name]
    if not values:
        return None
    field = f"headers.{name}"
    if len(values) > 1:
        raise BadRequest(f"header '{name}' appears {len(values)} times; send it once", field=field)
    raw = values[0] or b""
    if len(raw) > MAX_HEADER_BYTES:
        raise BadRequest(f"header '{name}' is {len(raw)} bytes; at most {MAX_HEADER_BYTES} are accepted", field=field)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(f"header '{name}' is not ASCII text", field=field) from None


def request_id_of(record: Inbound) -> str:
    """The record's request id when it carries a valid one, else ``<topic>/<partition>/<offset>``.

    Never raises: the error record of a record with a hostile request id still needs an id.
    """
    try:
        value = _header(record, REQUEST_ID)
    except BadRequest:
        return record.derived_request_id
    if value is not None and _REQUEST_ID_FORM.match(value):
        return value
    return record.derived_request_id


def prepare(record: Inbound, max_bytes: int) -> Call:
    """Validate the record and build the call; :class:`HydroError` (naming the field) when it cannot be sent."""
    value = record.value if record.value is not None else b""
    if len(value) > max_bytes:
        raise PayloadTooLarge(f"record value is {len(value)} bytes; the stream worker accepts at most {max_bytes}",
                              field="value")
    request_id = _header(record, REQUEST_ID)
    if request_id is not None and not _REQUEST_ID_FORM.match(request_id):
        raise BadRequest("header 'x-request-id' must be 1-128 characters of letters, digits and ._:/@+=-",
                         field=f"headers.{REQUEST_ID}")
    traceparent = _header(record, TRACEPARENT)
    if traceparent is not None:
        parent = parse_traceparent(traceparent)
        if parent is None:
            raise BadRequest("header 'traceparent' is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)",
                             field=f"headers.{TRACEPARENT}")
        trace = parent.child()
    else:
        trace = TraceContext(new_trace_id(), new_span_id(), "01")
    content_type = _header(record, CONTENT_TYPE) or "application/json"
    if not _CONTENT_TYPE_FORM.match(content_type):
        raise UnsupportedMediaType(f"header 'content-type' is not a media type: {content_type[:64]!r}",
                                   field=f"headers.{CONTENT_TYPE}")
    if content_type.split(";")[0].strip().lower() == "application/json":
        try:
            json.loads(value)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise BadRequest(f"record value is not JSON: {str(exc)[:200]}", field="value") from None
    rid = request_id or record.derived_request_id
    headers = {"Content-Type": content_type, "traceparent": trace.header, "X-Request-Id": rid}
    return Call(rid, value, headers, trace)


def answer(record: Inbound, call: Call, reply: Reply, topic: str) -> Outbound:
    """The output record: same key, the answer as value, request id, trace and content type as headers."""
    headers: Headers = [(REQUEST_ID, call.request_id.encode()), (TRACEPARENT, call.trace.header.encode()),
                        (CONTENT_TYPE, reply.content_type[:MAX_HEADER_BYTES].encode("ascii", "replace"))]
    return Outbound(topic, record.key, reply.body, headers)


def reply_error(function: str, reply: Reply) -> dict[str, Any]:
    """The error JSON of a failed reply: the function's own (``{"error": ...}``) when it sent one."""
    try:
        body = json.loads(reply.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return body
    text = reply.body[:2000].decode("utf-8", "replace")
    return {"error": f"{function} answered {reply.status}", "code": "upstream_error", "body": text}


def exception_error(exc: HydroError) -> dict[str, Any]:
    return exc.to_dict()


def _text_or_base64(data: bytes, keep: int) -> dict[str, Any]:
    kept = data[:keep]
    out: dict[str, Any] = {"bytes": len(data)}
    try:
        out["text"] = kept.decode("utf-8")
    except UnicodeDecodeError:
        out["base64"] = base64.b64encode(kept).decode()
    if len(kept) < len(data):
        out["truncated"] = True
    return out


def failure(record: Inbound, function: str, request_id: str, status: int, error: dict[str, Any], attempts: int,
            topic: str, keep_bytes: int) -> Outbound:
    """The error record: the error JSON, where the record came from, and the original value and headers."""
    envelope = {
        "error": error,
        "status": status,
        "function": function,
        "request_id": request_id,
        "attempts": attempts,
        "record": {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": _text_or_base64(record.key, keep_bytes) if record.key is not None else None,
            "value": _text_or_base64(record.value or b"", keep_bytes),
            "headers": [{"name": str(k)[:MAX_HEADER_BYTES], **_text_or_base64(v or b"", MAX_HEADER_BYTES * 4)}
                        for k, v in list(record.headers)[:64]],
        },
    }
    value = json.dumps(envelope, separators=(",", ":")).encode()
    headers: Headers = [(REQUEST_ID, request_id.encode()), (CONTENT_TYPE, b"application/json"),
                        (ERROR_STATUS, str(status).encode())]
    return Outbound(topic, record.key, value, headers)
