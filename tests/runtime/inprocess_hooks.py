"""Events shared by tests/runtime/test_inprocess.py and the handler.py files it writes.

The runtime app runs in the test's own process, so a user function can block on a
``threading.Event`` the test sets: "still loading", "a request is in flight" and "the handler
overran its timeout" become states the test controls, not sleeps. The handler imports this
module by its package name, so it shares the test's objects.
"""

from __future__ import annotations

import threading

WAIT_LIMIT = 30.0  # a gate never opened by a failing test frees its thread after this long

_lock = threading.Lock()
_events: dict[str, threading.Event] = {}


def event(name: str) -> threading.Event:
    with _lock:
        return _events.setdefault(name, threading.Event())


def wait(name: str) -> bool:
    """Block (bounded) until the test opens the gate ``name``."""
    return event(name).wait(WAIT_LIMIT)


def open_all() -> None:
    """Release every blocked handler thread (teardown), then forget the events."""
    with _lock:
        events = list(_events.values())
        _events.clear()
    for item in events:
        item.set()
