"""Deadlines: one budget per pipeline request, shared out to the stages as they run.

The budget comes from the caller (``X-Timeout`` in seconds) or the router's own ``timeout``, and
the runtime's deadline when it has one; whatever is earliest wins. Each stage gets what remains,
capped by its own ``timeout``, minus a small margin kept so that the router can still answer
with a 504 naming the stage before its own caller gives up on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hydro_serving.errors import ValidationError

TIMEOUT_HEADER = "x-timeout"
_CLOCK_SLACK = 1.0  # seconds between the runtime fixing its deadline and the router fixing its own, at most


def parse_timeout_header(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``X-Timeout`` (case-insensitive), None when absent; a bad value is a 400."""
    raw = next((v for k, v in headers.items() if k.lower() == TIMEOUT_HEADER), None)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        value = float(str(raw).strip().removesuffix("s"))
    except ValueError:
        raise ValidationError(f"X-Timeout must be a number of seconds, got {raw!r}", field="X-Timeout") from None
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(f"X-Timeout must be a positive number of seconds, got {raw!r}", field="X-Timeout")
    return value


@dataclass
class Deadline:
    """An absolute instant on ``clock`` (monotonic seconds) by which the pipeline must answer."""

    at: float
    margin: float = 0.0
    clock: Callable[[], float] = time.monotonic
    # True when the caller's X-Timeout (or an upstream deadline) is shorter than the router's own timeout:
    # a stage that then runs out of time has not shown it is slow, so its breaker must not hear of it.
    caller_shortened: bool = False

    @classmethod
    def start(
        cls,
        headers: Mapping[str, str],
        default_timeout: float,
        runtime_deadline: float | None = None,
        margin: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> Deadline:
        now = clock()
        asked = parse_timeout_header(headers)
        budget = asked or default_timeout
        at = now + budget
        shortened = asked is not None and asked < default_timeout
        if runtime_deadline is not None:
            at = min(at, runtime_deadline)
            # the runtime's deadline was fixed a moment before this one: only a clear cut is the caller's
            shortened = shortened or runtime_deadline < now + default_timeout - _CLOCK_SLACK
        # never let the margin eat more than a tenth of a small budget
        return cls(at=at, margin=min(margin, budget / 10), clock=clock, caller_shortened=shortened)

    def remaining(self) -> float:
        return self.at - self.clock()

    def for_stage(self, stage_timeout: float | None) -> float:
        """Seconds a stage may take now: what remains (less the margin), capped by the stage's own timeout.

        Zero or less means there is no time left to call the stage at all.
        """
        left = self.remaining() - self.margin
        if stage_timeout is not None:
            left = min(left, stage_timeout)
        return left
