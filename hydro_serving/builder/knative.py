"""Knative manifests: one ``serving.knative.dev/v1`` Service per function, and their validation.

Rendering is a pure function of the parsed stack (plus a few deploy-time settings), so the same
code feeds ``hydro render knative`` (files to review or ``kubectl apply``) and
``hydro deploy --provider knative`` (objects sent with the kubernetes client): what you review is
what gets applied.

How stack.yml maps onto Knative (the honest version):

* ``scale.min``/``scale.max`` -> ``autoscaling.knative.dev/min-scale``/``max-scale`` (0 = scale to
  zero). ``scale.concurrency`` -> ``autoscaling.knative.dev/target`` (soft target the autoscaler
  aims for) and ``containerConcurrency`` (hard limit the queue-proxy enforces, as the runtime's own
  limit does locally).
* ``scale.idle`` (how long an idle function keeps its last replica): Knative scales to zero after
  the stable window (``autoscaling.knative.dev/window``, default 60s) without traffic, plus the
  cluster-wide ``scale-to-zero-grace-period`` (default 30s, not settable per service). So an idle
  of 60s or more becomes ``scale-to-zero-pod-retention-period`` = idle - 60s with the default
  window; an idle under 60s shortens the window itself (Knative's minimum is 6s, so shorter idles
  are rounded up to 6s). Either way the last pod lives at least ``idle`` after the last request.
* ``timeout`` -> ``timeoutSeconds`` (rounded up; clusters reject more than their
  ``max-revision-timeout-seconds``, 600 by default).
* ``limits``/``requests`` -> container resources; ``labels`` -> Service and pod labels;
  ``annotations`` -> Service and pod annotations (a user annotation overrides a rendered
  ``autoscaling.knative.dev/*`` one: explicit intent wins).
* The container env is :func:`~hydro_serving.replica.environment.replica_environment`, the one
  every provider uses: ``environment_file`` (``KEY=VALUE`` lines, the one strict parser) then
  ``environment`` (inline values win) over the image's own ``ENV``, never the environment of
  whoever renders.
* The model store: ``HYDRO_STORE`` (``s3://bucket/prefix``) and, if given, ``AWS_ENDPOINT_URL``
  as env; credentials (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optionally
  ``AWS_ENDPOINT_URL``/``AWS_DEFAULT_REGION``) come from one Secret through ``envFrom`` so they
  never appear in a manifest. Only functions that load a model from the store get it.
* ``secrets:`` -> a projected volume at ``/var/openfaas/secrets`` with every listed Secret as a
  source: each key of each Secret is a file there, which is the OpenFaaS convention (a Secret
  ``api-key`` with a key ``api-key`` is read from ``/var/openfaas/secrets/api-key``), so handler
  code reads secrets the same way on every platform.
* ``readonly_root_filesystem`` -> the container's securityContext, with emptyDir volumes at
  ``/home/app/.cache`` (where the image's runtime caches the model) and ``/tmp`` (Knative needs its
  ``kubernetes.podspec-emptydir`` feature, enabled by default in recent releases).
* Routers: stages are Knative Services in the same namespace, called at their cluster-local URL;
  ``HYDRO_STAGE_URL_TEMPLATE=http://{name}.<ns>.svc.cluster.local`` tells the router how to
  address stage ``{name}`` (instead of ``{HYDRO_GATEWAY_URL}/function/{name}``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hydro_serving.errors import ConfigError, StackError, ValidationError
from hydro_serving.replica import contract
from hydro_serving.replica.environment import replica_environment
from hydro_serving.stack import FunctionSpec, Stack

API_VERSION = "serving.knative.dev/v1"
KIND = "Service"
GROUP, VERSION, PLURAL = "serving.knative.dev", "v1", "services"

CONTAINER_PORT = 8080
DEFAULT_NAMESPACE = "default"
DEFAULT_STORE_SECRET = "hydro-store"
SECRETS_DIR = contract.CONTAINER_SECRETS_DIR
CACHE_DIR = "/home/app/.cache"  # HYDRO_CACHE's parent in function images
STAGE_URL_ENV = contract.HYDRO_STAGE_URL_TEMPLATE
DEFAULT_STABLE_WINDOW = 60.0  # Knative's default autoscaling window, seconds
MIN_STABLE_WINDOW = 6.0  # Knative rejects windows shorter than this
MAX_CONTAINER_CONCURRENCY = 1000  # Knative's webhook limit

MANAGED_BY = {"app.kubernetes.io/managed-by": "hydro-serving"}
FUNCTION_LABEL = "hydro-serving.dev/function"
LANG_LABEL = "hydro-serving.dev/lang"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


# ---- rendering -------------------------------------------------------------------------------------


def _function_env(fn: FunctionSpec, root: Path, operator: dict[str, str], store: str | None,
                  platform: dict[str, str]) -> dict[str, str]:
    """The container's env: :func:`replica_environment` over the image's ``ENV`` (no base of ours),
    with no credentials (they come from ``envFrom``); a missing or malformed env file names its field."""
    for i, name in enumerate(fn.environment_file):
        path = Path(name) if Path(name).is_absolute() else root / name
        if not path.is_file():
            raise StackError(f"environment file {path} of function '{fn.name}' does not exist",
                             field=f"functions.{fn.name}.environment_file[{i}]", function=fn.name)
    return replica_environment(fn, operator=operator, root=root, store=store, store_credentials={},
                               platform=platform, base=False)


def idle_annotations(idle: float) -> dict[str, str]:
    """Map ``scale.idle`` onto Knative's scale-to-zero knobs (see the module docstring for why)."""
    if idle >= DEFAULT_STABLE_WINDOW:
        retention = idle - DEFAULT_STABLE_WINDOW
        return {"autoscaling.knative.dev/scale-to-zero-pod-retention-period": _go_duration(retention)}
    return {"autoscaling.knative.dev/window": _go_duration(max(idle, MIN_STABLE_WINDOW))}


