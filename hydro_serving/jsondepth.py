"""A bound on how deeply a JSON document may nest, checked before it is parsed.

Why: Python's JSON decoder recurses per level; a body of ``[[[[...`` a few hundred thousand deep
raises ``RecursionError`` (a 500 and a traceback per request, issue 12), and a document just under the
interpreter's limit breaks whatever walks it later. Real payloads (records, tensors) nest a handful
of levels, so a document deeper than :data:`MAX_JSON_DEPTH` is refused with a 400 naming the limit.

The check costs a few passes of C-speed byte operations, not a Python loop per byte: strings are cut
out (a regex), everything but brackets deleted (``bytes.translate``), and innermost pairs removed
one level per pass, stopping after ``limit`` passes.
"""

from __future__ import annotations

import re

from hydro_serving.errors import BadRequest

MAX_JSON_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SAME_BRACKETS = bytes.maketrans(b"{}", b"[]")


def json_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text ``raw`` nests arrays/objects more than ``limit`` levels deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the common small case: nothing to scan
        return False
    brackets = _STRING.sub(b"", raw).translate(_SAME_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if shorter == brackets:  # unbalanced: not JSON; the parser will say so
            return False
        brackets = shorter
        if not brackets:
            return False
    return True


def check_json_depth(raw: bytes, field: str = "$", limit: int = MAX_JSON_DEPTH) -> None:
    """Raise a 400 naming the limit when ``raw`` nests deeper than ``limit``."""
    if json_depth_exceeds(raw, limit):
        raise BadRequest(f"the JSON document nests deeper than {limit} levels (the limit)", field=field,
                         details={"max_depth": limit})
