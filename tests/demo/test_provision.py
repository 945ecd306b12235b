"""hydro demo's store step: train and upload when the store lacks the models, reuse them after."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydro_serving.demo.provision import check_answer, ensure_models, pipeline_name, with_store
from hydro_serving.demo.training import TrainResult
from hydro_serving.errors import ConfigError
from hydro_serving.stack import load_stack, parse_stack
from hydro_serving.store import open_store

STACK = Path(__file__).resolve().parents[2] / "stack.yml"


def _must_not_train(_out: Path) -> TrainResult:
    raise AssertionError("the models were in the store; nothing should have been trained")


def test_models_are_trained_once_then_reused(tmp_path: Path, trained: TrainResult) -> None:
    store = open_store(f"file://{tmp_path / 'store'}")
    stack = load_stack(STACK, env={})
    lines: list[str] = []
    first = ensure_models(store, stack, say=lines.append, train=lambda _out: trained)
    assert sorted(first.uploaded) == ["pm-classifier-gb:1", "pm-classifier:1"]
    assert first.reused == [] and lines  # it said it was training
    assert first.scores["pm-classifier"].accuracy >= 0.9
    manifest = store.get_manifest("pm-classifier:latest")
    assert manifest.framework == "sklearn"
    assert manifest.signature is not None and manifest.signature.output_names == ["match", "probability"]
    assert manifest.training_profile  # profiled from training-data.csv
    assert manifest.metadata["accuracy"] == first.scores["pm-classifier"].accuracy
    assert store.get_manifest("pm-classifier-gb").framework == "onnx"

    second = ensure_models(store, stack, train=_must_not_train)
    assert second.uploaded == [] and sorted(second.reused) == ["pm-classifier-gb:1", "pm-classifier:1"]
    assert second.scores == {}

    third = ensure_models(store, stack, retrain=True, train=lambda _out: trained)
    assert sorted(third.uploaded) == ["pm-classifier-gb:2", "pm-classifier:2"]


def test_store_url_goes_to_the_model_functions_only() -> None:
    stack = with_store(load_stack(STACK, env={}), "file:///somewhere/store")
    assert stack.functions["pm-classifier"].environment["HYDRO_STORE"] == "file:///somewhere/store"
    assert stack.functions["pm-classifier-gb"].environment["HYDRO_STORE"] == "file:///somewhere/store"
    assert "HYDRO_STORE" not in stack.functions["pm-features"].environment
    assert pipeline_name(stack) == "product-matching"


def test_a_stack_without_demo_models_is_refused(tmp_path: Path) -> None:
    stack = parse_stack("functions:\n  hello:\n    lang: python3\n    handler: ./hello\n", tmp_path / "stack.yml")
    with pytest.raises(ConfigError) as info:
        ensure_models(open_store(f"file://{tmp_path / 'store'}"), stack)
    assert info.value.field == "functions"


def test_answer_check() -> None:
    assert check_answer([{"match": False, "probability": 0.02}, {"match": True, "probability": 0.99}]) is None
    assert "no match then match" in (check_answer([{"match": True}, {"match": True}]) or "")
    assert "two records" in (check_answer({"error": "x"}) or "")