def _go_duration(seconds: float) -> str:
    """A Go ``time.ParseDuration`` string (``90s``, ``1500ms``), the form Knative annotations take."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{math.ceil(seconds * 1000)}ms"


def image_for(fn: FunctionSpec, image_prefix: str | None = None) -> str:
    """The function's ``image`` or ``hydro/<fn>:latest``, under ``image_prefix`` (``registry:5000/``)."""
    image = fn.image or f"hydro/{fn.name}:latest"
    if image_prefix:
        image = image_prefix.rstrip("/") + "/" + image
    return image


def stage_url_template(namespace: str) -> str:
    """The value of ``HYDRO_STAGE_URL_TEMPLATE``: ``{name}`` becomes the stage's Service name."""
    return "http://{name}." + namespace + ".svc.cluster.local"


def _namespace(fn: FunctionSpec, namespace: str) -> str:
    return fn.namespace or namespace


def render_service(
    fn: FunctionSpec,
    stack: Stack,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    image_prefix: str | None = None,
    store: str | None = None,
    store_endpoint: str | None = None,
    store_secret: str | None = DEFAULT_STORE_SECRET,
) -> dict[str, Any]:
    """One function as a Knative Service (a plain dict, ready for YAML or the kubernetes client).

    ``namespace`` is the default; a function's own ``namespace:`` wins. ``store`` defaults to the
    stack's ``provider.store``. ``store_secret=None`` leaves credentials to the pod's identity
    (e.g. IRSA / workload identity) instead of a Secret.
    """
    ns = _namespace(fn, namespace)
    if not _DNS1035.match(fn.name):
        raise StackError(f"function name '{fn.name}' cannot be a Knative Service name: it must start with a "
                         "lowercase letter (DNS-1035 label)", field=f"functions.{fn.name}", function=fn.name)
    labels = {**fn.labels, **MANAGED_BY, FUNCTION_LABEL: fn.name, LANG_LABEL: _label_value(fn.lang)}
    user_annotations = dict(fn.annotations)
    scale = fn.scale
    pod_annotations = {
        "autoscaling.knative.dev/min-scale": str(scale.min),
        "autoscaling.knative.dev/max-scale": str(scale.max),
        "autoscaling.knative.dev/target": str(scale.concurrency),
        **idle_annotations(scale.idle),
        **user_annotations,
    }

    env_from: list[dict[str, Any]] = []
    platform: dict[str, str] = {}
    operator: dict[str, str] = {}
    store = store or stack.provider.store
    if fn.model and not fn.model_is_local:
        if not store:
            raise ConfigError(f"function '{fn.name}' loads model '{fn.model}' from the store, but no store is set: "
                              "set provider.store in the stack or pass --store s3://bucket/prefix",
                              field="provider.store", function=fn.name)
        if not store.startswith("s3://"):
            raise ConfigError(f"store '{store}' cannot be reached from a cluster: use an S3 URL (s3://bucket/prefix)",
                              field="provider.store", function=fn.name)
        if store_endpoint:
            operator["AWS_ENDPOINT_URL"] = store_endpoint
        if store_secret:  # credentials from a Secret, never in the manifest
            env_from.append({"secretRef": {"name": store_secret}})
    if fn.is_router:
        stage_namespaces = {_namespace(stack.function(name), namespace)
                            for stage in fn.chain for name in [*stage.functions, *stage.shadow]}
        foreign = sorted(stage_namespaces - {ns})
        if foreign:
            raise StackError(f"router '{fn.name}' runs in namespace '{ns}' but some of its stages run in "
                             f"{', '.join(foreign)}: put a router and its stages in one namespace",
                             field=f"functions.{fn.name}.namespace", function=fn.name)
        platform[STAGE_URL_ENV] = stage_url_template(ns)
    if fn.secrets:  # handlers find secrets the same way on every provider (the local one sets its own dir)
        platform[contract.SECRETS_DIR_ENV] = SECRETS_DIR
    env = _function_env(fn, stack.root, operator, store, platform)

    container: dict[str, Any] = {
        "name": "function",
        "image": image_for(fn, image_prefix),
        "ports": [{"name": "http1", "containerPort": CONTAINER_PORT}],
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "readinessProbe": {"httpGet": {"path": "/_/ready"}, "successThreshold": 1},
    }
    if env_from:
        container["envFrom"] = env_from
    # limits.body is the gateway's body limit, not a container resource (issue 12)
    resources = {kind: {k: v for k, v in values.items() if k != "body"}
                 for kind, values in (("limits", fn.limits), ("requests", fn.requests))}
    resources = {kind: values for kind, values in resources.items() if values}
    if resources:
        container["resources"] = resources
    if fn.readonly_root_filesystem:
        container["securityContext"] = {"readOnlyRootFilesystem": True}
    pod_spec: dict[str, Any] = {
        "containerConcurrency": scale.concurrency,
        "timeoutSeconds": math.ceil(fn.timeout),
        "containers": [container],
    }
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if fn.secrets:
        mounts.append({"name": "hydro-secrets", "mountPath": SECRETS_DIR, "readOnly": True})
        volumes.append({"name": "hydro-secrets",
                        "projected": {"sources": [{"secret": {"name": s}} for s in fn.secrets]}})
    if fn.readonly_root_filesystem:  # the runtime still needs somewhere to fetch the model and write temp files
        for name, path in (("hydro-cache", CACHE_DIR), ("tmp", "/tmp")):
            mounts.append({"name": name, "mountPath": path})
            volumes.append({"name": name, "emptyDir": {}})
    if mounts:
        container["volumeMounts"] = mounts
        pod_spec["volumes"] = volumes

    metadata: dict[str, Any] = {"name": fn.name, "namespace": ns, "labels": labels}
    if user_annotations:
        metadata["annotations"] = user_annotations
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"template": {"metadata": {"labels": dict(labels), "annotations": pod_annotations},
                              "spec": pod_spec}},
    }


