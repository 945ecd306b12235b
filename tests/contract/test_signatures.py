"""Signatures: request validation names the field; stage compatibility names both stages."""

from __future__ import annotations

import numpy as np
import pytest

from hydro_serving.contract import ContractError, Signature, canonical_dtype
from hydro_serving.contract.v2 import inputs_to_numpy, numpy_to_tensor, parse_infer_request
from hydro_serving.errors import ValidationError

PAIRS = Signature.from_dict({
    "inputs": [{"name": n, "dtype": "string", "shape": [-1]} for n in ("Title1", "Title2")],
    "outputs": [{"name": "jaccard", "dtype": "float64", "shape": [-1]},
                {"name": "same_brand", "dtype": "int64", "shape": [-1]}],
})
IRIS = Signature.from_dict({"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}]})


def field_of(sig: Signature, payload: object) -> str:
    with pytest.raises(ValidationError) as info:
        sig.validate_payload(payload)
    return info.value.field


def test_records_are_checked_per_field() -> None:
    PAIRS.validate_payload([{"Title1": "a", "Title2": "b", "extra": 1}])
    assert field_of(PAIRS, [{"Title1": "a", "Title2": "b"}, {"Title1": "a"}]) == "[1].Title2"
    assert field_of(PAIRS, [{"Title1": "a", "Title2": 3}]) == "[0].Title2"
    assert field_of(PAIRS, []) == "$"
    assert field_of(PAIRS, "text") == "$"
    assert field_of(PAIRS, [1, {"Title1": "a"}]) == "$"


def test_single_record_and_columns() -> None:
    PAIRS.validate_payload({"Title1": "a", "Title2": "b"})
    PAIRS.validate_payload({"Title1": ["a", "c"], "Title2": ["b", "d"]})
    assert field_of(PAIRS, {"Title1": "a"}) == "Title2"
    assert field_of(PAIRS, {"Title1": ["a", 2], "Title2": ["b", "d"]}) == "Title1[1]"


def test_matrix_against_rank_two_input() -> None:
    IRIS.validate_payload([[5.1, 3.5, 1.4, 0.2], [6, 3, 4, 1]])
    assert field_of(IRIS, [[5.1, 3.5, 1.4]]) == "x[0]"
    assert field_of(IRIS, [[5.1, 3.5, 1.4, "wide"]]) == "x[0][3]"
    assert field_of(IRIS, [[5.1, 3.5, 1.4, True]]) == "x[0][3]"


def test_matrix_against_scalar_inputs() -> None:
    PAIRS.validate_payload([["a", "b"]])
    assert field_of(PAIRS, [["a"]]) == "[0]"


def test_dtype_spellings() -> None:
    assert canonical_dtype("DT_DOUBLE") == "float64"
    assert canonical_dtype("FP32") == "float32"
    assert canonical_dtype("str") == "string"
    with pytest.raises(ValidationError):
        canonical_dtype("complex256")


def test_bad_signature_documents() -> None:
    for bad, field in [({"inputs": [{"name": "x"}]}, "signature.inputs[0].dtype"),
                       ({"inputs": [{"name": "x", "dtype": "float", "shape": [0]}]}, "signature.inputs[0].shape"),
                       ({"inputs": "x"}, "signature.inputs"),
                       ({"inputz": []}, "signature.inputz"),
                       ({"inputs": [{"name": "x", "dtype": "int"}, {"name": "x", "dtype": "int"}]},
                        "signature.inputs")]:
        with pytest.raises(ContractError) as info:
            Signature.from_dict(bad)
        assert info.value.field == field


def test_stage_compatibility() -> None:
    clf = Signature.from_dict({"inputs": [{"name": "jaccard", "dtype": "float64", "shape": [-1]},
                                          {"name": "same_brand", "dtype": "float64", "shape": [-1]}]})
    PAIRS.check_feeds(clf, "features", "classifier")  # int64 widens to float64
    narrow = Signature.from_dict({"inputs": [{"name": "same_brand", "dtype": "int32", "shape": [-1]}]})
    with pytest.raises(ContractError) as info:
        PAIRS.check_feeds(narrow, "features", "classifier")
    assert info.value.field == "same_brand" and "features" in info.value.message
    missing = Signature.from_dict({"inputs": [{"name": "cosine", "dtype": "float64"}]})
    with pytest.raises(ContractError, match="'classifier' needs input 'cosine'"):
        PAIRS.check_feeds(missing, "features", "classifier")
    wide = Signature.from_dict({"inputs": [{"name": "jaccard", "dtype": "float64", "shape": [-1, 2]}]})
    with pytest.raises(ContractError, match="shape"):
        PAIRS.check_feeds(wide, "features", "classifier")


def test_v2_tensors_round_trip_and_errors() -> None:
    request_id, _, inputs = parse_infer_request(
        {"id": "r1", "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}]})
    arrays = inputs_to_numpy(inputs, IRIS)
    assert request_id == "r1" and arrays["x"].shape == (2, 4) and arrays["x"].dtype == np.float32
    out = numpy_to_tensor("predict", np.array([0, 2]))
    assert out == {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]}
    bad_cases = [
        ({"inputs": []}, "inputs"),
        ({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2]}]}, "inputs[0].data"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]},
         "inputs[0].datatype"),
        ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, "inputs[0].shape"),
        ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, "x"]}]},
         "inputs[0].data"),
        ({"inputs": [{"name": "x", "shape": "2", "datatype": "FP32", "data": [1]}]}, "inputs[0].shape"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "inputs[0].name"),
        ({"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, "id"),
    ]
    for body, field in bad_cases:
        with pytest.raises(ValidationError) as info:
            _, _, inputs = parse_infer_request(body)
            inputs_to_numpy(inputs, IRIS)
        assert info.value.field == field, body
