"""Knative rendering: the manifests say what stack.yml says, and the official CRD schema accepts them.

The validator runs against Knative's own Service CRD (../shared/schemas); a deliberately broken
manifest shows that it rejects what a real API server would reject.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hydro_serving.builder.knative import (
    KnativeValidator,
    idle_annotations,
    load_crd_schema,
    render_stack,
    write_manifests,
)
from hydro_serving.cli.main import cli
from hydro_serving.errors import ConfigError, StackError, ValidationError
from hydro_serving.stack import load_stack, parse_stack

REPO = Path(__file__).resolve().parents[2]

DEMO = """\
version: 1.0
provider:
  name: hydro
  store: s3://hydro-models/demo
functions:
  pm-features:
    lang: python3
    handler: ./functions/pm-features
    environment: {LOG_LEVEL: info, WORKERS: 2}
    labels: {team: search}
  pm-classifier:
    lang: sklearn
    model: pm-classifier:production
    scale: {min: 1, max: 3, idle: 5m, concurrency: 4}
    timeout: 2s
    limits: {memory: 512Mi, cpu: "1"}
    requests: {memory: 256Mi, cpu: 250m}
  pm-classifier-onnx:
    lang: onnx
    model: pm-classifier-onnx:2
    image: hydro/pm-onnx:0.3
  product-matching:
    lang: router
    timeout: 10s
    chain:
      - pm-features
      - variants: {pm-classifier: 90, pm-classifier-onnx: 10}
"""


def by_name(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests}


def env_of(manifest: dict[str, Any]) -> dict[str, str]:
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container["env"]}


def stack_of(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "stack.yml"
    path.write_text(text)
    return load_stack(path, env={})


def test_demo_pipeline_renders_valid_services(tmp_path: Path, validator: KnativeValidator) -> None:
    manifests = render_stack(stack_of(tmp_path, DEMO), namespace="ml", image_prefix="registry.local:5000/")
    validator.validate_all(manifests)
    services = by_name(manifests)
    assert list(services) == ["pm-features", "pm-classifier", "pm-classifier-onnx", "product-matching"]

    clf = services["pm-classifier"]
    assert clf["apiVersion"] == "serving.knative.dev/v1" and clf["kind"] == "Service"
    assert clf["metadata"]["namespace"] == "ml"
    notes = clf["spec"]["template"]["metadata"]["annotations"]
    assert notes["autoscaling.knative.dev/min-scale"] == "1"
    assert notes["autoscaling.knative.dev/max-scale"] == "3"
    assert notes["autoscaling.knative.dev/target"] == "4"
    assert notes["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == "240s"  # 5m idle - 60s window
    pod = clf["spec"]["template"]["spec"]
    assert pod["containerConcurrency"] == 4
    assert pod["timeoutSeconds"] == 2
    container = pod["containers"][0]
    assert container["image"] == "registry.local:5000/hydro/pm-classifier:latest"
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/_/ready"
    assert container["resources"] == {"limits": {"memory": "512Mi", "cpu": "1"},
                                      "requests": {"memory": "256Mi", "cpu": "250m"}}
    assert env_of(clf)["HYDRO_STORE"] == "s3://hydro-models/demo"
    assert container["envFrom"] == [{"secretRef": {"name": "hydro-store"}}]

    assert services["pm-classifier-onnx"]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.local:5000/hydro/pm-onnx:0.3"
    features = services["pm-features"]
    assert env_of(features)["LOG_LEVEL"] == "info" and env_of(features)["WORKERS"] == "2"
    assert "envFrom" not in features["spec"]["template"]["spec"]["containers"][0]  # no store model, no credentials
    assert features["metadata"]["labels"]["team"] == "search"
    assert features["spec"]["template"]["metadata"]["labels"]["team"] == "search"

    router = services["product-matching"]
    assert env_of(router)["HYDRO_STAGE_URL_TEMPLATE"] == "http://{name}.ml.svc.cluster.local"
    assert env_of(router)["HYDRO_STAGE_URL_TEMPLATE"].format(name="pm-classifier") == \
        "http://pm-classifier.ml.svc.cluster.local"
    assert router["spec"]["template"]["spec"]["timeoutSeconds"] == 10


def test_edge_cases_render_valid(tmp_path: Path, validator: KnativeValidator) -> None:
    (tmp_path / "common.env").write_text("# shared\nexport REGION=eu\nMODE='batch'\nLOG_LEVEL=debug\n")
    text = """\