def _label_value(value: str) -> str:
    """Template names may hold characters labels refuse (``python3.11``? fine; ``a/b``? not)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")
    return cleaned


def render_stack(
    stack: Stack,
    names: Iterable[str] | None = None,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    image_prefix: str | None = None,
    store: str | None = None,
    store_endpoint: str | None = None,
    store_secret: str | None = DEFAULT_STORE_SECRET,
) -> list[dict[str, Any]]:
    """Every selected function (all when ``names`` is empty) as a Knative Service, in stack order."""
    return [
        render_service(fn, stack, namespace=namespace, image_prefix=image_prefix, store=store,
                       store_endpoint=store_endpoint, store_secret=store_secret)
        for fn in stack.select(list(names) if names else None)
    ]


def write_manifests(manifests: Iterable[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """One ``<name>.yaml`` per Service (reviewable, ``kubectl apply -f DIR`` works on the folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for manifest in manifests:
        path = out_dir / f"{manifest['metadata']['name']}.yaml"
        path.write_text(to_yaml(manifest))
        paths.append(path)
    return paths


def to_yaml(manifest: Mapping[str, Any]) -> str:
    """Block-style YAML in the manifest's own key order (apiVersion, kind, metadata, spec)."""
    return yaml.safe_dump(json.loads(json.dumps(manifest)), sort_keys=False, default_flow_style=False)


# ---- validation against the CRD's OpenAPI schema ------------------------------------------------------

_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DROP = {"description", "example", "externalDocs", "x-kubernetes-list-type", "x-kubernetes-map-type",
         "x-kubernetes-validations"}


def openapi_to_jsonschema(node: Any) -> Any:
    """Translate a CRD's structural OpenAPI v3 schema to JSON Schema (draft 2020-12).

    The API server's own rules, expressed the way jsonschema understands them:
    ``x-kubernetes-int-or-string`` -> integer or string; ``nullable`` -> also null;
    ``format: int32/int64`` -> numeric bounds; ``x-kubernetes-embedded-resource`` -> an object with
    apiVersion/kind/metadata; and an object that declares ``properties`` without
    ``x-kubernetes-preserve-unknown-fields`` refuses unknown keys, which is what the API server does
    under strict field validation (kubectl's default since 1.27) instead of silently pruning them.
    """
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: openapi_to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = openapi_to_jsonschema(value)
        elif key == "format":
            if value in _INT_BOUNDS:
                out["minimum"], out["maximum"] = _INT_BOUNDS[value]
        elif key in ("nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
                     "x-kubernetes-embedded-resource"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
        out["required"] = sorted({*out.get("required", []), "apiVersion", "kind"})
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields") \
            and not node.get("x-kubernetes-embedded-resource"):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


def load_crd_schema(crd_path: Path | str, version: str = VERSION) -> dict[str, Any]:
    """The JSON Schema of one served version of a CRD file (``spec.versions[].schema.openAPIV3Schema``)."""
    path = Path(crd_path)
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    except FileNotFoundError:
        raise ConfigError(f"no CRD file at {path}", field="--validate-against") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", field="--validate-against") from None
    for doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        for entry in doc.get("spec", {}).get("versions", []):
            if entry.get("name") == version:
                schema = entry.get("schema", {}).get("openAPIV3Schema")
                if schema is None:
                    break
                converted = openapi_to_jsonschema(schema)
                converted["$schema"] = "https://json-schema.org/draft/2020-12/schema"
                return converted
    raise ConfigError(f"{path} has no CustomResourceDefinition with an openAPIV3Schema for version {version}",
                      field="--validate-against")


def _list_map_keys(validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]) -> Iterable[Any]:
    """``x-kubernetes-list-type: map``: items must be unique by their key fields (env names, mount paths)."""
    from jsonschema import ValidationError as SchemaError

    if not isinstance(instance, list):
        return
    seen: set[tuple[Any, ...]] = set()
    for item in instance:
        if isinstance(item, dict):
            key = tuple(json.dumps(item.get(k)) for k in keys)
            if key in seen:
                yield SchemaError(f"duplicate entry with {', '.join(keys)} = {', '.join(key)}")
            seen.add(key)


class KnativeValidator:
    """Validates Service manifests against the CRD schema plus the ObjectMeta rules the schema leaves out.

    The CRD types ``metadata`` as a bare object because the API server checks ObjectMeta itself;
    those checks (name, namespace, label and annotation syntax) are repeated here, with the two
    Knative webhook rules a render can break (containerConcurrency range, http1/h2c port names).
    """

    def __init__(self, crd_path: Path | str) -> None:
        import jsonschema

        self.crd_path = Path(crd_path)
        schema = load_crd_schema(self.crd_path)  # keeps x-kubernetes-list-map-keys, checked below
        cls = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                           {"x-kubernetes-list-map-keys": _list_map_keys})
        self._validator = cls(schema)

    def errors(self, manifest: Mapping[str, Any]) -> list[str]:
        """Every problem as ``path: message`` (empty when the manifest is valid)."""
        problems = []
        for err in sorted(self._validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path))):
            where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
            problems.append(f"{where}: {err.message}")
        problems.extend(_metadata_errors(manifest))
        return problems

    def validate(self, manifest: Mapping[str, Any]) -> None:
        """Raise :class:`ValidationError` naming the Service and the first offending path."""
        problems = self.errors(manifest)
        if problems:
            name = (manifest.get("metadata") or {}).get("name", "?") if isinstance(manifest, Mapping) else "?"
            more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:4])})" if len(problems) > 1 else ""
            raise ValidationError(f"Knative Service '{name}' does not match {self.crd_path.name}: {problems[0]}{more}",
                                  field=problems[0].split(":", 1)[0], function=str(name))

    def validate_all(self, manifests: Iterable[Mapping[str, Any]]) -> None:
        for manifest in manifests:
            self.validate(manifest)


