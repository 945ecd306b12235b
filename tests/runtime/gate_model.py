"""A model whose unpickling waits for a gate file: makes "still loading" observable without timing.

Pickled by the test into the model file; the runtime's worker imports this module (PYTHONPATH)
while loading, and blocks until the test creates the gate file (bounded, so nothing hangs).
"""

from __future__ import annotations

import os
import time
from typing import Any

from sklearn.base import BaseEstimator, TransformerMixin


class Gate(TransformerMixin, BaseEstimator):
    """An identity transformer; loading it blocks until ``path`` exists (at most ``limit`` seconds)."""

    def __init__(self, path: str = "", limit: float = 120.0) -> None:
        self.path = path
        self.limit = limit

    def fit(self, x: Any, y: Any = None) -> Gate:
        return self

    def transform(self, x: Any) -> Any:
        return x

    def __setstate__(self, state: dict[str, Any]) -> None:
        deadline = time.monotonic() + state.get("limit", 120.0)
        while state.get("path") and not os.path.exists(state["path"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        super().__setstate__(state)
