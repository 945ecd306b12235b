"""pm-features: parsing the original ItemSpecifics format and the features the classifiers read."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hydro_serving.demo.paths import load_features
from hydro_serving.errors import ValidationError

HANDLER = Path(__file__).resolve().parents[2] / "functions" / "pm-features" / "handler.py"


@pytest.fixture(scope="module")
def handler() -> ModuleType:
    """handler.py loaded by path, as the python3 runtime template loads a function's handler."""
    spec = importlib.util.spec_from_file_location("pm_features_handler_under_test", HANDLER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def features() -> ModuleType:
    return load_features()


def test_parses_the_seed_specifics_with_odd_quotes(features: ModuleType, seed_pairs: list[dict[str, Any]]) -> None:
    spec = features.parse_specifics(seed_pairs[0]["ItemSpecifics1"])
    assert spec["Brand"] == "Apple"
    assert spec["Model"] == "iPhone 5"
    assert spec["Storage Capacity"] == "32GB"
    assert spec["Screen Size"] == "4'"  # the seller's 4'' (inches) keeps its inch mark
    assert spec["UPC"] == "492550400162"
    assert len(spec) == 13
    pump = features.parse_specifics(seed_pairs[0]["ItemSpecifics2"])
    assert pump == {"Brand": "Unbranded", "EAN": "4894462250013", "MPN": "Does not apply",
                    "ISBN": "4894462250013", "UPC": "4894462250013", "Designer/Brand": "Unbranded"}


def test_iphone_against_pump_is_dissimilar_and_against_itself_identical(
        handler: ModuleType, seed_pairs: list[dict[str, Any]]) -> None:
    different, same = handler.handle(seed_pairs)
    assert different["title_jaccard"] == 0.0
    assert different["title_char_cosine"] < 0.3
    assert different["brand_match"] == 0.0  # Apple is nowhere in the pump's title; Unbranded is unknown
    assert different["code_match"] == 0.0  # both carry codes and none is shared
    assert same["title_jaccard"] == 1.0 and same["title_char_cosine"] == pytest.approx(1.0)
    for name in ("brand_match", "model_match", "code_match", "storage_match", "color_match", "size_match",
                 "spec_value_agreement"):
        assert same[name] == 1.0, name


def test_records_carry_every_feature_in_order(handler: ModuleType, features: ModuleType,
                                              seed_pairs: list[dict[str, Any]]) -> None:
    out = handler.handle(seed_pairs)
    assert [list(r) for r in out] == [list(features.FEATURE_NAMES)] * 2
    assert all(isinstance(v, float) for r in out for v in r.values())


def test_a_single_pair_and_a_columnar_request_are_accepted(handler: ModuleType,
                                                           seed_pairs: list[dict[str, Any]]) -> None:
    one = handler.handle(seed_pairs[1])
    columnar = handler.handle({k: [p[k] for p in seed_pairs] for k in seed_pairs[0]})
    assert one == handler.handle([seed_pairs[1]])
    assert columnar == handler.handle(seed_pairs)


def test_storage_and_colour_siblings_disagree(features: ModuleType) -> None:
    a = features.pair_features("Apple iPhone 7 - 32GB - Jet Black (AT&T)", "'Color': ' Jet Black'",
                               "Apple iPhone 7 128 GB Silver", "'Storage Capacity': ' 128GB'; 'Colour': ' Silver'")
    assert a["storage_match"] == 0.0
    assert a["color_match"] == 0.0
    assert a["model_match"] == -1.0  # neither listing names its model in the specifics
    b = features.pair_features('Samsung 55" Class TU7000 UN55TU7000FXZA', "'MPN': ' UN55TU7000FXZA'",
                               "Samsung TU7000 Crystal UHD 65 inch", "'MPN': ' UN65TU7000FXZA'; 'Screen Size': ' 65'''")
    assert b["mpn_match"] == 0.0
    assert b["size_match"] == 0.0


def test_upc_and_ean_of_one_product_agree(features: ModuleType) -> None:
    f = features.pair_features("Keurig K50", "'UPC': ' 611247373064'", "Keurig K-Classic", "'EAN': ' 0611247373064'")
    assert f["code_match"] == 1.0


@pytest.mark.parametrize("garbled", [
    "",
    "'Brand': ' Apple'; 'Model': ' iPh",  # cut mid-way
    "Brand: Apple; Model: iPhone 5; Color: Silver",  # no quotes
    "'Brand' ' Apple' 'Model'",  # no colons at all
    ";;;: ; '':''; 'Color':",  # nothing but separators
    "'Screen Size': ' 4''; 'Brand': ' Apple'",
    "\u00e9\u00e8 'Marque': ' Apple \u2122'; \x00",
])
def test_garbled_specifics_never_fail(features: ModuleType, garbled: str) -> None:
    clean = "'Brand': ' Apple'; 'Model': ' iPhone 5'; 'Color': ' Silver'"
    f = features.pair_features("Apple iPhone 5 32GB Silver", garbled, "Apple iPhone 5 - 32GB - Silver", clean)
    assert list(f) == list(features.FEATURE_NAMES)
    assert all(-1.0 <= v <= 1.0 for v in f.values())
    assert f["title_jaccard"] > 0.5


def test_unquoted_specifics_still_count(features: ModuleType) -> None:
    spec = features.parse_specifics("Brand: Apple; Model: iPhone 5; Color: Silver")
    assert spec == {"Brand": "Apple", "Model": "iPhone 5", "Color": "Silver"}


def test_missing_keys_are_unknown_not_disagreement(features: ModuleType) -> None:
    f = features.pair_features("Lodge Cast Iron Skillet", None, "Lodge Pre-Seasoned Skillet", "")
    assert f["code_match"] == f["mpn_match"] == f["model_match"] == f["brand_match"] == -1.0
    assert f["spec_char_cosine"] == f["spec_value_agreement"] == -1.0


@pytest.mark.parametrize(("payload", "field"), [
    ([{"Title1": "a", "ItemSpecifics1": "", "Title2": "b"}], "[0].ItemSpecifics2"),
    ([{"Title1": "a", "ItemSpecifics1": "", "Title2": "b", "ItemSpecifics2": ""}, {"Title1": "a"}],
     "[1].ItemSpecifics1"),
    ({"ItemSpecifics1": "", "Title2": "b", "ItemSpecifics2": ""}, "Title1"),
    ([{"Title1": 5, "ItemSpecifics1": "", "Title2": "b", "ItemSpecifics2": ""}], "[0].Title1"),
    ([{"Title1": "a", "ItemSpecifics1": ["x"], "Title2": "b", "ItemSpecifics2": ""}], "[0].ItemSpecifics1"),
    ({"Title1": ["a"], "ItemSpecifics1": [""], "Title2": ["b"]}, "ItemSpecifics2"),
    ([], "$"),
    (["just a string"], "[0]"),
    ("a string", "$"),
])
def test_bad_requests_name_the_field(handler: ModuleType, payload: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        handler.handle(payload)
    assert info.value.field == field
    assert info.value.status == 400
    assert field.split(".")[-1].strip("[]$") in info.value.message or field in ("$", "[0]")
