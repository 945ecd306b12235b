"""A circuit breaker per stage function: stop calling a stage that keeps failing.

While a stage is down, every pipeline request would otherwise wait for a connect error or a
timeout; an open breaker answers 503 at once instead, and lets one trial request through after a
cool-down (half-open) to find out whether the stage is back. Only failures that say "the stage is
broken" count: lost connections, refused connections, 502/503/504 and other 5xx, and timeouts when the
stage had its full budget. What a caller controls never counts, so that no caller can switch a stage
off for the others: a 4xx (the caller's input), a 500 ``handler_error`` (the handler raised on this
input: the stage is up and answered), and a timeout or 504 after the caller shortened the deadline
with ``X-Timeout`` below the stage's own ``timeout`` (or the router's, for a stage without one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass(frozen=True)
class BreakerDecision:
    """Whether a call may go ahead; when not, how long until the breaker half-opens."""

    allowed: bool
    retry_after: float = 0.0
    trial: bool = False  # this call is the half-open probe


class CircuitBreaker:
    """Closed -> (``failure_threshold`` consecutive failures) -> open -> (``cooldown``) -> half-open.

    Half-open admits one probe at a time: its success closes the breaker, its failure reopens it
    for another cool-down. Thread-safe; ``clock`` is injectable so tests need no sleeping.
    """

    def __init__(
        self, failure_threshold: int = 5, cooldown: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._current_state()

    def _current_state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.cooldown:
            return HALF_OPEN
        return self._state

    def peek(self) -> BreakerDecision:
        """Would a call be allowed now? Reserves nothing (used to fail fast before stage 1)."""
        with self._lock:
            state = self._current_state()
            if state == CLOSED or (state == HALF_OPEN and not self._probe_in_flight):
                return BreakerDecision(True)
            return BreakerDecision(False, self._retry_after())

    def acquire(self) -> BreakerDecision:
        """Ask to call the stage now; a half-open breaker hands out one probe at a time."""
        with self._lock:
            state = self._current_state()
            if state == CLOSED:
                return BreakerDecision(True)
            if state == HALF_OPEN and not self._probe_in_flight:
                self._state = HALF_OPEN
                self._probe_in_flight = True
                return BreakerDecision(True, trial=True)
            return BreakerDecision(False, self._retry_after())

    def _retry_after(self) -> float:
        if self._state == OPEN:
            return max(0.0, self.cooldown - (self._clock() - self._opened_at))
        return self.cooldown  # half-open with a probe out: its answer decides

    def record_success(self) -> None:
        """The stage answered (2xx, or a 4xx: the stage is up, the input was wrong)."""
        with self._lock:
            self._state = CLOSED
            self._failures = 0
            self._probe_in_flight = False

    def release(self) -> None:
        """The call proved nothing either way (the caller cut it short): free a half-open probe slot."""
        with self._lock:
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = OPEN
                self._opened_at = self._clock()
            self._probe_in_flight = False


class BreakerBoard:
    """One breaker per function name, created on first use with the router's thresholds."""

    def __init__(
        self, failure_threshold: int = 5, cooldown: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._args = (failure_threshold, cooldown, clock)
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, function: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(function)
            if breaker is None:
                breaker = self._breakers[function] = CircuitBreaker(*self._args)
            return breaker

    def states(self) -> dict[str, str]:
        with self._lock:
            items = list(self._breakers.items())
        return {name: breaker.state for name, breaker in items}
