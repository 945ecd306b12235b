"""What counts as an invocation (issue 14 point 17): the rule, on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydro_serving.gateway.counting import is_invocation


@pytest.mark.parametrize(("method", "path", "status", "counted"), [
    ("POST", "", 200, True),
    ("POST", "/", 400, True),  # a caller's mistake on the function's input is still a call of it
    ("GET", "", 200, True),  # a custom function may answer GET
    ("POST", "/custom/path", 500, True),
    ("POST", "v2/models/iris/infer", 200, True),
    ("POST", "/v2/models/iris/versions/1/infer", 200, True),
    ("POST", "", 415, False),
    ("POST", "v2/models/iris/infer", 415, False),
    ("GET", "_/ready", 200, False),
    ("GET", "/_/health", 200, False),
    ("GET", "_", 404, False),
    ("GET", "metrics", 200, False),
    ("GET", "v2/models/iris", 200, False),
    ("GET", "v2/models/iris/ready", 200, False),
    ("GET", "v2/health/live", 200, False),
    ("GET", "v2", 404, False),
    ("HEAD", "", 200, False),
    ("OPTIONS", "", 204, False),
    ("post", "", 200, True),
])
def test_is_invocation(method: str, path: str, status: int, counted: bool) -> None:
    assert is_invocation(method, path, status) is counted


def test_counts_are_kept_only_for_stored_functions(tmp_path: Path) -> None:
    """A flush racing a removal must not bring a removed function's count back."""
    from hydro_serving.gateway.state import StateStore

    state = StateStore(tmp_path / "state")
    try:
        state.put("a", {"service": "a"}, 1)
        state.save_invocation_counts({"a": 5, "gone": 7})
        assert state.invocation_counts() == {"a": 5}
        state.save_invocation_counts({"a": 6})
        assert state.invocation_counts() == {"a": 6}
        state.delete("a")
        assert state.invocation_counts() == {}
        state.save_invocation_counts({"a": 9})  # a late flush after the removal
        assert state.invocation_counts() == {}
    finally:
        state.close()
    reopened = StateStore(tmp_path / "state")
    try:
        reopened.put("b", {"service": "b"}, 1)
        reopened.save_invocation_counts({"b": 3})
    finally:
        reopened.close()
    assert StateStore(tmp_path / "state").invocation_counts() == {"b": 3}  # on disk, across opens
