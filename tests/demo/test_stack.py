"""The repository's stack.yml declares the product-matching pipeline the demo deploys."""

from __future__ import annotations

from pathlib import Path

from hydro_serving.demo.paths import load_features
from hydro_serving.demo.training import classifier_signature
from hydro_serving.stack import load_stack

STACK = Path(__file__).resolve().parents[2] / "stack.yml"


def test_stack_parses_and_declares_the_pipeline() -> None:
    stack = load_stack(STACK, env={})
    assert list(stack.functions) == ["pm-features", "pm-classifier", "pm-classifier-gb", "product-matching"]
    assert stack.provider.gateway == "http://127.0.0.1:8080"
    feats, forest, boosted, router = (stack.functions[n] for n in stack.functions)
    assert (feats.lang, feats.handler) == ("python3", "./functions/pm-features")
    assert (forest.lang, forest.model) == ("sklearn", "pm-classifier:latest")
    assert forest.options == {"method": "predict_proba", "outputs": {"match": "label", "probability": "proba:1"}}
    assert (boosted.lang, boosted.model) == ("onnx", "pm-classifier-gb:latest")
    assert boosted.options == {"outputs": {"match": "label", "probability": "probabilities:1"}}
    assert router.is_router
    assert [s.variants for s in router.chain] == [(("pm-features", 100),),
                                                  (("pm-classifier", 90), ("pm-classifier-gb", 10))]
    assert (feats.resolved(stack.root).handler or "").endswith("functions/pm-features")
    assert Path(feats.resolved(stack.root).handler or "", "handler.py").is_file()


def test_signatures_chain_and_match_the_feature_code() -> None:
    stack = load_stack(STACK, env={})
    names = list(load_features().FEATURE_NAMES)
    feats, forest, boosted = (stack.functions[n] for n in ("pm-features", "pm-classifier", "pm-classifier-gb"))
    assert feats.signature is not None and forest.signature is not None and boosted.signature is not None
    assert feats.signature.input_names == ["Title1", "ItemSpecifics1", "Title2", "ItemSpecifics2"]
    assert feats.signature.output_names == names
    assert forest.signature == boosted.signature
    assert forest.signature.to_dict()["inputs"] == [
        {k: v for k, v in f.items() if k != "profile"} for f in classifier_signature(tuple(names))["inputs"]]
    feats.signature.check_feeds(forest.signature, "pm-features", "pm-classifier")  # raises if not
    assert forest.signature.output_names == ["match", "probability"]


def test_gateway_address_comes_from_the_environment() -> None:
    stack = load_stack(STACK, env={"HYDRO_GATEWAY": "http://127.0.0.1:9999"})
    assert stack.provider.gateway == "http://127.0.0.1:9999"


def test_the_shipped_request_is_the_original_byte_for_byte(seed_body: bytes) -> None:
    shared = STACK.parents[1] / "shared" / "seed-demo" / "product-matching-request.json"
    assert seed_body.startswith(b'[{"Title1": "Apple iPhone 5 - 32GB')
    assert b"'Screen Size': ' 4''; " in seed_body
    if shared.is_file():  # the seed the project started from, when this checkout sits beside it
        assert shared.read_bytes() == seed_body
