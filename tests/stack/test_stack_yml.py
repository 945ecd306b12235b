"""stack.yml parsing: every validation rule has a test that checks the key path it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydro_serving.errors import StackError
from hydro_serving.stack import FunctionSpec, load_stack, parse_duration, parse_stack, substitute

GOOD = """\
version: 1.0
provider:
  name: hydro
  gateway: ${GATEWAY:-http://127.0.0.1:8080}
functions:
  pm-features:
    lang: python3
    handler: ./functions/pm-features
    environment: {LOG_LEVEL: info, WORKERS: 2, DEBUG: false}
    labels: {team: search}
    signature:
      inputs:
        - {name: Title1, dtype: string, shape: [-1]}
      outputs:
        - {name: jaccard, dtype: double, shape: [-1]}
  pm-classifier:
    lang: sklearn
    model: pm-classifier:production
    scale: {min: 1, max: 3, idle: 5m, concurrency: 4}
    timeout: 2s
    batching: {max_batch_size: 32, max_batch_delay_ms: 3}
    options: {method: predict_proba}
  pm-gb:
    lang: onnx
    model: ./models/gb.onnx
    limits: {memory: 256Mi, cpu: "0.5"}
  product-matching:
    lang: router
    chain:
      - pm-features
      - variants: {pm-classifier: 90, pm-gb: 10}
        shadow: [pm-gb]
"""


def parse(text: str, **env: str):
    return parse_stack(text, "stack.yml", env=env)


def error_of(text: str, **env: str) -> StackError:
    with pytest.raises(StackError) as info:
        parse(text, **env)
    return info.value


def test_good_stack_is_typed() -> None:
    stack = parse(GOOD)
    assert stack.provider.gateway == "http://127.0.0.1:8080"
    assert list(stack.functions) == ["pm-features", "pm-classifier", "pm-gb", "product-matching"]
    clf = stack.functions["pm-classifier"]
    assert (clf.scale.min, clf.scale.max, clf.scale.idle, clf.scale.concurrency) == (1, 3, 300.0, 4)
    assert clf.timeout == 2.0
    assert clf.batching.enabled and clf.batching.max_batch_size == 32
    assert not clf.model_is_local and stack.functions["pm-gb"].model_is_local
    feats = stack.functions["pm-features"]
    assert feats.environment == {"LOG_LEVEL": "info", "WORKERS": "2", "DEBUG": "false"}
    assert feats.signature is not None and feats.signature.outputs[0].dtype == "float64"
    router = stack.functions["product-matching"]
    assert router.is_router
    assert router.chain[1].variants == (("pm-classifier", 90), ("pm-gb", 10))
    assert router.chain[1].shadow == ("pm-gb",)


def test_canonical_json_round_trips() -> None:
    for spec in parse(GOOD).functions.values():
        again = FunctionSpec.from_dict(spec.to_dict())
        assert again == spec


def test_resolved_paths_are_absolute(tmp_path: Path) -> None:
    spec = parse(GOOD).functions["pm-gb"].resolved(tmp_path)
    assert spec.model == str(tmp_path / "models" / "gb.onnx")
    assert parse(GOOD).functions["pm-classifier"].resolved(tmp_path).model == "pm-classifier:production"


def test_load_stack_from_file(tmp_path: Path) -> None:
    (tmp_path / "stack.yml").write_text(GOOD)
    assert load_stack(tmp_path / "stack.yml", env={}).root == tmp_path


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no stack file"):
        load_stack(tmp_path / "nope.yml")


# ---- variable substitution -------------------------------------------------------------------


def test_substitution_uses_environment_and_defaults() -> None:
    assert substitute("a: ${X}", {"X": "1"}) == "a: 1"
    assert substitute("a: ${X:-d}", {}) == "a: d"
    assert substitute("a: ${X:-d}", {"X": ""}) == "a: d"
    assert substitute("a: ${X-d}", {"X": ""}) == "a: "
    assert substitute("cost: $$5", {}) == "cost: $5"


def test_unset_variable_without_default_is_an_error_with_line() -> None:
    err = error_of("functions:\n  a:\n    lang: python3\n    image: ${REGISTRY}/a\n")
    assert "REGISTRY" in err.message and "line 4" in err.message


# ---- schema rules: each names the key path and the line ------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "line"),
    [
        ("functions:\n  a:\n    lang: python3\n    scael: {min: 1}\n", "functions.a.scael", 4),
        ("functions:\n  a:\n    lang: python3\n    scale:\n      min: -1\n", "functions.a.scale.min", 5),
        ("functions:\n  a:\n    lang: python3\n    scale:\n      max: 0\n", "functions.a.scale.max", 5),
        ("functions:\n  a:\n    lang: python3\n    scale:\n      idle: soon\n", "functions.a.scale.idle", 5),
        ("functions:\n  a:\n    lang: python3\n    skip_build: yes please\n", "functions.a.skip_build", 4),
        ("functions:\n  a:\n    handler: ./a\n", "functions.a", 2),
        ("functions:\n  a:\n    lang: python3\n    environment:\n      A: [1]\n", "functions.a.environment.A", 5),
        ("functions:\n  a:\n    lang: python3\n    secrets: s3-creds\n", "functions.a.secrets", 4),
        ("functions:\n  a:\n    lang: python3\n    limits: {gpu: 1}\n", "functions.a.limits.gpu", 4),
        ("provider:\n  name: lambda\nfunctions:\n  a: {lang: python3}\n", "provider.name", 2),
        ("functions: {}\n", "functions", 1),
        ("version: 1.0\n", "(top level)", None),
        ("surprise: 1\nfunctions:\n  a: {lang: python3}\n", "surprise", 1),
        ("functions:\n  a:\n    lang: python3\n    signature:\n      inputs:\n        - {name: x}\n",
         "functions.a.signature.inputs[0]", 6),
        ("functions:\n  a:\n    lang: python3\n    signature:\n      inputs:\n        - {name: x, dtype: flot}\n",
         "functions.a.signature.inputs[0].dtype", 6),
    ],
)
def test_schema_errors_name_path_and_line(text: str, path: str, line: int | None) -> None:
    err = error_of(text)
    assert err.field == path, err.message
    assert path in err.message
    if line is not None:
        assert f"(line {line})" in err.message
        assert err.details["line"] == line


def test_scale_max_below_min() -> None:
    err = error_of("functions:\n  a:\n    lang: python3\n    scale: {min: 3, max: 2}\n")
    assert err.field == "functions.a.scale.max"


@pytest.mark.parametrize("name", ["Bad_Name", "-lead", "trail-", "a" * 64, "dots.in.name"])
def test_function_names_must_be_dns_labels(name: str) -> None:
    err = error_of(f"functions:\n  {name}:\n    lang: python3\n")
    assert err.field == f"functions.{name}" and "DNS label" in err.message


def test_invalid_yaml_names_the_line() -> None:
    err = error_of("functions:\n  a:\n    lang: [python3\n")
    assert "not valid YAML" in err.message and "line" in err.message


def test_empty_file() -> None:
    assert "empty" in error_of("").message


# ---- router chains ----------------------------------------------------------------------------


ROUTER = "functions:\n  a: {lang: python3}\n  b: {lang: python3}\n  r:\n    lang: router\n    chain:\n"


def test_variant_weights_must_sum_to_100() -> None:
    err = error_of(ROUTER + "      - variants: {a: 50, b: 40}\n")
    assert err.field == "functions.r.chain[0].variants" and "sum to 90" in err.message


def test_chain_names_unknown_function() -> None:
    err = error_of(ROUTER + "      - a\n      - ghost\n")
    assert err.field == "functions.r.chain[1]" and "ghost" in err.message


def test_shadow_names_unknown_function() -> None:
    err = error_of(ROUTER + "      - function: a\n        shadow: [ghost]\n")
    assert "ghost" in err.message


def test_router_cannot_call_itself() -> None:
    err = error_of(ROUTER + "      - r\n")
    assert "itself" in err.message


def test_router_needs_chain_and_chain_needs_router() -> None:
    assert error_of("functions:\n  r: {lang: router}\n").field == "functions.r.lang"
    assert error_of("functions:\n  a: {lang: python3, chain: [b]}\n  b: {lang: python3}\n").field == \
        "functions.a.chain"


def test_stage_object_with_unknown_key() -> None:
    err = error_of(ROUTER + "      - {function: a, retries: 3}\n")
    assert err.field.startswith("functions.r.chain[0]")


# ---- function JSON as the gateway receives it ------------------------------------------------------


def test_function_from_dict_names_bad_field() -> None:
    with pytest.raises(StackError) as info:
        FunctionSpec.from_dict({"name": "a", "lang": "python3", "scale": {"min": "zero"}})
    assert info.value.field == "scale.min"
    with pytest.raises(StackError) as info:
        FunctionSpec.from_dict({"lang": "python3"})
    assert info.value.field == "name"
    with pytest.raises(StackError):
        FunctionSpec.from_dict(["not", "an", "object"])


@pytest.mark.parametrize(("raw", "seconds"), [(300, 300.0), ("30s", 30.0), ("5m", 300.0), ("250ms", 0.25),
                                              ("1h", 3600.0), ("1.5", 1.5)])
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize(("field", "text"), [
    ("signature.inputs[1].nullable", "{name: b, dtype: string, shape: [-1], nullable: true}"),
    ("signature.inputs[1].nullable", "{name: b, dtype: float64, shape: [-1], nullable: 1}"),
])
def test_a_signature_error_names_its_path_once(field: str, text: str) -> None:
    """The stack error puts the full key path first; the contract's own path is not repeated after it."""
    err = error_of("functions:\n  iris:\n    lang: sklearn\n    model: iris:1\n    signature:\n      inputs:\n"
                   f"        - {{name: a, dtype: float64, shape: [-1]}}\n        - {text}\n")
    assert err.field == f"functions.iris.{field}"
    assert err.message.startswith(f"functions.iris.{field}: ") and err.message.count(f"{field}") == 1, err.message
