"""stack.yml's limit keys (issue 12): ``limits.body``, ``scale.queue``, ``rate``; mistakes name the key and line."""

from __future__ import annotations

import pytest

from hydro_serving.errors import StackError
from hydro_serving.stack import parse_stack

BASE = """
version: "1.0"
functions:
  fn:
    lang: python3
    handler: ./fn
{extra}
"""


def test_limit_keys_parse_into_the_spec() -> None:
    stack = parse_stack(BASE.format(extra="    limits: {body: 20Mi, memory: 256Mi}\n    scale: {queue: 32}\n"
                                          "    rate: {rps: 2.5, per: ip}\n"))
    fn = stack.functions["fn"]
    assert fn.body_limit == 20 * 1024 * 1024 and fn.limits["memory"] == "256Mi"
    assert fn.scale.queue == 32
    assert fn.rate is not None and (fn.rate.rps, fn.rate.burst, fn.rate.per) == (2.5, 3, "ip")
    assert fn.to_dict()["rate"] == {"rps": 2.5, "burst": 3, "per": "ip"}
    plain = parse_stack(BASE.format(extra="")).functions["fn"]
    assert plain.scale.queue == 256 and plain.rate is None and plain.body_limit is None
    assert "queue" not in plain.to_dict()["scale"]  # the default leaves stored fingerprints unchanged


@pytest.mark.parametrize(("extra", "field"), [
    ("    limits: {body: lots}\n", "functions.fn.limits.body"),
    ("    limits: {body: 0}\n", "functions.fn.limits.body"),
    ("    scale: {queue: -1}\n", "functions.fn.scale.queue"),
    ("    rate: {rps: 0}\n", "functions.fn.rate.rps"),
    ("    rate: {rps: 5, per: user}\n", "functions.fn.rate.per"),
    ("    rate: {burst: 5}\n", "functions.fn.rate"),
    ("    rate: {rps: 5, every: 1}\n", "functions.fn.rate.every"),
])
def test_mistakes_name_the_key_and_line(extra: str, field: str) -> None:
    with pytest.raises(StackError) as info:
        parse_stack(BASE.format(extra=extra))
    assert info.value.field == field, info.value.message
    assert info.value.details.get("line") == 7


def test_limits_body_is_not_a_knative_container_resource(tmp_path) -> None:
    """limits.body is the gateway's (and runtime's) bound, not a Kubernetes quantity a cluster would refuse."""
    from hydro_serving.builder.knative import render_stack
    from hydro_serving.stack import load_stack

    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "handler.py").write_text("def handle(p, c):\n    return p\n")
    path = tmp_path / "stack.yml"
    path.write_text(BASE.format(extra="    limits: {body: 20Mi, memory: 256Mi}\n"))
    [service] = render_stack(load_stack(path, env={}), namespace="ml")
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"memory": "256Mi"}}
