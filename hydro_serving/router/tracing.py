"""W3C Trace Context (``traceparent``) for the pipeline: one trace, one new span per stage call.

Format: ``version-traceid-parentid-flags`` = ``00-<32 hex>-<16 hex>-<2 hex>``. A missing or
malformed header starts a new trace (the spec says to restart rather than propagate garbage);
an all-zero trace or span id is invalid, version ``ff`` is forbidden, and a higher version than
00 is read by its first four fields as the spec requires.
"""

from __future__ import annotations

import random
import re
import secrets
from dataclasses import dataclass

_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class TraceContext:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex: the span that called us (or ours, for a new trace)
    flags: str = "01"

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> TraceContext:
        """A new span in the same trace: what a stage call carries."""
        return TraceContext(self.trace_id, new_span_id(), self.flags)


def new_trace_id() -> str:
    while True:
        value = secrets.token_hex(16)
        if value != "0" * 32:
            return value


def new_span_id() -> str:
    """16 hex digits, never all zero. Not a secret: ``random`` (re-seeded in every forked worker), not
    ``secrets``, whose ``os.urandom`` system call per stage call showed up in the router's profile."""
    while True:
        value = random.getrandbits(64)
        if value:
            return f"{value:016x}"


def _is_hex(value: str, length: int) -> bool:
    return len(value) == length and bool(_HEX.match(value))


def parse_traceparent(value: str | None) -> TraceContext | None:
    """The context carried by a ``traceparent`` header, or None if absent or invalid."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if not _is_hex(version, 2) or version == "ff":
        return None
    if version == "00" and len(parts) != 4:
        return None
    if not (_is_hex(trace_id, 32) and _is_hex(span_id, 16) and _is_hex(flags, 2)):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceContext(trace_id, span_id, flags)


def incoming_trace(value: str | None) -> TraceContext:
    """The caller's trace, continued; or a fresh sampled trace when the caller sent none."""
    return parse_traceparent(value) or TraceContext(new_trace_id(), new_span_id(), "01")
