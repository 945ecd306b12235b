"""The transport seam: how the router and the stream worker reach a function, whatever carries the call.

A :class:`Transport` has one job: deliver a request body (with headers and a deadline) to a
function by name and return what the function answered. HTTP over TCP to a gateway is one
transport; HTTP over a unix socket and the gateway's async queue are others (issue 17). Callers
choose one from a URL with :func:`open_transport`, so a new transport is a class registered for a
URL scheme and nothing else changes. Templates and the runtime never see this seam: they still
receive an HTTP request from the runtime server.

The contract every transport keeps:

* any answer of the function is a :class:`Reply`, whatever its status: the caller decides what a
  4xx or a 503 means for it (the router fails the stage, the stream worker retries or dead-letters);
* a failure below that (nothing answered) is a :class:`TransportError` with a ``kind``:
  ``connect`` (the call never reached the other side, so it is safe to retry), ``timeout`` or
  ``connection_lost`` (the function may have run: retrying could run it twice), ``too_large`` (it
  answered more than the caller's ``max_response`` bytes: the function ran, the answer is refused);
* a transport retries only what is safe (``connect``), never past the deadline;
* ``invoke`` is thread-safe and blocking; asyncio callers run it in an executor;
* a transport is built as ``cls(url, headers, **options)``; the options a caller may pass are
  ``pool_size``, ``connect_timeout``, ``retry`` (a ``ConnectRetry``) and ``max_response`` (bytes of
  an answer read at most); one that cannot honour an option refuses it (``TypeError``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

KINDS = ("connect", "timeout", "connection_lost", "too_large")


class TransportError(Exception):
    """Nothing answered: ``kind`` is one of :data:`KINDS`; ``attempts`` counts tries made."""

    def __init__(self, kind: str, message: str, attempts: int = 1) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown transport error kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        """True only when the function cannot have seen the request."""
        return self.kind == "connect"


@dataclass
class Reply:
    """What a function answered (any status); header names are lower-case."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")

    def retry_after(self, cap: float) -> float | None:
        """``Retry-After`` in seconds (the delta form only; an HTTP date is ignored), at most ``cap``."""
        value = self.headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value.strip())
        except ValueError:
            return None
        if seconds != seconds or seconds < 0:  # NaN or negative: ignore
            return None
        return min(seconds, cap)


class Transport(ABC):
    """Delivers a call to a function; one instance is shared by all threads of its caller."""

    @abstractmethod
    def invoke(self, function: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        """Call ``function`` with ``body``; ``timeout`` is the seconds the whole call may take.

        Returns the function's :class:`Reply` (any status); raises :class:`TransportError` when
        nothing answered.
        """

    def close(self) -> None:  # noqa: B027 - most transports hold nothing worth closing
        """Release pooled connections."""
