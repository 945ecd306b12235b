"""Read a signature file (YAML or JSON) into a Signature, including Hydrosphere-style contracts.

Accepted shapes: ``{inputs, outputs}``; ``{signature: {...}}``; a Hydrosphere ``serving.yaml``
or contract with ``contract: {name, inputs: {x: {shape, type, profile}}, outputs}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hydro_serving.contract import Signature
from hydro_serving.errors import HydroError, ValidationError


def signature_from_data(data: Any, where: str = "signature") -> Signature:
    """A Signature from parsed YAML/JSON in any accepted shape; ValidationError naming the fault."""
    if isinstance(data, Signature):
        return data
    if isinstance(data, Mapping):
        if "contract" in data and isinstance(data["contract"], Mapping):
            data = data["contract"]
        elif "signature" in data and isinstance(data["signature"], Mapping):
            data = data["signature"]
        if "inputs" not in data and "outputs" not in data:
            raise ValidationError(f"{where} declares neither inputs nor outputs", field=where)
        data = {k: v for k, v in data.items() if k in ("inputs", "outputs", "name", "signature_name")}
    try:
        return Signature.from_dict(data, where=where)
    except HydroError as exc:
        raise ValidationError(f"bad signature: {exc.message}", field=exc.field or where) from exc


def load_signature_file(path: str | Path) -> Signature:
    """Parse a signature file; a missing, unreadable or malformed file is a ValidationError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ValidationError(f"signature file {path} does not exist", field="signature") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read signature file {path}: {exc}", field="signature") from exc
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValidationError(f"signature file {path} is not valid YAML or JSON{line}", field="signature") from exc
    if not isinstance(data, Mapping):
        raise ValidationError(f"signature file {path} must hold an object with inputs and outputs",
                              field="signature")
    return signature_from_data(data, where=f"signature ({path.name})")
