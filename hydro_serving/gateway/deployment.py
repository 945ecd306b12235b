"""The deployment JSON of ``POST|PUT /system/functions``: OpenFaaS FunctionDeployment plus ``hydro``.

OpenFaaS fields keep the API familiar to its tools; ``hydro`` carries the full
:class:`FunctionSpec` (scale, model, signature, chain) that OpenFaaS has no words for. Every
mistake is a 400 whose ``field`` names the key, so a hand-written request is easy to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from hydro_serving.errors import StackError, ValidationError
from hydro_serving.stack import FunctionSpec
from hydro_serving.stack.model import DNS_LABEL
from hydro_serving.stack.options import check_options

STRING_MAPS = ("envVars", "labels", "annotations", "limits", "requests")
STRING_LISTS = ("secrets", "constraints")
STRINGS = ("service", "image", "envProcess", "namespace", "network")
KNOWN = {*STRING_MAPS, *STRING_LISTS, *STRINGS, "readOnlyRootFilesystem", "hydro"}


@dataclass(frozen=True)
class Deployment:
    """A validated deployment: the effective spec (OpenFaaS fields folded in) and the raw fields."""

    spec: FunctionSpec
    fields: dict[str, Any]  # the OpenFaaS fields as sent (without "hydro")

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self) -> dict[str, Any]:
        """What the state store keeps and ``GET /system/function/<name>`` shows."""
        return {**self.fields, "service": self.spec.name, "hydro": self.spec.to_dict()}

    def fingerprint(self) -> str:
        """Equal fingerprints mean a redeploy changes nothing, so replicas are kept."""
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Deployment:
        fields = {k: v for k, v in data.items() if k != "hydro"}
        return cls(FunctionSpec.from_dict(data["hydro"], "hydro"), fields)


def parse_deployment(data: Any) -> Deployment:
    """Validate a deployment request body; raise a 400 naming the field on any mistake."""
    if not isinstance(data, dict):
        raise ValidationError("the deployment must be a JSON object", field="(body)")
    for key in data:
        if key not in KNOWN:
            raise ValidationError(f"unknown deployment field '{key}' (known: {', '.join(sorted(KNOWN))})",
                                  field=key)
    for key in STRINGS:
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise ValidationError(f"{key} must be a non-empty string", field=key)
    for key in STRING_MAPS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ValidationError(f"{key} must be an object of strings", field=key)
        for sub, item in value.items():
            if not isinstance(item, str):
                raise ValidationError(f"{key}.{sub} must be a string, got {type(item).__name__}", field=f"{key}.{sub}")
    for key in STRING_LISTS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(f"{key} must be a list of strings", field=key)
    if "readOnlyRootFilesystem" in data and not isinstance(data["readOnlyRootFilesystem"], bool):
        raise ValidationError("readOnlyRootFilesystem must be a boolean", field="readOnlyRootFilesystem")

    service = data.get("service")
    hydro = data.get("hydro")
    if service is None and isinstance(hydro, dict):
        service = hydro.get("name")
    if not isinstance(service, str) or not service:
        raise ValidationError("service (the function name) is required", field="service")
    if not DNS_LABEL.match(service):
        raise ValidationError(f"service '{service}' must be a DNS label: lowercase letters, digits and '-'",
                              field="service")
    fields = {k: v for k, v in data.items() if k != "hydro"}
    fields["service"] = service

    if hydro is None:
        spec = _spec_from_openfaas(service, data)
    else:
        if not isinstance(hydro, dict):
            raise ValidationError("hydro must be a function spec object (FunctionSpec.to_dict())", field="hydro")
        hydro = {"name": service, **hydro}
        if hydro["name"] != service:
            raise ValidationError(f"service '{service}' does not match hydro.name '{hydro['name']}'",
                                  field="service")
        try:
            spec = FunctionSpec.from_dict(hydro, "hydro")
        except StackError as exc:
            where = exc.field or "hydro"
            field = where if where.startswith("hydro") else f"hydro.{where}"
            raise StackError(f"{field}: {exc.message.split(': ', 1)[-1]}", field=field) from None
    spec = _fold(spec, fields)
    check_options(spec)  # a misspelt option is this request's 400, not a failed cold start later
    try:
        spec.body_limit  # noqa: B018 - a malformed limits.body (from the OpenFaaS field) fails the deploy, not invokes
    except ValueError:
        raise ValidationError(f"limits.body must be a size such as 10Mi or 1048576, got {spec.limits['body']!r}",
                              field="limits.body") from None
    return Deployment(spec, fields)


def _spec_from_openfaas(service: str, data: dict[str, Any]) -> FunctionSpec:
    """A plain OpenFaaS deployment (no ``hydro``): an image-only function; providers decide if they can run it."""
    if not data.get("image"):
        raise ValidationError("a deployment needs 'hydro' (the function spec) or at least an 'image'", field="hydro")
    lang = (data.get("labels") or {}).get("hydro.lang", "dockerfile")
    return FunctionSpec(name=service, lang=lang, image=data["image"])


def _fold(spec: FunctionSpec, fields: dict[str, Any]) -> FunctionSpec:
    """OpenFaaS fields override the spec's (envVars over environment, and so on): the request wins."""
    changes: dict[str, Any] = {}
    if fields.get("image"):
        changes["image"] = fields["image"]
    for src, dst in (("envVars", "environment"), ("labels", "labels"), ("annotations", "annotations"),
                     ("limits", "limits"), ("requests", "requests")):
        if fields.get(src):
            changes[dst] = {**getattr(spec, dst), **fields[src]}
    if fields.get("secrets"):
        changes["secrets"] = tuple(dict.fromkeys([*spec.secrets, *fields["secrets"]]))
    if fields.get("envProcess"):
        changes["environment"] = {**changes.get("environment", spec.environment), "fprocess": fields["envProcess"]}
    return replace(spec, **changes) if changes else spec