def _metadata_errors(manifest: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    if not isinstance(manifest, Mapping):
        return ["(top level): a manifest must be an object"]
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        problems.append(f"apiVersion/kind: must be {API_VERSION} {KIND}, got "
                        f"{manifest.get('apiVersion')} {manifest.get('kind')}")
    meta = manifest.get("metadata")
    if not isinstance(meta, Mapping):
        return [*problems, "metadata: is required"]
    name = meta.get("name")
    if not isinstance(name, str) or not _DNS1035.match(name):
        problems.append(f"metadata.name: {name!r} must be a DNS-1035 label (lowercase letters, digits, '-', "
                        "starting with a letter, at most 63 characters)")
    namespace = meta.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not _DNS1123_LABEL.match(namespace)):
        problems.append(f"metadata.namespace: {namespace!r} must be a DNS-1123 label")
    template_meta = ((manifest.get("spec") or {}).get("template") or {}).get("metadata") or {}
    for where, labels in (("metadata.labels", meta.get("labels")),
                          ("spec.template.metadata.labels", template_meta.get("labels"))):
        for key, value in (labels or {}).items():
            if not _qualified_key(key):
                problems.append(f"{where}: key {key!r} is not a valid label key")
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(f"{where}.{key}: value {value!r} is not a valid label value (at most 63 of "
                                "[A-Za-z0-9_.-], starting and ending alphanumeric)")
    for where, notes in (("metadata.annotations", meta.get("annotations")),
                               ("spec.template.metadata.annotations", template_meta.get("annotations"))):
        for key in notes or {}:
            if not _qualified_key(key):
                problems.append(f"{where}: key {key!r} is not a valid annotation key")
    pod = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
    concurrency = pod.get("containerConcurrency")
    if isinstance(concurrency, int) and not 0 <= concurrency <= MAX_CONTAINER_CONCURRENCY:
        problems.append(f"spec.template.spec.containerConcurrency: {concurrency} is outside Knative's range "
                        f"0..{MAX_CONTAINER_CONCURRENCY}")
    for i, container in enumerate(pod.get("containers") or []):
        for j, port in enumerate((container or {}).get("ports") or []):
            if isinstance(port, Mapping) and port.get("name") not in (None, "http1", "h2c"):
                problems.append(f"spec.template.spec.containers.{i}.ports.{j}.name: Knative accepts only "
                                f"'http1' or 'h2c', got {port.get('name')!r}")
        for j, item in enumerate((container or {}).get("env") or []):
            if isinstance(item, Mapping) and not _ENV_NAME.match(str(item.get("name", ""))):
                problems.append(f"spec.template.spec.containers.{i}.env.{j}.name: {item.get('name')!r} is not a "
                                "valid environment variable name")
    return problems


def _qualified_key(key: Any) -> bool:
    """``[prefix/]name``: a DNS subdomain prefix and a 63-character qualified name."""
    if not isinstance(key, str) or not key:
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))
