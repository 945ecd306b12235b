"""Where the worker learns which functions stream: the gateway's API, or a stack file.

A source returns ``{name: FunctionSpec}`` for the functions with a ``streaming:`` key. The gateway
source is re-read every refresh, so deploying a function with ``streaming`` starts its consumer and
removing it stops it; an unreachable gateway returns None (keep what runs, do not stop everything
on a blip).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydro_serving.errors import HydroError
from hydro_serving.gateway.client import GatewayClient
from hydro_serving.stack import FunctionSpec, load_stack

log = logging.getLogger(__name__)


class GatewaySource:
    """``GET /system/functions`` with the admin token; each entry's ``hydro`` is the canonical spec."""

    def __init__(self, client: GatewayClient) -> None:
        self.client = client

    def streaming_functions(self) -> dict[str, FunctionSpec] | None:
        try:
            entries: list[dict[str, Any]] = self.client.list_functions()
        except HydroError as exc:
            log.warning("stream: cannot list the gateway's functions (%s); keeping the current consumers",
                        exc.message)
            return None
        out = {}
        for entry in entries:
            raw = entry.get("hydro") if isinstance(entry, dict) else None
            if not isinstance(raw, dict) or "streaming" not in raw:
                continue
            try:
                spec = FunctionSpec.from_dict(raw)
            except HydroError as exc:
                log.warning("stream: ignoring function %r: %s", raw.get("name"), exc.message)
                continue
            out[spec.name] = spec
        return out


class StackSource:
    """The ``streaming`` functions of a stack file (they must be deployed on the gateway to be called)."""

    def __init__(self, path: Path, names: tuple[str, ...] = ()) -> None:
        self.path = path
        self.names = names

    def streaming_functions(self) -> dict[str, FunctionSpec] | None:
        """Re-read every refresh, so editing the file adds or removes consumers; a broken edit keeps them."""
        try:
            stack = load_stack(self.path)
            selected = stack.select(list(self.names))
        except HydroError as exc:
            log.warning("stream: cannot use %s (%s); keeping the current consumers", self.path, exc.message)
            return None
        return {spec.name: spec for spec in selected if spec.streaming is not None}
