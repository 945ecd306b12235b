"""hydro deploy/list/describe/remove on Knative, through the real kubernetes client, over HTTP.

The API server is kmock's KubernetesEmulator on 127.0.0.1 (see conftest.py): no Kubernetes can
run here. Knative's controller cannot run either, so ``FakeKnativeController`` below stands in for
it: it watches the emulator's Services and writes the status Knative would (generation,
observedGeneration, a Ready condition, URLs), or Ready=False for an image it "cannot resolve".
Everything the product code does (create, merge patch, get, list, delete, status polling) goes
through the kubernetes client to the emulator; nothing in the product is mocked.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.builder.knative import KnativeValidator
from hydro_serving.deploy.knative import (
    LAST_APPLIED,
    deploy_knative,
    describe_knative,
    list_knative,
    remove_knative,
)
from hydro_serving.errors import ConfigError, DeadlineExceeded, NotFound, UpstreamError
from hydro_serving.stack import load_stack

SERVICES = "serving.knative.dev/v1/services"
Emulator = Any  # tests/knative/conftest.py: kmock's KubernetesEmulator served from a thread

STACK = """\
provider: {name: hydro, store: "s3://hydro-models/demo"}
functions:
  pm-features:
    lang: python3
    environment: {LOG_LEVEL: info, EXTRA: "1"}
    annotations: {"example.com/owner": search}
  pm-classifier:
    lang: sklearn
    model: pm-classifier:production
    scale: {min: 0, max: 2, concurrency: 4}
  product-matching:
    lang: router
    chain: [pm-features, pm-classifier]
"""


class FakeKnativeController:
    """Stands in for Knative's controller: reconciles each new spec into a status."""

    def __init__(self, emulator: Emulator, fail_images: tuple[str, ...] = ()) -> None:
        self.emulator = emulator
        self.fail_images = fail_images
        self.seen: dict[tuple[str, str], Any] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeKnativeController:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.emulator.call(self._reconcile)

    def _reconcile(self) -> None:
        import kmock

        for (resource, namespace, name), obj in list(self.emulator.handler.objects.items()):
            if resource != kmock.resource(SERVICES) or obj.deleted:
                continue
            spec = obj.raw.get("spec")
            if self.seen.get((namespace, name)) == spec:
                continue
            self.seen[(namespace, name)] = spec
            generation = obj.raw.get("metadata", {}).get("generation") or 1  # counted by the API server
            image = spec["template"]["spec"]["containers"][0]["image"]
            revision = f"{name}-{generation:05d}"
            if any(bad in image for bad in self.fail_images):
                ready = {"type": "Ready", "status": "False", "reason": "RevisionMissing",
                         "message": f'Unable to fetch image "{image}": manifest unknown'}
            else:
                ready = {"type": "Ready", "status": "True"}
            obj.patch({"status": {
                "observedGeneration": generation,
                "conditions": [{"type": "ConfigurationsReady", "status": ready["status"]}, ready],
                "url": f"http://{name}.{namespace}.example.com",
                "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"},
                "latestCreatedRevisionName": revision,
                **({"latestReadyRevisionName": revision} if ready["status"] == "True" else {}),
                "traffic": [{"revisionName": revision, "percent": 100, "latestRevision": True}],
            }})


def write_stack(tmp_path: Path, text: str = STACK) -> Any:
    path = tmp_path / "stack.yml"
    path.write_text(text)
    return load_stack(path, env={})


