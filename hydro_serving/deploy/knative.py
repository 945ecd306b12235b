"""Knative on Kubernetes through the kubernetes Python client: apply, wait Ready, list, describe, remove.

Deliberately thin: manifests come from :mod:`hydro_serving.builder.knative` (the same ones
``hydro render knative`` writes), and Knative itself scales to zero, so this module only moves
objects in and out of the API server and reads their status.

Writes ask for ``fieldValidation=Strict``: a field the API server does not know is an error, not
silently dropped (the same rule :class:`~hydro_serving.builder.knative.KnativeValidator` applies).

Updates are JSON merge patches (RFC 7386) of the whole rendered Service: lists (containers, env,
volumes) are replaced, maps merged. So that a label, annotation or env file entry removed from
stack.yml also disappears from the cluster, the rendered manifest is kept in the annotation
``hydro-serving.dev/last-applied`` and keys it had that the new render lacks are sent as ``null``
(the same three-way idea as ``kubectl apply``'s last-applied-configuration).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hydro_serving.builder.knative import (
    DEFAULT_NAMESPACE,
    DEFAULT_STORE_SECRET,
    GROUP,
    MANAGED_BY,
    PLURAL,
    VERSION,
    render_stack,
)
from hydro_serving.errors import (
    ConfigError,
    DeadlineExceeded,
    Forbidden,
    HydroError,
    NotFound,
    UpstreamError,
    require_extra,
)
from hydro_serving.stack import Stack

LAST_APPLIED = "hydro-serving.dev/last-applied"
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
MERGE_PATCH = "application/merge-patch+json"
PROGRESS_EVERY = 10.0  # seconds between "still waiting" lines when nothing changes

Progress = Callable[[str], None]


# ---- connection --------------------------------------------------------------------------------


def kube_api_client(api_client: Any = None) -> Any:
    """An ApiClient from the standard places: in-cluster service account, else KUBECONFIG/~/.kube/config."""
    if api_client is not None:
        return api_client
    require_extra("kubernetes", "kubernetes")
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            # KUBECONFIG is read now, not when the kubernetes package was imported (it caches it then);
            # a colon-separated list merges files, as kubectl does.
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or "~/.kube/config")
    except (ConfigException, FileNotFoundError, TypeError) as exc:
        raise ConfigError(f"no usable Kubernetes configuration ({exc}): set KUBECONFIG or run inside a cluster",
                          field="KUBECONFIG") from None
    return client.ApiClient()


def _api(api_client: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube_api_client(api_client))


def _api_error(exc: Exception, what: str, name: str | None = None) -> HydroError:
    """One clear error from an ApiException or a connection failure, naming the Service at fault."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message") or exc.reason
        except (ValueError, AttributeError):
            message = (exc.body or exc.reason or "").strip()[:300]
        text = f"{what}: Kubernetes API answered {exc.status}: {message}"
        if exc.status in (401, 403):
            return Forbidden(text + " (check the deployer's RBAC: infra/knative/rbac.yaml)", function=name)
        if exc.status == 404:
            return NotFound(text, function=name)
        return UpstreamError(text, function=name, status=exc.status if exc.status in (409, 422) else None)
    return UpstreamError(f"{what}: cannot reach the Kubernetes API ({exc})", function=name)


def _is_status(exc: Exception, status: int) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, ApiException) and exc.status == status


# ---- apply -----------------------------------------------------------------------------------------