functions:
  scale-zero:
    lang: python3
    scale: {min: 0}
    timeout: 1.5
    secrets: [api-key, db-password]
    labels: {tier: backend, "example.com/owner": data-team}
    annotations: {"prometheus.io/scrape": "true", "autoscaling.knative.dev/metric": rps}
    environment_file: [common.env]
    environment: {LOG_LEVEL: warning}
    readonly_root_filesystem: true
  quick-idle:
    lang: python3
    scale: {idle: 20s, max: 10, concurrency: 1}
    limits: {memory: 1Gi}
    namespace: edge
"""
    manifests = render_stack(stack_of(tmp_path, text), store_secret=None)
    validator.validate_all(manifests)
    zero, quick = manifests

    notes = zero["spec"]["template"]["metadata"]["annotations"]
    assert notes["autoscaling.knative.dev/min-scale"] == "0"
    assert notes["autoscaling.knative.dev/max-scale"] == "4"  # max unset: the stack's default
    assert notes["autoscaling.knative.dev/metric"] == "rps"  # user annotations reach the revision
    assert zero["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert zero["metadata"]["labels"]["example.com/owner"] == "data-team"
    pod = zero["spec"]["template"]["spec"]
    assert pod["timeoutSeconds"] == 2  # rounded up, never down
    env = env_of(zero)
    assert env["REGION"] == "eu" and env["MODE"] == "batch"
    assert env["LOG_LEVEL"] == "warning"  # inline environment beats the env file
    assert env["HYDRO_SECRETS_DIR"] == "/var/openfaas/secrets"  # where handlers find secrets on every provider
    container = pod["containers"][0]
    assert {"name": "hydro-secrets", "mountPath": "/var/openfaas/secrets", "readOnly": True} in \
        container["volumeMounts"]
    assert pod["volumes"][0]["projected"]["sources"] == [{"secret": {"name": "api-key"}},
                                                          {"secret": {"name": "db-password"}}]
    assert container["securityContext"] == {"readOnlyRootFilesystem": True}
    assert {"name": "hydro-cache", "emptyDir": {}} in pod["volumes"]

    assert quick["metadata"]["namespace"] == "edge"  # the function's own namespace wins
    qnotes = quick["spec"]["template"]["metadata"]["annotations"]
    assert qnotes["autoscaling.knative.dev/window"] == "20s"
    assert "autoscaling.knative.dev/scale-to-zero-pod-retention-period" not in qnotes
    assert quick["spec"]["template"]["spec"]["containerConcurrency"] == 1
    assert quick["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}


def test_idle_mapping() -> None:
    assert idle_annotations(300) == {"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "240s"}
    assert idle_annotations(60) == {"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "0s"}
    assert idle_annotations(30) == {"autoscaling.knative.dev/window": "30s"}
    assert idle_annotations(2) == {"autoscaling.knative.dev/window": "6s"}  # Knative's minimum window
    assert idle_annotations(90.5) == {"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "30500ms"}


def test_store_settings(tmp_path: Path, validator: KnativeValidator) -> None:
    text = "functions:\n  clf:\n    lang: sklearn\n    model: clf:1\n"
    stack = stack_of(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        render_stack(stack)
    assert "no store is set" in info.value.message and info.value.function == "clf"
    with pytest.raises(ConfigError) as info:
        render_stack(stack, store="file:///tmp/store")
    assert "cannot be reached from a cluster" in info.value.message
    (manifest,) = render_stack(stack, store="s3://models/team", store_endpoint="http://minio.hydro:9000",
                               store_secret="team-s3")
    validator.validate(manifest)
    assert env_of(manifest)["HYDRO_STORE"] == "s3://models/team"
    assert env_of(manifest)["AWS_ENDPOINT_URL"] == "http://minio.hydro:9000"
    assert manifest["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "team-s3"}}]


def test_render_errors_name_the_culprit(tmp_path: Path) -> None:
    with pytest.raises(StackError) as info:
        render_stack(stack_of(tmp_path, "functions:\n  1st:\n    lang: python3\n"))
    assert "DNS-1035" in info.value.message and info.value.function == "1st"
    with pytest.raises(StackError) as info:
        render_stack(stack_of(tmp_path, "functions:\n  f:\n    lang: python3\n    environment_file: [gone.env]\n"))
    assert "gone.env" in info.value.message and info.value.field == "functions.f.environment_file[0]"
    cross = """\
