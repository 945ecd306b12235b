"""Signatures: the named, typed, shaped fields a function takes and returns (Hydrosphere-style).

A field's ``shape`` describes the whole batch tensor; ``-1`` is a wildcard dimension and by
convention the first dimension is the batch. A JSON request may carry

* a list of records (``[{field: value, ...}, ...]``): each value is one row, shape ``shape[1:]``;
* one record (``{field: value}``) whose values are rows, or a columnar object whose values are
  whole tensors (``{field: [row, row, ...]}``) - told apart by rank;
* a 2-D list: rows of a single rank-2 input, or rows whose columns are the rank-1 inputs in order.

Validation raises :class:`ValidationError` whose ``field`` is a path such as ``[1].Title2``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydro_serving.contract.dtypes import canonical_dtype, is_widening, json_value_matches
from hydro_serving.errors import BadRequest, ValidationError

Shape = tuple[int, ...]
NULLABLE_DTYPES = ("float16", "float32", "float64")


class ContractError(BadRequest):
    """Two stages' signatures do not fit together, or a signature document is malformed."""

    code = "incompatible_signature"


@dataclass(frozen=True)
class Field:
    """One named input or output."""

    name: str
    dtype: str
    shape: Shape | None = None  # None: any shape
    profile: str | None = None  # hint for monitoring: numerical, categorical, text, ...
    description: str | None = None
    nullable: bool = False  # null is a missing value (NaN) for a model that takes them (float inputs only)

    @property
    def row_shape(self) -> Shape | None:
        """The shape of one record's value: the shape without its batch dimension."""
        if self.shape is None:
            return None
        return self.shape[1:] if self.shape else ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.profile:
            out["profile"] = self.profile
        if self.description:
            out["description"] = self.description
        if self.nullable:
            out["nullable"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Field:
        if not isinstance(data, Mapping):
            raise ContractError(f"{where} must be an object with name, dtype and shape", field=where)
        unknown = set(data) - {"name", "dtype", "type", "shape", "profile", "description", "nullable"}
        if unknown:
            key = sorted(unknown)[0]
            raise ContractError(f"unknown key '{key}' in {where}", field=f"{where}.{key}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ContractError(f"{where}.name must be a non-empty string", field=f"{where}.name")
        raw_dtype = data.get("dtype", data.get("type"))
        if raw_dtype is None:
            raise ContractError(f"{where}.dtype is required", field=f"{where}.dtype")
        dtype = canonical_dtype(raw_dtype, where=f"{where}.dtype")
        shape = _parse_shape(data.get("shape"), f"{where}.shape")
        profile = data.get("profile")
        if profile is not None and not isinstance(profile, str):
            raise ContractError(f"{where}.profile must be a string", field=f"{where}.profile")
        nullable = data.get("nullable", False)
        if not isinstance(nullable, bool):
            raise ContractError(f"{where}.nullable must be true or false", field=f"{where}.nullable")
        if nullable and dtype not in NULLABLE_DTYPES:
            raise ContractError(f"{where}.nullable: a missing value is NaN, which only a float input can hold "
                                f"({where} is {dtype})", field=f"{where}.nullable")
        return cls(name, dtype, shape, profile, data.get("description"), nullable)


def _parse_shape(raw: Any, where: str) -> Shape | None:
    if raw is None or raw == "any":
        return None
    if raw == "scalar":
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ContractError(f"{where} must be a list of integers (-1 for any size)", field=where)
    dims: list[int] = []
    for i, dim in enumerate(raw):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < -1 or dim == 0:
            raise ContractError(f"{where}[{i}] must be a positive integer or -1, got {dim!r}", field=where)
        dims.append(dim)
    return tuple(dims)


@dataclass(frozen=True)
class Signature:
    """Inputs and outputs of a function; both may be empty (nothing declared)."""

    inputs: tuple[Field, ...] = field(default_factory=tuple)
    outputs: tuple[Field, ...] = field(default_factory=tuple)

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, where: str = "signature") -> Signature:
        """Parse ``{inputs: [...], outputs: [...]}``; a mapping ``{name: {dtype, shape}}`` is accepted too."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ContractError(f"{where} must be an object with inputs and outputs", field=where)
        unknown = set(data) - {"inputs", "outputs", "name", "signature_name"}
        if unknown:
            key = sorted(unknown)[0]
            raise ContractError(f"unknown key '{key}' in {where}", field=f"{where}.{key}")
        return cls(
            inputs=_parse_fields(data.get("inputs"), f"{where}.inputs"),
            outputs=_parse_fields(data.get("outputs"), f"{where}.outputs"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [f.to_dict() for f in self.inputs],
            "outputs": [f.to_dict() for f in self.outputs],
        }

    @property
    def input_names(self) -> list[str]:
        return [f.name for f in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [f.name for f in self.outputs]

    def input(self, name: str) -> Field | None:
        return next((f for f in self.inputs if f.name == name), None)

    def output(self, name: str) -> Field | None:
        return next((f for f in self.outputs if f.name == name), None)

    # ---- validation of JSON requests ---------------------------------------------------------

    def validate_payload(self, payload: Any) -> None:
        """Check a JSON invoke body against the inputs; raise ValidationError naming the field."""
        if not self.inputs:
            return
        if isinstance(payload, Mapping):
            self._validate_object(payload)
        elif isinstance(payload, list):
            if not payload:
                raise ValidationError("the request holds no records", field="$")
            if all(isinstance(item, Mapping) for item in payload):
                for i, record in enumerate(payload):
                    self.validate_record(record, prefix=f"[{i}]")
            elif all(isinstance(item, list) for item in payload):
                self._validate_matrix(payload)
            else:
                raise ValidationError(
                    "the request must be a list of records (objects) or a 2-D list of rows", field="$"
                )
        else:
            raise ValidationError(
                f"the request must be a JSON object or list, got {type(payload).__name__}", field="$"
            )

    def validate_record(self, record: Mapping[str, Any], prefix: str = "") -> None:
        for fld in self.inputs:
            where = f"{prefix}.{fld.name}" if prefix else fld.name
            if fld.name not in record:
                raise ValidationError(f"missing field '{fld.name}'" + (f" in record {prefix}" if prefix else ""),
                                      field=where)
            _check_value(record[fld.name], fld.dtype, fld.row_shape, where, fld.nullable)

    def _validate_object(self, payload: Mapping[str, Any]) -> None:
        missing = [f.name for f in self.inputs if f.name not in payload]
        if missing:
            raise ValidationError(f"missing field '{missing[0]}'", field=missing[0])
        for fld in self.inputs:
            value = payload[fld.name]
            row_rank = len(fld.row_shape) if fld.row_shape is not None else None
            if row_rank is not None and _rank(value) > row_rank:
                _check_value(value, fld.dtype, fld.shape, fld.name, fld.nullable)  # columnar: a whole tensor
            else:
                _check_value(value, fld.dtype, fld.row_shape, fld.name, fld.nullable)

    def _validate_matrix(self, rows: list[list[Any]]) -> None:
        if len(self.inputs) == 1 and self.inputs[0].shape is not None and len(self.inputs[0].shape) == 2:
            fld = self.inputs[0]
            _check_value(rows, fld.dtype, fld.shape, fld.name, fld.nullable)
            return
        width = len(self.inputs)
        for i, row in enumerate(rows):
            if len(row) != width:
                raise ValidationError(
                    f"row {i} has {len(row)} values but the signature has {width} inputs "
                    f"({', '.join(self.input_names)})",
                    field=f"[{i}]",
                )
            for fld, value in zip(self.inputs, row, strict=True):
                _check_value(value, fld.dtype, fld.row_shape, f"[{i}].{fld.name}", fld.nullable)

    # ---- compatibility between stages --------------------------------------------------------

    def check_feeds(self, downstream: Signature, upstream_name: str, downstream_name: str) -> None:
        """Raise ContractError unless this signature's outputs satisfy ``downstream``'s inputs."""
        if not self.outputs or not downstream.inputs:
            return
        for want in downstream.inputs:
            have = self.output(want.name)
            where = f"{upstream_name} -> {downstream_name}"
            if have is None:
                raise ContractError(
                    f"stage '{downstream_name}' needs input '{want.name}' but stage '{upstream_name}' "
                    f"outputs only {', '.join(self.output_names)}",
                    field=want.name, stage=downstream_name, details={"between": where},
                )
            if not (have.dtype == want.dtype or is_widening(have.dtype, want.dtype)):
                raise ContractError(
                    f"field '{want.name}': stage '{upstream_name}' outputs {have.dtype} but stage "
                    f"'{downstream_name}' takes {want.dtype}",
                    field=want.name, stage=downstream_name, details={"between": where},
                )
            if not shapes_compatible(have.shape, want.shape):
                raise ContractError(
                    f"field '{want.name}': stage '{upstream_name}' outputs shape {_fmt(have.shape)} but "
                    f"stage '{downstream_name}' takes shape {_fmt(want.shape)}",
                    field=want.name, stage=downstream_name, details={"between": where},
                )


def _parse_fields(raw: Any, where: str) -> tuple[Field, ...]:
    if raw is None:
        return ()
    if isinstance(raw, Mapping):  # {name: {dtype, shape}}
        items = []
        for name, spec in raw.items():
            spec = dict(spec) if isinstance(spec, Mapping) else {"dtype": spec}
            spec.setdefault("name", name)
            items.append(spec)
        raw = items
    if not isinstance(raw, list):
        raise ContractError(f"{where} must be a list of fields", field=where)
    fields = tuple(Field.from_dict(item, f"{where}[{i}]") for i, item in enumerate(raw))
    names = [f.name for f in fields]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ContractError(f"{where} declares '{sorted(dupes)[0]}' twice", field=where)
    return fields


def shapes_compatible(have: Shape | None, want: Shape | None) -> bool:
    """Same rank and every dimension equal or a wildcard (-1); an undeclared shape fits anything."""
    if have is None or want is None:
        return True
    if len(have) != len(want):
        return False
    return all(a == b or a == -1 or b == -1 for a, b in zip(have, want, strict=True))


def _fmt(shape: Shape | None) -> str:
    return "any" if shape is None else str(list(shape))


def _rank(value: Any) -> int:
    rank = 0
    while isinstance(value, list):
        rank += 1
        if not value:
            break
        value = value[0]
    return rank


def _check_value(value: Any, dtype: str, shape: Shape | None, where: str, nullable: bool = False) -> None:
    """Check a nested JSON list against a dtype and a shape (``-1`` any size, None any shape).

    ``null`` is a missing value only where the field is declared ``nullable: true``.
    """
    if shape is not None:
        _check_shape(value, shape, where)
    for path, leaf in _leaves(value, where):
        if leaf is None:
            if nullable:
                continue
            raise ValidationError(f"{path} is null: a missing value is accepted only for inputs the signature "
                                  f"declares nullable: true (this one is {dtype})", field=path)
        if not json_value_matches(leaf, dtype):
            raise ValidationError(
                f"{path} must be {dtype}, got {type(leaf).__name__} {_short(leaf)}", field=path
            )


def _check_shape(value: Any, shape: Shape, where: str) -> None:
    if not shape:
        if isinstance(value, list):
            raise ValidationError(f"{where} must be a single value, got a list", field=where)
        return
    if not isinstance(value, list):
        raise ValidationError(f"{where} must be a list (shape {list(shape)}), got {type(value).__name__}",
                              field=where)
    if shape[0] != -1 and len(value) != shape[0]:
        raise ValidationError(
            f"{where} must have {shape[0]} elements (shape {list(shape)}), got {len(value)}", field=where
        )
    for i, item in enumerate(value):
        _check_shape(item, shape[1:], f"{where}[{i}]")


def _leaves(value: Any, where: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{where}[{i}]")
    else:
        yield where, value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