def _removals(old: Any, new: Any) -> Any:
    """``new`` plus ``None`` for every map key ``old`` had and ``new`` lacks (a merge-patch deletion)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    out = {key: _removals(old.get(key), value) for key, value in new.items()}
    for key in old:
        if key not in new:
            out[key] = None
    return out


def apply_service(manifest: Mapping[str, Any], api_client: Any = None) -> tuple[dict[str, Any], bool]:
    """Create the Service, or merge-patch it if it exists; returns (the object the server stored, created)."""
    api = _api(api_client)
    meta = manifest["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    body = json.loads(json.dumps(manifest))
    body["metadata"].setdefault("annotations", {})[LAST_APPLIED] = json.dumps(manifest, sort_keys=True)
    try:
        live = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as exc:
        if not _is_status(exc, 404):
            raise _api_error(exc, f"reading Knative Service '{name}' in namespace '{namespace}'", name) from None
        live = None
    if live is None:
        try:
            # The client (v37) sends no Content-Type on create unless told; servers then have to guess.
            created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body,
                                                          field_validation="Strict",
                                                          _headers={"Content-Type": "application/json"})
            if created is None:  # the client deserializes only 201; servers may also answer 200 or 202
                created = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return created, True
        except Exception as exc:
            if _is_status(exc, 404):
                raise ConfigError(f"cannot create Knative Service '{name}': the cluster does not serve "
                                  f"{GROUP}/{VERSION} {PLURAL} in namespace '{namespace}' (is Knative Serving "
                                  "installed and the namespace created? see infra/knative/)",
                                  function=name) from None
            raise _api_error(exc, f"creating Knative Service '{name}'", name) from None
    previous: Any = {}
    last = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if last:
        try:
            previous = json.loads(last)
        except ValueError:
            previous = {}
    patch = _removals(previous, body)
    try:
        # Said explicitly: client versions differ in their default, and custom resources refuse strategic merge.
        return api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch,
                                                  field_validation="Strict", _content_type=MERGE_PATCH), False
    except Exception as exc:
        raise _api_error(exc, f"updating Knative Service '{name}'", name) from None


# ---- status ----------------------------------------------------------------------------------------


def ready_condition(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Ready`` condition (status True/False/Unknown, reason, message); Unknown when absent."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return {"type": "Ready", "status": "Unknown", "reason": "NotReconciled",
            "message": "Knative has not reported a status yet"}


def _observed(obj: Mapping[str, Any], generation: int | None) -> bool:
    """Whether the status describes this generation of the spec (not the one before an update)."""
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is None or observed is None or observed >= generation


def service_url(obj: Mapping[str, Any]) -> str:
    """The Service's URL from its status, else its cluster-local address (valid once it is Ready)."""
    status = obj.get("status") or {}
    if status.get("url"):
        return str(status["url"])
    address = (status.get("address") or {}).get("url")
    if address:
        return str(address)
    meta = obj.get("metadata") or {}
    return f"http://{meta.get('name')}.{meta.get('namespace', DEFAULT_NAMESPACE)}.svc.cluster.local"


def _progress_fn(progress: bool | Progress) -> Progress:
    if callable(progress):
        return progress
    if progress:
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda line: None


def wait_ready(
    targets: Iterable[tuple[str, str, int | None]],
    *,
    timeout: float = 300,
    poll_interval: float = 1.0,
    progress: bool | Progress = True,
    api_client: Any = None,
) -> dict[str, dict[str, Any]]:
    """Wait until every (name, namespace, generation) Service is Ready; return the Ready objects by name.

    Bounded by ``timeout`` for all of them together. A Service whose current generation reports
    Ready=False fails at once (Knative only says False for terminal problems such as a missing
    image or a crashing container), naming the function and Knative's reason and message.
    """
    api = _api(api_client)
    say = _progress_fn(progress)
    pending = {name: (namespace, generation) for name, namespace, generation in targets}
    done: dict[str, dict[str, Any]] = {}
    last_seen: dict[str, tuple[str, str]] = {}
    start = time.monotonic()
    last_line = start
    while pending:
        for name, (namespace, generation) in list(pending.items()):
            try:
                obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except Exception as exc:
                raise _api_error(exc, f"reading Knative Service '{name}'", name) from None
            cond = ready_condition(obj) if _observed(obj, generation) else {
                "status": "Unknown", "reason": "Reconciling", "message": "Knative has not seen the new spec yet"}
            state = (str(cond.get("status")), str(cond.get("reason") or ""))
            if state != last_seen.get(name):
                last_seen[name] = state
                detail = f" ({cond.get('reason')}: {cond.get('message')})" if cond.get("reason") else ""
                say(f"  {name}: Ready={cond.get('status')}{detail}")
                last_line = time.monotonic()
            if cond.get("status") == "True":
                done[name] = obj
                del pending[name]
                say(f"  {name}: ready at {service_url(obj)}")
            elif cond.get("status") == "False":
                raise UpstreamError(f"Knative Service '{name}' failed: {cond.get('reason') or 'NotReady'}: "
                                    f"{cond.get('message') or 'no message'}", function=name)
        if not pending:
            break
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            waiting = ", ".join(f"{n} ({last_seen.get(n, ('Unknown', ''))[1] or 'no status'})" for n in pending)
            raise DeadlineExceeded(f"Knative Services not Ready after {timeout:g}s: {waiting}",
                                   function=next(iter(pending)))
        if time.monotonic() - last_line >= PROGRESS_EVERY:
            say(f"  waiting for {', '.join(pending)} ({elapsed:.0f}s of {timeout:g}s)")
            last_line = time.monotonic()
        time.sleep(min(poll_interval, max(0.0, timeout - elapsed)))
    return done


