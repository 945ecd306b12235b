"""Helpers for the framework templates' tests (conftest.py holds the fixtures)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

TIMINGS: dict[str, float] = {}  # what was measured -> seconds, printed at the end of the run


def upload(path: Path, name: str, signature: dict[str, Any] | None = None) -> str:
    """Upload to the module's store (framework detected from the files); returns ``name:version``."""
    from hydro_serving.store import open_store

    manifest = open_store().upload(path, name, signature=signature)
    return f"{name}:{manifest.version}"


def invoke_timed(gw: Any, name: str, payload: Any, label: str, path: str = "") -> tuple[int, dict[str, str], Any]:
    """The first call of a function at zero replicas: records its cold start (request to answer)."""
    started = time.monotonic()
    status, headers, body = gw.invoke(name, payload, path=path, timeout=180)
    if headers.get("X-Cold-Start") == "true":
        TIMINGS[f"{label} cold start through the gateway (s)"] = round(time.monotonic() - started, 2)
    return status, headers, body


def v2(name: str, tensors: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The gateway path and body of a V2 infer request."""
    return f"/v2/models/{name}/infer", {"inputs": tensors}


def outputs_by_name(body: dict[str, Any]) -> dict[str, Any]:
    return {o["name"]: o for o in body["outputs"]}
