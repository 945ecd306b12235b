"""Everything the stream worker reads from flags and the environment, read once into one struct."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamConfig:
    """Settings of one ``hydro stream`` process (defaults are what the CLI shows)."""

    bootstrap_servers: str
    gateway_url: str
    token: str | None = None
    refresh: float = 5.0  # seconds between looks at the deployed functions
    retries: int = 6  # extra tries of a record answered 429/503
    backoff: float = 0.2  # first retry delay; doubles, with jitter
    backoff_max: float = 10.0
    retry_after_max: float = 30.0  # a Retry-After longer than this is cut to it
    call_margin: float = 5.0  # added to the function's own timeout for the gateway's queueing
    max_record_bytes: int = 1024 * 1024  # a bigger value goes to the error topic
    keep_bytes: int = 64 * 1024  # of the original value kept in an error record
    commit_interval: float = 0.5
    lane_queue: int = 8  # records fetched ahead per lane: backpressure, and a bound on replays after a crash
    client_id: str = "hydro-stream"
