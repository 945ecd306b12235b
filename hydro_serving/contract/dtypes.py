"""Data types: one canonical name per type, with the spellings users bring from elsewhere.

Canonical names are numpy's (``float64``, ``int32``, ``bool``) plus ``string`` and ``bytes``.
Hydrosphere (``DT_DOUBLE``), Open Inference Protocol V2 (``FP64``, ``BYTES``) and short forms
(``double``, ``float``, ``int``, ``str``) are accepted and normalised.
"""

from __future__ import annotations

from typing import Any

from hydro_serving.errors import ValidationError

CANONICAL = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "string", "bytes",
)

_ALIASES = {
    # short forms
    "boolean": "bool", "int": "int64", "integer": "int64", "long": "int64", "float": "float64",
    "double": "float64", "half": "float16", "str": "string", "text": "string", "object": "string",
    # Hydrosphere / TensorFlow
    "dt_bool": "bool", "dt_int8": "int8", "dt_int16": "int16", "dt_int32": "int32", "dt_int64": "int64",
    "dt_uint8": "uint8", "dt_uint16": "uint16", "dt_uint32": "uint32", "dt_uint64": "uint64",
    "dt_half": "float16", "dt_float": "float32", "dt_double": "float64", "dt_string": "string",
    # V2 / KServe
    "fp16": "float16", "fp32": "float32", "fp64": "float64",
}

_V2_NAMES = {
    "bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "string": "BYTES", "bytes": "BYTES",
}

_INTS = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOATS = {"float16", "float32", "float64"}

_INT_BITS = {"int8": 8, "int16": 16, "int32": 32, "int64": 64, "uint8": 8, "uint16": 16, "uint32": 32,
             "uint64": 64}
_FLOAT_BITS = {"float16": 16, "float32": 32, "float64": 64}


def canonical_dtype(raw: Any, where: str = "dtype") -> str:
    """Normalise a dtype spelling; raise ValidationError naming ``where`` for an unknown one."""
    if not isinstance(raw, str):
        raise ValidationError(f"{where} must be a string such as float64 or string", field=where)
    key = raw.strip().lower()
    if key in CANONICAL:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValidationError(
        f"{where}: unknown dtype '{raw}' (use one of {', '.join(CANONICAL)})", field=where
    )


def to_v2_datatype(dtype: str) -> str:
    return _V2_NAMES[canonical_dtype(dtype)]


def from_v2_datatype(datatype: Any, where: str = "datatype") -> str:
    """V2 ``datatype`` (``FP32``, ``BYTES``...) to a canonical dtype; BYTES becomes ``string``."""
    if not isinstance(datatype, str):
        raise ValidationError(f"{where} must be a V2 datatype such as FP32", field=where)
    upper = datatype.strip().upper()
    for canon, v2 in _V2_NAMES.items():
        if v2 == upper and canon != "bytes":
            return canon
    raise ValidationError(f"{where}: unknown V2 datatype '{datatype}'", field=where)


def is_integer(dtype: str) -> bool:
    return dtype in _INTS


def is_float(dtype: str) -> bool:
    return dtype in _FLOATS


def is_numeric(dtype: str) -> bool:
    return dtype in _INTS or dtype in _FLOATS


def is_widening(have: str, want: str) -> bool:
    """True when values of ``have`` can be passed where ``want`` is expected without loss."""
    if have == want:
        return True
    if have in _INTS and want in _FLOATS:
        return True
    if have in _FLOATS and want in _FLOATS:
        return _FLOAT_BITS[have] <= _FLOAT_BITS[want]
    if have in _INTS and want in _INTS:
        signed_ok = have.startswith("u") or not want.startswith("u")
        return signed_ok and _INT_BITS[have] <= _INT_BITS[want]
    if have == "bool" and (want in _INTS or want in _FLOATS):
        return True
    return {have, want} == {"string", "bytes"}


def json_value_matches(value: Any, dtype: str) -> bool:
    """Whether one JSON scalar may stand for ``dtype`` (ints for floats yes, bools for numbers no)."""
    if dtype in ("string", "bytes"):
        return isinstance(value, str)
    if dtype == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if dtype in _INTS:
        if isinstance(value, float) and value.is_integer():
            return True
        return isinstance(value, int) and (not dtype.startswith("u") or value >= 0)
    if dtype in _FLOATS:
        return isinstance(value, int | float)
    return False


def numpy_dtype(dtype: str) -> Any:
    """The numpy dtype for a canonical dtype (strings become ``object`` arrays)."""
    import numpy as np

    if dtype in ("string", "bytes"):
        return np.dtype(object)
    return np.dtype(dtype)


def from_numpy_dtype(np_dtype: Any) -> str:
    """Canonical dtype of a numpy dtype (object and unicode become ``string``)."""
    import numpy as np

    kind = np.dtype(np_dtype).kind
    if kind in ("U", "O", "S"):
        return "string"
    return np.dtype(np_dtype).name
