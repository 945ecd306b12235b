"""Contracts: signatures (fields, dtypes, shapes), request validation, V2 tensors, stage compatibility."""

from hydro_serving.contract.dtypes import canonical_dtype
from hydro_serving.contract.signature import ContractError, Field, Signature, shapes_compatible

__all__ = ["ContractError", "Field", "Signature", "canonical_dtype", "shapes_compatible"]