# ---- the four operations the CLI calls ---------------------------------------------------------------


def deploy_knative(
    stack: Stack,
    names: Iterable[str] | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    image_prefix: str | None = None,
    store_secret: str | None = None,
    store: str | None = None,
    store_endpoint: str | None = None,
    wait: bool = True,
    timeout: float = 300,
    poll_interval: float = 1.0,
    progress: bool | Progress = True,
    api_client: Any = None,
) -> list[tuple[str, str]]:
    """Render, create-or-patch every selected function's Service, wait for Ready; return (name, url) pairs.

    ``store_secret=None`` means the default Secret ``hydro-store``; ``""`` means none (pod identity).
    Everything is rendered (and so checked) before the first object is sent, so a mistake in the
    stack never leaves the cluster half-updated.
    """
    secret = DEFAULT_STORE_SECRET if store_secret is None else (store_secret or None)
    manifests = render_stack(stack, names, namespace=namespace, image_prefix=image_prefix, store=store,
                             store_endpoint=store_endpoint, store_secret=secret)
    say = _progress_fn(progress)
    client = kube_api_client(api_client)
    applied: list[dict[str, Any]] = []
    for manifest in manifests:
        obj, created = apply_service(manifest, client)
        meta = manifest["metadata"]
        say(f"{'created' if created else 'updated'} Knative Service {meta['namespace']}/{meta['name']}")
        applied.append(obj)
    if not wait:
        return [(obj["metadata"]["name"], service_url(obj)) for obj in applied]
    say(f"waiting up to {timeout:g}s for {len(applied)} Service(s) to be Ready")
    targets = [(obj["metadata"]["name"], obj["metadata"].get("namespace", namespace),
                (obj.get("metadata") or {}).get("generation")) for obj in applied]
    ready = wait_ready(targets, timeout=timeout, poll_interval=poll_interval, progress=progress, api_client=client)
    return [(name, service_url(ready[name])) for name, _, _ in targets]


def remove_knative(names: Iterable[str], namespace: str = DEFAULT_NAMESPACE, api_client: Any = None) -> list[str]:
    """Delete the named Services; every present one is deleted before a missing one is reported."""
    api = _api(api_client)
    removed, missing = [], []
    for name in names:
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            removed.append(name)
        except Exception as exc:
            if _is_status(exc, 404):
                missing.append(name)
                continue
            raise _api_error(exc, f"removing Knative Service '{name}'", name) from None
    if missing:
        raise NotFound(f"no Knative Service {', '.join(repr(m) for m in missing)} in namespace '{namespace}'"
                       + (f" (removed {', '.join(removed)})" if removed else ""), function=missing[0])
    return removed


