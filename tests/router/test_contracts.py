"""check_chain / first_stage_signature / resolve_stage_signatures over real parsed specs."""

from __future__ import annotations

import pytest

from hydro_serving.contract import ContractError, Signature
from hydro_serving.router.contracts import (
    check_chain,
    first_stage_signature,
    resolve_stage_signatures,
    signatures_from_options,
)
from hydro_serving.stack import FunctionSpec


def sig(inputs: dict[str, tuple[str, list[int] | None]], outputs: dict[str, tuple[str, list[int] | None]]
        ) -> Signature:
    def fields(spec: dict[str, tuple[str, list[int] | None]]) -> list[dict]:
        return [{"name": n, "dtype": d, **({"shape": s} if s is not None else {})} for n, (d, s) in spec.items()]

    return Signature.from_dict({"inputs": fields(inputs), "outputs": fields(outputs)})


FEATURES = sig({"Title1": ("string", [-1]), "Title2": ("string", [-1])},
               {"features": ("float64", [-1, 8])})
CLASSIFIER = sig({"features": ("float64", [-1, 8])}, {"match": ("bool", [-1]), "probability": ("float64", [-1])})
CLASSIFIER_GB = sig({"features": ("float64", [-1, 8])}, {"match": ("bool", [-1])})
NARROW = sig({"features": ("float64", [-1, 5])}, {"match": ("bool", [-1])})
WANTS_INT = sig({"features": ("int64", [-1, 8])}, {"match": ("bool", [-1])})
WANTS_OTHER = sig({"vector": ("float64", [-1, 8])}, {"match": ("bool", [-1])})


def router(chain: list) -> FunctionSpec:
    return FunctionSpec.from_dict({"name": "pm", "lang": "router", "chain": chain})


def lookup(table: dict[str, Signature | None]):
    return lambda fn: table.get(fn)


def test_compatible_chain_with_experiment_passes() -> None:
    spec = router(["feat", {"variants": {"clf": 90, "gb": 10}, "shadow": ["cand"]}])
    check_chain(spec, lookup({"feat": FEATURES, "clf": CLASSIFIER, "gb": CLASSIFIER_GB, "cand": CLASSIFIER}))


def test_missing_field_names_both_stages_and_field() -> None:
    spec = router(["feat", "other"])
    with pytest.raises(ContractError) as info:
        check_chain(spec, lookup({"feat": FEATURES, "other": WANTS_OTHER}))
    err = info.value
    assert err.status == 400
    assert err.field == "vector"
    assert err.stage == "other"
    assert err.function == "pm"
    assert "stage 1 (feat)" in err.message and "stage 2 (other)" in err.message
    assert err.to_dict()["details"]["between"] == "feat -> other"


def test_dtype_mismatch_is_refused() -> None:
    with pytest.raises(ContractError) as info:
        check_chain(router(["feat", "ints"]), lookup({"feat": FEATURES, "ints": WANTS_INT}))
    assert info.value.field == "features"
    assert "float64" in info.value.message and "int64" in info.value.message


def test_shape_mismatch_in_one_variant_is_refused() -> None:
    spec = router(["feat", {"variants": {"clf": 50, "narrow": 50}}])
    with pytest.raises(ContractError) as info:
        check_chain(spec, lookup({"feat": FEATURES, "clf": CLASSIFIER, "narrow": NARROW}))
    assert info.value.stage == "narrow"
    assert "shape" in info.value.message


def test_every_upstream_variant_is_checked() -> None:
    # stage 1 is an experiment; only its second variant lacks the output stage 2 needs
    spec = router([{"variants": {"feat": 50, "feat-bad": 50}}, "clf"])
    bad = sig({"Title1": ("string", [-1])}, {"other": ("float64", [-1])})
    with pytest.raises(ContractError) as info:
        check_chain(spec, lookup({"feat": FEATURES, "feat-bad": bad, "clf": CLASSIFIER}))
    assert info.value.to_dict()["details"]["from_function"] == "feat-bad"


def test_shadow_must_accept_the_stage_input() -> None:
    spec = router(["feat", {"function": "clf", "shadow": ["cand"]}])
    with pytest.raises(ContractError) as info:
        check_chain(spec, lookup({"feat": FEATURES, "clf": CLASSIFIER, "cand": WANTS_OTHER}))
    assert info.value.stage == "cand"


def test_unknown_signatures_fit_anything() -> None:
    # feat declares nothing, so feat -> clf cannot be checked; clf -> post has no declared post
    check_chain(router(["feat", "clf", "post"]), lookup({"feat": None, "clf": CLASSIFIER, "post": None}))
    check_chain(router(["feat", "other"]), lookup({"feat": None, "other": WANTS_OTHER}))


def test_first_stage_signature_is_union_of_variant_inputs() -> None:
    a = sig({"x": ("float64", [-1]), "y": ("float64", [-1])}, {})
    b = sig({"x": ("float64", [-1]), "z": ("string", [-1])}, {})
    got = first_stage_signature(router([{"variants": {"a": 90, "b": 10}}, "c"]), lookup({"a": a, "b": b}))
    assert got is not None
    assert got.input_names == ["x", "y", "z"]
    with pytest.raises(Exception) as info:
        got.validate_payload([{"x": 1.0, "y": 2.0}])
    assert getattr(info.value, "field", None) == "[0].z"


def test_first_stage_signature_conflicting_dtypes() -> None:
    a = sig({"x": ("float64", [-1])}, {})
    b = sig({"x": ("string", [-1])}, {})
    with pytest.raises(ContractError) as info:
        first_stage_signature(router([{"variants": {"a": 50, "b": 50}}]), lookup({"a": a, "b": b}))
    assert info.value.field == "x"


def test_first_stage_signature_none_when_undeclared() -> None:
    assert first_stage_signature(router(["a", "b"]), lookup({"b": CLASSIFIER})) is None


def test_resolve_stage_signatures_roundtrip_through_spec_options() -> None:
    spec = router(["feat", {"variants": {"clf": 90, "gb": 10}, "shadow": ["cand"]}])
    resolved = resolve_stage_signatures(spec, lookup({"feat": FEATURES, "clf": CLASSIFIER, "cand": CLASSIFIER}))
    assert set(resolved) == {"feat", "clf", "cand"}
    # the gateway writes it into the spec; the spec's canonical JSON must survive the round trip
    data = spec.to_dict()
    data["options"] = {"stage_signatures": resolved}
    again = FunctionSpec.from_dict(data)
    parsed = signatures_from_options(again.options, again.name)
    assert parsed["feat"] == FEATURES
    assert first_stage_signature(again, parsed.get) == Signature(inputs=FEATURES.inputs)


def test_signatures_from_options_rejects_garbage() -> None:
    with pytest.raises(ContractError) as info:
        signatures_from_options({"stage_signatures": ["nope"]}, "pm")
    assert info.value.field == "options.stage_signatures"