def test_deploy_creates_services_waits_for_ready_and_prints_urls(tmp_path: Path, emulator: Emulator,
                                                                  validator: KnativeValidator) -> None:
    lines: list[str] = []
    with FakeKnativeController(emulator):
        urls = deploy_knative(write_stack(tmp_path), namespace="ml", image_prefix="registry.local/",
                              store_secret="s3-creds", timeout=30, poll_interval=0.05, progress=lines.append,
                              api_client=emulator.api_client())
    assert urls == [("pm-features", "http://pm-features.ml.example.com"),
                    ("pm-classifier", "http://pm-classifier.ml.example.com"),
                    ("product-matching", "http://product-matching.ml.example.com")]
    assert "created Knative Service ml/pm-classifier" in lines
    assert "  pm-classifier: ready at http://pm-classifier.ml.example.com" in lines

    stored = emulator.object("pm-classifier", "ml")
    assert stored is not None
    validator.validate({k: v for k, v in stored.items() if k != "status"})  # what reached the API is valid
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/hydro/pm-classifier:latest"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    router = emulator.object("product-matching", "ml")
    env = {e["name"]: e["value"] for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HYDRO_STAGE_URL_TEMPLATE"] == "http://{name}.ml.svc.cluster.local"


def test_redeploy_patches_and_drops_what_the_stack_no_longer_says(tmp_path: Path, emulator: Emulator) -> None:
    client = emulator.api_client()
    with FakeKnativeController(emulator):
        deploy_knative(write_stack(tmp_path), ["pm-features"], timeout=30, poll_interval=0.05, progress=False,
                       api_client=client)
        changed = STACK.replace('environment: {LOG_LEVEL: info, EXTRA: "1"}', "environment: {LOG_LEVEL: debug}")
        changed = changed.replace('annotations: {"example.com/owner": search}', "labels: {tier: edge}")
        lines: list[str] = []
        urls = deploy_knative(write_stack(tmp_path, changed), ["pm-features"], timeout=30, poll_interval=0.05,
                              progress=lines.append, api_client=client)
    assert urls == [("pm-features", "http://pm-features.default.example.com")]
    assert "updated Knative Service default/pm-features" in lines
    stored = emulator.object("pm-features")
    assert stored["metadata"]["generation"] == 2 and stored["status"]["observedGeneration"] == 2
    env = {e["name"]: e["value"] for e in stored["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["LOG_LEVEL"] == "debug" and "EXTRA" not in env
    assert "example.com/owner" not in stored["metadata"]["annotations"]  # removed from the stack: removed here
    assert "example.com/owner" not in stored["spec"]["template"]["metadata"]["annotations"]
    assert stored["metadata"]["labels"]["tier"] == "edge"
    assert LAST_APPLIED in stored["metadata"]["annotations"]
    writes = [(r.method, r.headers.get("Content-Type"), r.params.get("fieldValidation"))
              for r in emulator.handler._requests if r.method in ("POST", "PATCH")]  # kmock keeps every request
    assert writes == [("POST", "application/json", "Strict"), ("PATCH", "application/merge-patch+json", "Strict")]


def test_failed_revision_names_function_reason_and_message(tmp_path: Path, emulator: Emulator) -> None:
    stack = write_stack(tmp_path, "functions:\n  broken:\n    lang: python3\n    image: example/missing:1\n")
    with FakeKnativeController(emulator, fail_images=("missing",)), pytest.raises(UpstreamError) as info:
        deploy_knative(stack, timeout=30, poll_interval=0.05, progress=False, api_client=emulator.api_client())
    assert info.value.function == "broken"
    assert "RevisionMissing" in info.value.message and "example/missing:1" in info.value.message


def test_wait_is_bounded(tmp_path: Path, emulator: Emulator) -> None:
    """No controller at all: the wait ends with an error naming what never became Ready."""
    lines: list[str] = []
    with pytest.raises(DeadlineExceeded) as info:
        deploy_knative(write_stack(tmp_path), ["pm-features"], timeout=0.3, poll_interval=0.05,
                       progress=lines.append, api_client=emulator.api_client())
    assert info.value.function == "pm-features" and "pm-features" in info.value.message
    assert "  pm-features: Ready=Unknown (NotReconciled: Knative has not reported a status yet)" in lines


def test_deploy_without_wait_returns_cluster_local_urls(tmp_path: Path, emulator: Emulator) -> None:
    urls = deploy_knative(write_stack(tmp_path), wait=False, namespace="team", store_secret="", progress=False,
                          api_client=emulator.api_client())
    assert urls[0] == ("pm-features", "http://pm-features.team.svc.cluster.local")
    clf = emulator.object("pm-classifier", "team")
    assert "envFrom" not in clf["spec"]["template"]["spec"]["containers"][0]  # store_secret="" means none


def test_list_describe_remove(tmp_path: Path, emulator: Emulator) -> None:
    client = emulator.api_client()
    with FakeKnativeController(emulator):
        deploy_knative(write_stack(tmp_path), timeout=30, poll_interval=0.05, progress=False, api_client=client)
    from kubernetes import client as k8s

    k8s.CustomObjectsApi(client).create_namespaced_custom_object(
        "serving.knative.dev", "v1", "default", "services",
        {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "not-ours"}})

    listed = list_knative("default", api_client=client)
    assert [s["name"] for s in listed] == ["pm-classifier", "pm-features", "product-matching"]
    clf = next(s for s in listed if s["name"] == "pm-classifier")
    assert clf["ready"] is True and clf["url"] == "http://pm-classifier.default.example.com"
    assert clf["min_scale"] == "0" and clf["max_scale"] == "2"
    assert clf["latest_ready_revision"] == "pm-classifier-00001"
    assert clf["replicas"] is None  # Revisions (where Knative keeps replica counts) are not served here
    assert "not-ours" in [s["name"] for s in list_knative("default", api_client=client, all_services=True)]

    described = describe_knative("pm-classifier", "default", api_client=client)
    assert described["container_concurrency"] == 4
    assert "HYDRO_STORE" in described["env"] and described["env_from"] == ["hydro-store"]
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in described["conditions"])
    assert LAST_APPLIED not in described["annotations"]

    assert remove_knative(["pm-features", "product-matching"], "default", api_client=client) == \
        ["pm-features", "product-matching"]
    assert emulator.object("pm-features") is None
    assert [s["name"] for s in list_knative("default", api_client=client)] == ["pm-classifier"]
    with pytest.raises(NotFound) as info:
        remove_knative(["pm-features", "pm-classifier"], "default", api_client=client)
    assert info.value.function == "pm-features" and "removed pm-classifier" in info.value.message
    with pytest.raises(NotFound):
        describe_knative("pm-features", "default", api_client=client)


def test_cluster_without_knative_is_a_clear_error(tmp_path: Path, bare_emulator: Emulator) -> None:
    client = bare_emulator.api_client()
    with pytest.raises(ConfigError) as info:
        deploy_knative(write_stack(tmp_path), ["pm-features"], progress=False, api_client=client)
    assert "Knative Serving" in info.value.message and info.value.function == "pm-features"
    with pytest.raises(ConfigError) as info:
        list_knative("default", api_client=client)
    assert "Knative Serving" in info.value.message


def use_kubeconfig_for(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point KUBECONFIG (the standard place a user's credentials come from) at the emulator."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""\
apiVersion: v1
kind: Config
clusters: [{{name: stand-in, cluster: {{server: "{emulator.url}"}}}}]
users: [{{name: dev, user: {{token: not-checked-by-the-emulator}}}}]
contexts: [{{name: dev, context: {{cluster: stand-in, user: dev, namespace: default}}}}]
current-context: dev
""")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


def test_kubeconfig_from_the_standard_place(tmp_path: Path, emulator: Emulator,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    use_kubeconfig_for(emulator, tmp_path, monkeypatch)
    deploy_knative(write_stack(tmp_path), ["pm-features"], wait=False, progress=False)
    assert [s["name"] for s in list_knative("default")] == ["pm-features"]

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ConfigError) as info:
        list_knative("default")
    assert info.value.field == "KUBECONFIG"


def test_cli_deploy_list_describe_remove_with_provider_knative(tmp_path: Path, emulator: Emulator,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`hydro deploy|list|describe|remove --provider knative` through the real CLI, against the stand-in."""
    import json as jsonlib

    from click.testing import CliRunner

    from hydro_serving.cli.main import cli

    use_kubeconfig_for(emulator, tmp_path, monkeypatch)
    write_stack(tmp_path)
    stack_file = str(tmp_path / "stack.yml")
    runner = CliRunner()
    with FakeKnativeController(emulator):
        out = runner.invoke(cli, ["deploy", "-f", stack_file, "--provider", "knative", "-n", "ml",
                                  "--image-prefix", "registry.local/", "--timeout", "30"])
    assert out.exit_code == 0, out.output
    assert "ready     product-matching  ->  http://product-matching.ml.example.com" in out.output

    out = runner.invoke(cli, ["list", "--provider", "knative", "-n", "ml"])
    assert out.exit_code == 0, out.output
    assert "pm-classifier" in out.output and "http://pm-classifier.ml.example.com" in out.output

    out = runner.invoke(cli, ["describe", "pm-features", "--provider", "knative", "-n", "ml"])
    assert out.exit_code == 0, out.output
    assert jsonlib.loads(out.output)["name"] == "pm-features"

    out = runner.invoke(cli, ["remove", "pm-features", "--provider", "knative", "-n", "ml"])
    assert out.exit_code == 0, out.output
    assert emulator.object("pm-features", "ml") is None
