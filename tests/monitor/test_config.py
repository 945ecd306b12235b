"""``monitoring:`` in stack.yml: parsed, validated with the key path, round-tripped through the gateway's JSON."""

from __future__ import annotations

import pytest

from hydro_serving.errors import StackError
from hydro_serving.stack import FunctionSpec, parse_stack

STACK = """
version: 1.0
provider: {name: hydro}
functions:
  churn:
    lang: python3
    handler: ./churn
    monitoring: {sample: 0.25, window: {rows: 200, time: 5m}, alert: "http://127.0.0.1:9/hook", prediction: label}
  plain:
    lang: python3
    handler: ./plain
  short:
    lang: python3
    handler: ./short
    monitoring: {sample: 1, window: 50}
"""


def test_monitoring_parses_and_round_trips():
    stack = parse_stack(STACK)
    m = stack.functions["churn"].monitoring
    assert (m.sample, m.window_rows, m.window_seconds, m.alert, m.prediction) == (
        0.25, 200, 300.0, "http://127.0.0.1:9/hook", "label")
    assert stack.functions["plain"].monitoring is None
    assert "monitoring" not in stack.functions["plain"].to_dict()
    short = stack.functions["short"].monitoring
    assert (short.sample, short.window_rows, short.window_seconds) == (1.0, 50, 600.0)
    again = FunctionSpec.from_dict(stack.functions["churn"].to_dict())
    assert again.monitoring == m


@pytest.mark.parametrize(("snippet", "path"), [
    ("{sample: 1.5}", "sample"),
    ("{sample: -0.1}", "sample"),
    ("{sampel: 0.1}", "sampel"),
    ("{window: 3}", "window"),
    ("{window: {rows: 100, every: 2}}", "window"),
    ("{alert: 'file:///etc/passwd'}", "alert"),
    ("{alert: 'http://x y'}", "alert"),
])
def test_bad_monitoring_names_the_key(snippet, path):
    text = STACK.replace("{sample: 1, window: 50}", snippet)
    with pytest.raises(StackError) as err:
        parse_stack(text)
    assert "monitoring" in str(err.value.to_dict().get("field", "")) + str(err.value)
    assert path in str(err.value)