functions:
  a: {lang: python3, namespace: other}
  r: {lang: router, chain: [a]}
"""
    with pytest.raises(StackError) as info:
        render_stack(stack_of(tmp_path, cross))
    assert "one namespace" in info.value.message and info.value.function == "r"


def test_validator_rejects_invalid_manifests(tmp_path: Path, validator: KnativeValidator) -> None:
    (good,) = render_stack(stack_of(tmp_path, "functions:\n  ok:\n    lang: python3\n"))
    validator.validate(good)

    def broken(change: Any) -> dict[str, Any]:
        manifest = copy.deepcopy(good)
        change(manifest)
        return manifest

    pod = lambda m: m["spec"]["template"]["spec"]  # noqa: E731
    container = lambda m: pod(m)["containers"][0]  # noqa: E731
    cases = {
        "timeoutSeconds": broken(lambda m: pod(m).update(timeoutSeconds="10s")),
        "imagee": broken(lambda m: container(m).update(imagee="typo")),
        "memory": broken(lambda m: container(m).update(resources={"limits": {"memory": "512MB"}})),
        "containerPort": broken(lambda m: container(m).update(ports=[{"containerPort": 2**40}])),
        "metadata.name": broken(lambda m: m["metadata"].update(name="Bad_Name")),
        "labels": broken(lambda m: m["metadata"]["labels"].update(team="x" * 64)),
        "duplicate": broken(lambda m: container(m).update(env=[{"name": "A", "value": "1"},
                                                               {"name": "A", "value": "2"}])),
        "h2": broken(lambda m: container(m).update(ports=[{"name": "http", "containerPort": 8080}])),
    }
    for culprit, manifest in cases.items():
        problems = validator.errors(manifest)
        assert problems, f"the validator accepted a manifest with a bad {culprit}"
    with pytest.raises(ValidationError) as info:
        validator.validate(cases["imagee"])
    assert "'ok'" in info.value.message and "imagee" in info.value.message
    assert info.value.field == "spec.template.spec.containers.0"


def test_crd_conversion(crd_path: Path, tmp_path: Path) -> None:
    schema = load_crd_schema(crd_path)
    containers = schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"]
    assert containers["timeoutSeconds"]["maximum"] == 2**63 - 1  # format int64
    assert schema["properties"]["spec"]["additionalProperties"] is False
    template_meta = schema["properties"]["spec"]["properties"]["template"]["properties"]["metadata"]
    assert "additionalProperties" not in template_meta  # x-kubernetes-preserve-unknown-fields
    with pytest.raises(ConfigError):
        load_crd_schema(tmp_path / "missing.yaml")
    (tmp_path / "other.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(ConfigError) as info:
        load_crd_schema(tmp_path / "other.yaml")
    assert "no CustomResourceDefinition" in info.value.message


def test_conversion_of_other_openapi_extensions() -> None:
    from hydro_serving.builder.knative import openapi_to_jsonschema

    converted = openapi_to_jsonschema({
        "type": "object",
        "properties": {
            "size": {"x-kubernetes-int-or-string": True},
            "note": {"type": "string", "nullable": True},
            "inner": {"type": "object", "x-kubernetes-embedded-resource": True,
                      "x-kubernetes-preserve-unknown-fields": True},
        },
    })
    import jsonschema

    check = jsonschema.Draft202012Validator(converted)
    assert check.is_valid({"size": 3, "note": None, "inner": {"apiVersion": "v1", "kind": "Pod", "x": 1}})
    assert check.is_valid({"size": "50%"})
    assert not check.is_valid({"size": 1.5})
    assert not check.is_valid({"inner": {"kind": "Pod"}})  # an embedded resource needs apiVersion
    assert not check.is_valid({"other": 1})


def test_cli_render_writes_valid_files(tmp_path: Path, crd_path: Path, validator: KnativeValidator) -> None:
    stack = tmp_path / "stack.yml"
    stack.write_text(DEMO)
    out = tmp_path / "manifests"
    result = CliRunner().invoke(cli, ["render", "knative", "-f", str(stack), "-o", str(out), "--namespace", "ml",
                                      "--store-secret", "s3-creds", "--validate-against", str(crd_path)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["pm-classifier-onnx.yaml", "pm-classifier.yaml", "pm-features.yaml", "product-matching.yaml"]
    clf = yaml.safe_load((out / "pm-classifier.yaml").read_text())
    validator.validate(clf)
    assert clf["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]

    result = CliRunner().invoke(cli, ["render", "knative", "-f", str(stack), "--filter", "pm-features",
                                      "--no-store-secret"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.output) if d]
    assert [d["metadata"]["name"] for d in docs] == ["pm-features"]


def test_cli_render_rejects_invalid_against_crd(tmp_path: Path, crd_path: Path) -> None:
    stack = tmp_path / "stack.yml"
    stack.write_text("functions:\n  f:\n    lang: python3\n    limits: {memory: 512MB}\n")
    result = CliRunner().invoke(cli, ["render", "knative", "-f", str(stack), "-o", str(tmp_path / "out"),
                                      "--validate-against", str(crd_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ValidationError)
    assert "memory" in result.exception.message and not (tmp_path / "out").exists()


def test_write_manifests_round_trip(tmp_path: Path, validator: KnativeValidator) -> None:
    stack = parse_stack(DEMO, tmp_path / "stack.yml", env={})
    paths = write_manifests(render_stack(stack), tmp_path / "k")
    for path in paths:
        validator.validate(yaml.safe_load(path.read_text()))


def test_repository_stack_renders_valid(validator: KnativeValidator) -> None:
    stack_file = REPO / "stack.yml"
    stack = load_stack(stack_file, env={})
    manifests = render_stack(stack, store=stack.provider.store or "s3://hydro-models")
    assert {m["metadata"]["name"] for m in manifests} == set(stack.functions)
    validator.validate_all(manifests)


def test_cli_render_honours_hydro_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 point 5: HYDRO_STORE is read as by every other command; provider.store and --store come first."""
    stack = tmp_path / "stack.yml"
    stack.write_text("functions:\n  clf:\n    lang: sklearn\n    model: clf:1\n")
    monkeypatch.setenv("HYDRO_STORE", "s3://from-env/models")
    result = CliRunner().invoke(cli, ["render", "knative", "-f", str(stack)])
    assert result.exit_code == 0, result.output
    (doc,) = [d for d in yaml.safe_load_all(result.output) if d]
    assert env_of(doc)["HYDRO_STORE"] == "s3://from-env/models"

    result = CliRunner().invoke(cli, ["render", "knative", "-f", str(stack), "--store", "s3://flag/m"])
    (doc,) = [d for d in yaml.safe_load_all(result.output) if d]
    assert env_of(doc)["HYDRO_STORE"] == "s3://flag/m"

    stack.write_text("provider: {name: hydro, store: 's3://stack/m'}\n"
                     "functions:\n  clf:\n    lang: sklearn\n    model: clf:1\n")
    result = CliRunner().invoke(cli, ["render", "knative", "-f", str(stack)])
    (doc,) = [d for d in yaml.safe_load_all(result.output) if d]
    assert env_of(doc)["HYDRO_STORE"] == "s3://stack/m"

    monkeypatch.setenv("HYDRO_STORE", "file:///tmp/not-for-a-cluster")  # hostile/mistaken: an error naming the key
    stack.write_text("functions:\n  clf:\n    lang: sklearn\n    model: clf:1\n")
    result = CliRunner().invoke(cli, ["render", "knative", "-f", str(stack)])
    assert isinstance(result.exception, ConfigError), result.output  # the CLI's main prints it as one line
    assert "cannot be reached from a cluster" in result.exception.message
    assert result.exception.field == "provider.store"
