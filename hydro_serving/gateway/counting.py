"""What counts as an invocation (``INVOCATIONS`` of ``hydro list``, ``hydro_gateway_invocations``).

Everything under ``/function/<name>/`` used to count, so a load balancer's readiness probe, a
Prometheus scrape of the replica or a V2 client reading metadata made a function look busy, and
a request refused with 415 counted as if the model had run. An invocation is a call that asks
the function for a result: its root (any method but HEAD/OPTIONS), a custom path of the
handler, or a V2 ``.../infer``; never the runtime's own endpoints (``_/…``, ``metrics``), V2
metadata or health, and never a 415 (the body was not even read as the function's input).
"""

from __future__ import annotations

NOT_INVOCATION_METHODS = frozenset({"HEAD", "OPTIONS"})
NOT_COUNTED_STATUSES = frozenset({415})


def is_invocation(method: str, subpath: str, status: int) -> bool:
    """``subpath`` is the part after ``/function/<name>`` (with or without its leading slash)."""
    if method.upper() in NOT_INVOCATION_METHODS or status in NOT_COUNTED_STATUSES:
        return False
    path = subpath.strip("/")
    if path == "metrics" or path.startswith("_/") or path == "_":
        return False
    if path == "v2" or path.startswith("v2/"):
        return path.endswith("/infer")
    return True
