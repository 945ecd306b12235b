"""Open Inference Protocol (V2) tensors <-> numpy arrays, with validation that names the field.

A V2 tensor is ``{"name", "shape", "datatype", "data"}``; ``data`` may be flat (row-major) or
nested. Every check raises :class:`ValidationError` with ``field`` like ``inputs[0].shape``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hydro_serving.contract.dtypes import (
    from_numpy_dtype,
    from_v2_datatype,
    json_value_matches,
    numpy_dtype,
    to_v2_datatype,
)
from hydro_serving.contract.signature import NULLABLE_DTYPES, Field, Signature, shapes_compatible
from hydro_serving.errors import ValidationError


def parse_infer_request(body: Any) -> tuple[str | None, dict[str, Any], list[dict[str, Any]]]:
    """Validate the envelope of a V2 infer request: ``(id, parameters, inputs)``."""
    if not isinstance(body, Mapping):
        raise ValidationError("a V2 infer request must be a JSON object with 'inputs'", field="$")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ValidationError("'inputs' must be a non-empty list of tensors", field="inputs")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ValidationError("'id' must be a string", field="id")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise ValidationError("'parameters' must be an object", field="parameters")
    names = set()
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping):
            raise ValidationError(f"inputs[{i}] must be an object", field=f"inputs[{i}]")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise ValidationError(f"inputs[{i}].name must be a non-empty string", field=f"inputs[{i}].name")
        if name in names:
            raise ValidationError(f"input '{name}' is given twice", field=f"inputs[{i}].name")
        names.add(name)
    return request_id, dict(parameters), list(inputs)


def tensor_to_numpy(tensor: Mapping[str, Any], where: str, expected: Field | None = None) -> Any:
    """Turn one V2 tensor into a numpy array of its declared shape, checking it on the way."""
    import numpy as np

    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                               for d in shape):
        raise ValidationError(f"{where}.shape must be a list of non-negative integers", field=f"{where}.shape")
    dtype = from_v2_datatype(tensor.get("datatype"), where=f"{where}.datatype")
    if "data" not in tensor:
        raise ValidationError(f"{where}.data is required", field=f"{where}.data")
    flat = _flatten(tensor["data"])
    expected_len = math.prod(shape)
    if len(flat) != expected_len:
        raise ValidationError(
            f"{where}: shape {shape} needs {expected_len} values, data has {len(flat)}", field=f"{where}.data"
        )
    nullable = expected is not None and expected.nullable and dtype in NULLABLE_DTYPES
    for i, value in enumerate(flat):
        if value is None and nullable:  # a missing value (NaN) where the signature allows it
            continue
        if value is None:
            raise ValidationError(f"{where}.data[{i}] is null: a missing value is accepted only for inputs the "
                                  "signature declares nullable: true", field=f"{where}.data")
        if not json_value_matches(value, dtype):
            raise ValidationError(
                f"{where}.data[{i}] must be {dtype} ({to_v2_datatype(dtype)}), got {type(value).__name__}",
                field=f"{where}.data",
            )
    if expected is not None:
        if expected.dtype != dtype and not _numeric_pair(expected.dtype, dtype):
            raise ValidationError(
                f"{where}: '{expected.name}' takes {to_v2_datatype(expected.dtype)}, got {to_v2_datatype(dtype)}",
                field=f"{where}.datatype",
            )
        if not shapes_compatible(tuple(shape), expected.shape):
            raise ValidationError(
                f"{where}: '{expected.name}' takes shape {list(expected.shape or [])}, got {shape}",
                field=f"{where}.shape",
            )
        dtype = expected.dtype
    array = np.array(flat, dtype=numpy_dtype(dtype))
    return array.reshape(shape)


def inputs_to_numpy(inputs: list[Mapping[str, Any]], signature: Signature | None) -> dict[str, Any]:
    """All input tensors as ``{name: ndarray}``, checked against the signature when there is one."""
    arrays = {}
    for i, tensor in enumerate(inputs):
        expected = signature.input(tensor["name"]) if signature and signature.inputs else None
        arrays[tensor["name"]] = tensor_to_numpy(tensor, f"inputs[{i}]", expected)
    if signature and signature.inputs and len(signature.inputs) > 1:
        missing = [f.name for f in signature.inputs if f.name not in arrays]
        if missing and len(arrays) != 1:
            raise ValidationError(f"missing input tensor '{missing[0]}'", field="inputs")
    return arrays


def numpy_to_tensor(name: str, value: Any) -> dict[str, Any]:
    """A V2 output tensor from an array (or anything numpy can turn into one)."""
    import numpy as np

    array = np.asarray(value)
    dtype = from_numpy_dtype(array.dtype)
    data = array.reshape(-1).tolist()
    if dtype == "string":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in data]
    return {"name": name, "shape": list(array.shape), "datatype": to_v2_datatype(dtype), "data": data}


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _numeric_pair(want: str, have: str) -> bool:
    from hydro_serving.contract.dtypes import is_numeric

    return is_numeric(want) and is_numeric(have)
