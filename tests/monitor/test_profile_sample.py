"""The training profile keeps a bounded, seeded sample per column: the reference of two-sample tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hydro_serving.store.profile import SAMPLE, profile_csv


def test_profile_keeps_a_bounded_reproducible_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    xs = rng.normal(10, 2, size=5000).round(4)
    words = ["a" * int(n) for n in rng.integers(1, 30, size=5000)]
    path = tmp_path / "train.csv"
    path.write_text("x,w,small\n" + "".join(f"{x},{w},{i % 3}\n" for i, (x, w) in enumerate(zip(xs, words,
                                                                                                  strict=True))))
    prof = profile_csv(path)
    x, w, small = prof["columns"]
    assert len(x["sample"]) == SAMPLE and set(x["sample"]) <= set(xs.tolist())
    assert abs(np.mean(x["sample"]) - xs.mean()) < 0.3  # a uniform sample, not the head of the file
    assert x["sample"] != xs[:SAMPLE].tolist()
    assert len(w["length_sample"]) == SAMPLE and min(w["length_sample"]) >= 1 and max(w["length_sample"]) <= 29
    assert small["type"] == "integer" and len(small["sample"]) == SAMPLE
    assert profile_csv(path)["columns"][0]["sample"] == x["sample"]  # seeded: the same on every run

    short = tmp_path / "short.csv"
    short.write_text("x,s\n1,ab\n2,\n3,abcd\n")
    a, s = profile_csv(short)["columns"]
    assert a["sample"] == [1.0, 2.0, 3.0] and s["length_sample"] == [2, 4]
