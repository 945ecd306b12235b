"""The OpenAPI 3 document of the gateway's whole API, written as data (tests check every route is here)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/responses/Error"}
_AUTH = [{"bearer": []}, {"basic": []}]
_RETRY = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True,
                          "description": "seconds to wait before retrying"}}
_RATE_HEADERS = {
    "RateLimit-Policy": {"schema": {"type": "string"}, "description": "IETF draft: '\"fn\";q=<burst>;w=<seconds>', "
                                                                      "on functions with a rate limit"},
    "RateLimit": {"schema": {"type": "string"}, "description": "IETF draft: '\"fn\";r=<left>;t=<seconds to full>'"},
}
_LIMITED = {"description": "too many requests: the function's rate limit (rate) or its cold-start queue "
                           "(scale.queue) is full",
            "headers": {**_RETRY, **_RATE_HEADERS},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
DNS_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # the same rule as hydro_serving.stack.model
_FUNCTION_NAME = {"type": "string", "pattern": DNS_LABEL_PATTERN, "minLength": 1, "maxLength": 63}
# every response names its request (hydro_serving.gateway.requestid)
_REQUEST_ID = {"X-Request-Id": {"schema": {"type": "string", "minLength": 1, "maxLength": 128}}}


def _op(summary: str, responses: dict[str, Any], *, auth: bool = False, body: str | None = None,
        params: list[dict[str, Any]] | None = None, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if tags:
        op["tags"] = list(tags)
    if auth:
        op["security"] = _AUTH
        op["responses"] = {**responses, "400": _ERROR, "401": _ERROR}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"$ref": body}}}}
        op["responses"] = {**op["responses"], "413": _ERROR, "415": _ERROR}
    if params:
        op["parameters"] = params
    return op


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NAME = {"name": "name", "in": "path", "required": True, "schema": _FUNCTION_NAME,
         "description": "the function (a DNS label, written as is: not percent-encoded)"}
_PATH = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "the rest of the path, forwarded to the replica (e.g. v2/models/<name>/infer)"}
_STATUS = {"$ref": "#/components/schemas/FunctionStatus"}
_PASSED = {"description": "the function's own response, passed through (any status and content type)",
           "headers": {"X-Cold-Start": {"schema": {"type": "string", "enum": ["true", "false"]}},
                       "X-Queue-Time-Ms": {"schema": {"type": "number"},
                                           "description": "present when the request waited for a replica"},
                       **_RATE_HEADERS},
           "content": {"*/*": {"schema": {}}}}

_INVOKE_RESPONSES = {
    "200": _PASSED,
    "202": _json({"type": "object", "properties": {"function": {"type": "string"},
                                                   "status": {"type": "string", "enum": ["ready", "starting"]}}},
                 "prewarm accepted (header X-Hydro-Prewarm: true)"),
    "400": _ERROR,
    "401": _ERROR, "403": _ERROR, "404": _ERROR, "408": _ERROR, "413": _ERROR, "429": _LIMITED,
    "502": _ERROR, "503": _ERROR, "504": _ERROR,
    "default": _PASSED,
}


def _invoke_item(params: list[dict[str, Any]]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for method in ("get", "post", "put", "patch", "delete"):
        op = _op(f"Invoke the function ({method.upper()} forwarded as is); held while a replica starts from zero. "
                 "Protected functions take a key scoped to them or the admin credentials; the gateway never "
                 "forwards its credentials or keys to the function. With 'X-Hydro-Endpoints: lease' and a router's "
                 "own key (routers only: 401/403 otherwise) it answers the function's ready replicas for the "
                 "router's direct path instead of invoking it", _INVOKE_RESPONSES, params=params,
                 tags=("functions",))
        op["security"] = [{}, {"bearer": []}, {"basic": []}]
        if method in ("post", "put", "patch"):
            op["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}},
                                 "description": "forwarded to the function as is (at most limits.body bytes)"}
        item[method] = op
    return item


def _async_paths() -> dict[str, Any]:
    """``/async-function/...`` and ``/system/async/...`` (hydro_serving.gateway.asyncroutes documents its own)."""
    from hydro_serving.gateway.asyncroutes import openapi_paths

    return openapi_paths()


def _monitoring_paths() -> dict[str, Any]:
    """``/system/monitoring/...`` and ``/system/feedback/...`` (hydro_serving.monitor.api documents its own)."""
    from hydro_serving.monitor.api import openapi_paths

    return openapi_paths()


def openapi_document(version: str) -> dict[str, Any]:
    """The document served at ``/openapi.json``: every route, parameter, constraint and response.

    ``tests/gateway/test_openapi.py`` runs schemathesis (all default checks) against a real gateway with
    this document, so what it says is what the gateway does.
    """
    name_query = {"name": "name", "in": "query", "required": True, "schema": _FUNCTION_NAME}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Hydro Serving gateway", "version": version,
                 "description": "OpenFaaS-compatible subset: deploy functions, invoke them (scaled to zero), "
                                "read logs and metrics. Every response carries X-Request-Id; errors are JSON "
                                "naming the field at fault."},
        "paths": {
            "/healthz": {"get": _op("Gateway liveness", {"200": _json(
                {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}})})},
            "/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})})},
            "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "text exposition format",
                                                                   "content": {"text/plain": {"schema": {
                                                                       "type": "string"}}}}})},
            "/system/info": {"get": _op("Provider and version", {"200": _json({"type": "object"})}, auth=True)},
            "/system/functions": {
                "get": _op("List deployed functions", {"200": _json({"type": "array", "items": _STATUS})}, auth=True),
                "post": _op("Deploy a new function", {"202": _json(_STATUS), "409": _ERROR},
                            auth=True, body="#/components/schemas/FunctionDeployment"),
                "put": _op("Update a function (replicas are replaced without failing requests)",
                           {"202": _json(_STATUS), "404": _ERROR},
                           auth=True, body="#/components/schemas/FunctionDeployment"),
                "delete": _op("Remove a function (in-flight requests finish first); 409 when a deployed "
                              "pipeline uses it, unless force",
                              {"202": _json({"type": "object"}), "404": _ERROR, "409": _ERROR},
                              auth=True, body="#/components/schemas/DeleteFunctionRequest"),
            },
            "/system/validate": {
                "post": _op("Check a whole stack as a deploy would (templates, models, pipeline contracts); "
                            "nothing is applied",
                            {"200": _json({"type": "object"}), "400": _ERROR}, auth=True,
                            body="#/components/schemas/ValidateRequest"),
            },
            "/system/function/{name}": {
                "get": _op("Status of one function", {"200": _json(_STATUS), "404": _ERROR}, auth=True,
                           params=[_NAME]),
                "delete": _op("Remove one function (409 when a deployed pipeline uses it, unless ?force=true)",
                              {"202": _json({"type": "object"}), "404": _ERROR, "409": _ERROR}, auth=True,
                              params=[_NAME, {"name": "force", "in": "query",
                                              "schema": {"type": "string", "enum": ["true", "false", "1", "0"]}}]),
            },
            "/system/scale-function/{name}": {
                "post": _op("Set the number of replicas now (idle replicas still scale back to scale.min)",
                            {"202": _json({"type": "object"}), "404": _ERROR}, auth=True,
                            body="#/components/schemas/ScaleServiceRequest", params=[_NAME]),
            },
            "/system/logs": {
                "get": _op("Function logs as NDJSON lines {name, text}",
                           {"200": {"description": "NDJSON", "content": {"application/x-ndjson": {
                               "schema": {"type": "string"}}}}, "404": _ERROR}, auth=True,
                           params=[name_query,
                                   {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                                   {"name": "follow", "in": "query", "schema": {"type": "boolean"},
                                    "description": "true: keep streaming new lines until the client disconnects"}]),
            },
            "/system/keys": {
                "get": _op("List API keys (never their secrets); routers' internal keys are marked internal",
                           {"200": _json({"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}})},
                           auth=True, tags=("keys",)),
                "post": _op("Create an API key scoped to functions; the answer's 'key' is shown only this once",
                            {"201": _json({"allOf": [{"$ref": "#/components/schemas/ApiKey"},
                                                     {"type": "object", "required": ["key"],
                                                      "properties": {"key": {"type": "string"}}}]}),
                             "400": _ERROR, "409": _ERROR},
                            auth=True, body="#/components/schemas/CreateKeyRequest", tags=("keys",)),
            },
            "/system/keys/{name}": {
                "delete": _op("Revoke an API key (callers holding it get 401 'revoked')",
                              {"200": _json({"$ref": "#/components/schemas/ApiKey"}), "400": _ERROR, "404": _ERROR},
                              auth=True, tags=("keys",),
                              params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                                       "description": "key name"}]),
            },
            "/function/{name}": _invoke_item([_NAME]),
            "/function/{name}/{path}": _invoke_item([_NAME, _PATH]),
            **_monitoring_paths(),
            **_async_paths(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "basic": {"type": "http", "scheme": "basic"}},
            "responses": {"Error": {**_json({"$ref": "#/components/schemas/Error"}, "error"),
                                    "headers": _REQUEST_ID}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "code"], "properties": {
                    "error": {"type": "string"}, "code": {"type": "string"}, "field": {"type": "string"},
                    "stage": {"type": "string"}, "function": {"type": "string"}, "details": {"type": "object"},
                    "request_id": {"type": "string"}}},
                "FunctionDeployment": {
                    "type": "object", "required": ["service"], "additionalProperties": False,
                    "description": "Whether a deployment can run depends on more than its shape (its handler "
                                   "folder, template and image exist; a router's stages are deployed): those are "
                                   "400s naming the field.",
                    "properties": {
                        "service": _FUNCTION_NAME, "image": _NON_EMPTY, "envProcess": _NON_EMPTY,
                        "envVars": _STRING_MAP, "labels": _STRING_MAP, "annotations": _STRING_MAP,
                        "secrets": {"type": "array", "items": {"type": "string"}},
                        "constraints": {"type": "array", "items": {"type": "string"}},
                        "limits": _STRING_MAP, "requests": _STRING_MAP,
                        "namespace": _NON_EMPTY, "network": _NON_EMPTY,
                        "readOnlyRootFilesystem": {"type": "boolean"},
                        "hydro": {"type": "object", "required": ["lang"],
                                  "description": "FunctionSpec.to_dict(): the stack.yml function (lang, handler, "
                                                 "model, scale, rate, limits, signature, chain...)",
                                  "properties": {"lang": {"type": "string", "minLength": 1}}}}},
                "FunctionStatus": {"type": "object", "properties": {
                    "name": {"type": "string"}, "image": {"type": "string"}, "namespace": {"type": "string"},
                    "replicas": {"type": "integer"}, "availableReplicas": {"type": "integer"},
                    "invocationCount": {"type": "integer"}, "createdAt": {"type": "string"},
                    "envVars": {"type": "object"}, "labels": {"type": "object"}, "annotations": {"type": "object"},
                    "hydro": {"type": "object"}, "status": {"type": "object"}}},
                "DeleteFunctionRequest": {"type": "object", "required": ["functionName"],
                                          "properties": {"functionName": _FUNCTION_NAME,
                                                         "force": {"type": "boolean"}}},
                "ValidateRequest": {"type": "object", "required": ["functions"], "properties": {
                    "functions": {"type": "array",
                                  "items": {"$ref": "#/components/schemas/FunctionDeployment"}}}},
                "ApiKey": {"type": "object", "properties": {
                    "name": {"type": "string"}, "id": {"type": "string"},
                    "functions": {"type": "array", "items": {"type": "string"}},
                    "createdAt": {"type": "string"}, "expiresAt": {"type": "string", "nullable": True},
                    "revokedAt": {"type": "string", "nullable": True},
                    "status": {"type": "string", "enum": ["active", "expired", "revoked"]},
                    "internal": {"type": "boolean"}}},
                "CreateKeyRequest": {"type": "object", "required": ["name", "functions"], "additionalProperties": False,
                                     "properties": {
                                         "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
                                         "functions": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                                         "expires": {"oneOf": [{"type": "string", "pattern": "^[0-9]+[smhdw]?$"},
                                                               {"type": "integer", "minimum": 1}],
                                                     "description": "lifetime: 30d, 12h, 15m, 2w or seconds"}}},
                "ScaleServiceRequest": {"type": "object", "required": ["replicas"],
                                        "properties": {"replicas": {"type": "integer", "minimum": 0}}},
            },
        },
    }


_NON_EMPTY = {"type": "string", "minLength": 1}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
