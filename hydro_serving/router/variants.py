"""Choosing an experiment's variant: by cumulative weight, randomly or sticky per key.

A draw ``r`` in ``[0, total)`` picks the first variant whose cumulative weight exceeds ``r``;
each variant therefore gets exactly ``weight / total`` of the draws and a weight of 0 is never
chosen. Sticky choices hash ``key`` with the stage index through sha256 (not ``hash()``, which is
salted per process), so every router replica sends the same key to the same variant, while
different stages of one pipeline still split independently.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence


def pick_by_weight(variants: Sequence[tuple[str, int]], draw: float) -> str:
    """The variant selected by ``draw`` in ``[0, 1)`` under cumulative weights."""
    total = sum(weight for _, weight in variants)
    if total <= 0:
        raise ValueError("variant weights must sum to more than 0")
    point = draw * total
    cumulative = 0
    for name, weight in variants:
        cumulative += weight
        if point < cumulative:
            return name
    # draw < 1 guarantees a hit above; float rounding at the very top lands on the last non-zero variant
    return next(name for name, weight in reversed(variants) if weight > 0)


def sticky_draw(key: str, stage_index: int) -> float:
    """A uniform number in ``[0, 1)`` fixed by ``(key, stage_index)``, stable across processes."""
    digest = hashlib.sha256(f"{stage_index}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_variant(
    variants: Sequence[tuple[str, int]], stage_index: int, key: str | None = None, rng: random.Random | None = None
) -> str:
    """One variant for this request: sticky when ``key`` is given, else a fresh random draw."""
    if len(variants) == 1:
        return variants[0][0]
    draw = sticky_draw(key, stage_index) if key else (rng or random).random()
    return pick_by_weight(variants, draw)
