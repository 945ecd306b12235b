"""Decoding bodies into rows, references from profiles and first windows, per-row health checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hydro_serving.contract import Signature
from hydro_serving.monitor import decode, reference
from hydro_serving.monitor.checks import check_row
from hydro_serving.store.profile import profile_csv

SIG = Signature.from_dict({"inputs": [{"name": "age", "dtype": "int64", "shape": [-1]},
                                      {"name": "plan", "dtype": "string", "shape": [-1]}]})


@pytest.fixture
def profile(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    lines = ["age,plan,note"]
    for i in range(300):
        lines.append(f"{rng.integers(18, 80)},{['basic', 'pro', 'team'][i % 3]},{'n' * (i % 40)}-{i}")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    return profile_csv(path)


@pytest.mark.parametrize(("body", "expected"), [
    (b'[{"a": 1}, {"a": 2}]', [{"a": 1}, {"a": 2}]),
    (b'{"a": 1, "b": "x"}', [{"a": 1, "b": "x"}]),
    (b'{"a": [1, 2], "b": ["x", "y"]}', [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
    (b'[[1, "x"], [2, "y"]]', [{"age": 1, "plan": "x"}, {"age": 2, "plan": "y"}]),
    (b'{"inputs": [{"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}', [{"a": 1}, {"a": 2}]),
    (b'{"inputs": [{"name": "v", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
     [{"v": [1, 2]}, {"v": [3, 4]}]),
    (b"not json", None), (b"", None), (b'"text"', None), (b'{"a": [1], "b": [1, 2]}', None),
    (b'[1, "x", {}]', None), (b"\xff\xfe", None),
])
def test_decode_accepts_every_row_shape_and_refuses_the_rest(body, expected):
    assert decode.decode(body, ["age", "plan"]) == expected


def test_decode_outputs_and_row_cap():
    assert decode.decode(b'{"outputs": [{"name": "p", "shape": [1], "datatype": "FP64", "data": [0.5]}]}',
                         v2_key="outputs") == [{"p": 0.5}]
    assert decode.decode(b"[0.1, 0.9]", ["p"]) == [{"p": 0.1}, {"p": 0.9}]
    many = json.dumps([{"a": i} for i in range(decode.MAX_ROWS_PER_BODY + 5)]).encode()
    assert len(decode.decode(many)) == decode.MAX_ROWS_PER_BODY


def test_reference_from_profile_kinds(profile):
    ref = reference.from_profile(profile)
    assert ref.source == "profile" and ref.rows == 300
    age, plan, note = ref.fields["age"], ref.fields["plan"], ref.fields["note"]
    assert age.kind == "numeric" and age.integer and age.values.size == 300 and not age.missing_allowed
    assert plan.kind == "categorical" and plan.complete and plan.categories == {"basic": 100, "pro": 100, "team": 100}
    assert note.kind == "text" and note.values.size == 300
    again = reference.Reference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert again.fields["age"].values.tolist() == age.values.tolist() and again.fields["plan"].complete


def test_reference_from_an_old_profile_uses_quantiles():
    col = {"name": "x", "type": "float", "count": 100, "missing": 0, "min": 0.0, "max": 10.0,
           "quantiles": {"p5": 0.5, "p25": 2.5, "p50": 5.0, "p75": 7.5, "p95": 9.5}}
    ref = reference.from_profile({"rows": 100, "columns": [col]})
    values = ref.fields["x"].values
    assert values.size == 1000 and values.min() >= 0 and values.max() <= 10
    assert np.median(values) == pytest.approx(5.0, abs=0.02)


def test_reference_from_rows_infers_kinds():
    rows = [{"n": i, "c": "ab"[i % 2], "t": f"title number {i}", "b": i % 2 == 0, "v": [1, 2]} for i in range(50)]
    ref = reference.from_rows(rows)
    kinds = {name: f.kind for name, f in ref.fields.items()}
    assert kinds == {"n": "numeric", "c": "categorical", "t": "text", "b": "categorical", "v": "other"}
    assert ref.fields["b"].categories == {"true": 25, "false": 25}
    assert ref.fields["n"].min == 0 and ref.fields["n"].max == 49


def test_row_checks_against_profile_and_signature(profile):
    ref = reference.from_profile(profile)
    assert check_row({"age": 30, "plan": "pro", "note": "x"}, ref, None) == []
    assert [(f.field, f.check) for f in check_row({"age": 30, "plan": "pro", "note": "x"}, ref, SIG)] == [
        ("note", "unexpected_field")]
    fails = check_row({"age": 130, "plan": "gold"}, ref, SIG)
    assert {(f.field, f.check) for f in fails} == {("age", "out_of_range"), ("plan", "unseen_category"),
                                                   ("note", "missing")}
    fails = check_row({"age": "thirty", "plan": 3, "extra": 1}, ref, SIG)
    assert {(f.field, f.check) for f in fails} >= {("age", "wrong_type"), ("plan", "wrong_type"),
                                                   ("extra", "unexpected_field")}
    assert len([f for f in fails if f.field == "age"]) == 1  # one failure per field and check
    fails = check_row({"plan": None, "age": 20, "note": "y"}, ref, None, status=500)
    assert {(f.field, f.check) for f in fails} == {("plan", "missing"), ("(response)", "error_status")}


def test_row_checks_never_range_check_a_window_reference():
    ref = reference.from_rows([{"x": 1.0}, {"x": 2.0}])
    assert check_row({"x": 100.0}, ref, None) == []


def test_hostile_values_are_reported_not_raised(profile):
    ref = reference.from_profile(profile)
    long = "z" * 10_000
    fails = check_row({"age": {"$gt": 1}, "plan": long, "note": ["a"]}, ref, SIG)
    plan = next(f for f in fails if f.field == "plan")
    assert plan.check == "unseen_category" and len(plan.detail) < 200
    assert any(f.field == "age" and f.check == "wrong_type" for f in fails)
