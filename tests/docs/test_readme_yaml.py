"""Every ``yaml`` block of the README is a valid stack.yml, or a valid part of one (in process, no server).

A block that is a whole file (it starts with ``version:``) is parsed as it is; a fragment (one or
more functions, as the README shows them) is parsed under ``functions:``. Stages a fragment names
but does not define get a stub python3 function, since the README leaves them out for brevity.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hydro_serving.errors import StackError
from hydro_serving.stack.loader import parse_stack

REPO = Path(__file__).resolve().parents[2]
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
MISSING_STAGE = re.compile(r"names '([^']+)', which is not a function in this stack")


def _parse(fragment: str) -> list[str]:
    header = "version: 1.0\nprovider: {name: hydro}\nfunctions:\n"
    text = fragment if fragment.startswith("version") else header + fragment
    stubs: list[str] = []
    while True:
        try:
            return list(parse_stack(text, "stack.yml", env={}).functions)
        except StackError as exc:
            missing = MISSING_STAGE.search(exc.message)
            if missing is None or missing.group(1) in stubs:
                raise
            stubs.append(missing.group(1))
            text += f"  {missing.group(1)}:\n    lang: python3\n    handler: ./stub\n"


def test_every_yaml_block_of_the_readme_is_a_valid_stack() -> None:
    blocks = YAML_BLOCK.findall((REPO / "README.md").read_text())
    assert len(blocks) >= 4, "the README's stack.yml examples went missing"
    parsed = {name for block in blocks for name in _parse(block)}
    assert {"churn", "scoring", "classifier", "product-matching"} <= parsed


def test_a_broken_fragment_is_caught() -> None:
    """The check can fail: a misspelt key in a fragment is the loader's error, naming the key."""
    with pytest.raises(StackError) as caught:
        _parse("  churn:\n    lang: sklearn\n    scael: {min: 1}\n")
    assert caught.value.field == "functions.churn.scael"