def _revision_replicas(api: Any, namespace: str) -> dict[str, dict[str, Any]]:
    """Replica counts per revision (Knative keeps them on Revisions, not Services); empty if unreadable."""
    try:
        revisions = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "revisions")
    except Exception:  # not fatal: RBAC may not allow revisions, or the stand-in does not serve them
        return {}
    out = {}
    for rev in revisions.get("items") or []:
        status = rev.get("status") or {}
        out[(rev.get("metadata") or {}).get("name", "")] = {
            "actual": status.get("actualReplicas"), "desired": status.get("desiredReplicas")}
    return out


def summarize(obj: Mapping[str, Any], replicas: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The facts ``hydro list`` shows about one Service."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    template = (obj.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    containers = (template.get("spec") or {}).get("containers") or [{}]
    cond = ready_condition(obj)
    revision = status.get("latestReadyRevisionName")
    counts = (replicas or {}).get(revision or "", {})
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "url": service_url(obj),
        "ready": {"True": True, "False": False}.get(str(cond.get("status"))),
        "reason": cond.get("reason"),
        "message": cond.get("message"),
        "image": containers[0].get("image"),
        "min_scale": annotations.get("autoscaling.knative.dev/min-scale"),
        "max_scale": annotations.get("autoscaling.knative.dev/max-scale"),
        "latest_ready_revision": revision,
        "latest_created_revision": status.get("latestCreatedRevisionName"),
        "replicas": counts.get("actual"),
        "desired_replicas": counts.get("desired"),
    }


def list_knative(namespace: str = DEFAULT_NAMESPACE, api_client: Any = None, *,
                 all_services: bool = False) -> list[dict[str, Any]]:
    """Summaries of the Hydro-managed Services in a namespace (every Service with ``all_services``)."""
    api = _api(api_client)
    try:
        listing = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                    label_selector=None if all_services else MANAGED_SELECTOR)
    except Exception as exc:
        if _is_status(exc, 404):
            raise ConfigError(f"the cluster does not serve {GROUP}/{VERSION} {PLURAL}: is Knative Serving "
                              "installed?") from None
        raise _api_error(exc, f"listing Knative Services in namespace '{namespace}'") from None
    items = listing.get("items") or []
    if not all_services:  # the selector again, client-side: cheap, and correct whatever the server did
        items = [i for i in items if all(((i.get("metadata") or {}).get("labels") or {}).get(k) == v
                                         for k, v in MANAGED_BY.items())]
    replicas = _revision_replicas(api, namespace) if items else {}
    return sorted((summarize(i, replicas) for i in items), key=lambda s: str(s["name"]))


def describe_knative(name: str, namespace: str = DEFAULT_NAMESPACE, api_client: Any = None) -> dict[str, Any]:
    """One Service in detail: the summary plus conditions, traffic, env names, resources and annotations."""
    api = _api(api_client)
    try:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except Exception as exc:
        if _is_status(exc, 404):
            raise NotFound(f"no Knative Service '{name}' in namespace '{namespace}'", function=name) from None
        raise _api_error(exc, f"reading Knative Service '{name}'", name) from None
    template = (obj.get("spec") or {}).get("template") or {}
    pod = template.get("spec") or {}
    container = (pod.get("containers") or [{}])[0]
    annotations = dict((obj.get("metadata") or {}).get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    status = obj.get("status") or {}
    return {
        **summarize(obj, _revision_replicas(api, namespace)),
        "labels": dict((obj.get("metadata") or {}).get("labels") or {}),
        "annotations": annotations,
        "pod_annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
        "container_concurrency": pod.get("containerConcurrency"),
        "timeout_seconds": pod.get("timeoutSeconds"),
        "resources": container.get("resources") or {},
        "env": [item.get("name") for item in container.get("env") or []],
        "env_from": [ref.get("secretRef", {}).get("name") for ref in container.get("envFrom") or []],
        "conditions": list(status.get("conditions") or []),
        "traffic": list(status.get("traffic") or []),
        "generation": (obj.get("metadata") or {}).get("generation"),
        "observed_generation": status.get("observedGeneration"),
    }
