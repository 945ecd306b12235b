"""infra/: every YAML file parses, the compose file is complete, Kubernetes objects are well formed,
and the pieces agree with the code (RBAC verbs, Secret keys, the store Secret's default name).

No Docker engine or cluster runs these files here; what can be checked without one is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hydro_serving.builder.knative import DEFAULT_STORE_SECRET, GROUP, PLURAL

INFRA = Path(__file__).resolve().parents[2] / "infra"
NOT_OBJECTS = {"Kustomization"}  # kustomize's own config file, not an API object


def yaml_files() -> list[Path]:
    return sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted((INFRA / "knative").glob("*.yaml")) for doc in documents(path)
            if doc.get("kind") not in NOT_OBJECTS]


def test_every_yaml_file_parses() -> None:
    files = yaml_files()
    assert INFRA / "compose.yaml" in files and len(files) >= 5
    for path in files:
        docs = documents(path)
        assert docs, f"{path} holds no YAML document"
        assert all(isinstance(doc, dict) for doc in docs), f"{path} has a document that is not a mapping"


def test_compose_structure() -> None:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    assert {"minio", "gateway"} <= set(services)
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"service {name} has neither image nor build"
    gateway = services["gateway"]
    assert gateway["command"][:4] == ["hydro", "gateway", "--provider", "docker"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in gateway["volumes"]
    assert any(str(p).endswith(":8080") for p in gateway["ports"])
    assert gateway["build"]["context"] == ".."  # the repository root, relative to infra/
    assert (INFRA.parent / gateway["build"]["dockerfile"]).is_file()
    assert gateway["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert gateway["environment"]["HYDRO_STORE"].startswith("s3://")
    minio = services["minio"]
    assert any(str(p).endswith(":9000") for p in minio["ports"])
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            assert source.startswith("/") or source in named_volumes, f"{name} mounts undeclared volume {source}"
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for network in service.get("networks") or []:
            assert network in compose["networks"]


def test_kubernetes_objects_are_well_formed() -> None:
    objects = k8s_objects()
    kinds = {obj["kind"] for obj in objects}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "Deployment", "Service"} <= kinds
    for obj in objects:
        assert isinstance(obj.get("apiVersion"), str) and obj["apiVersion"], obj
        assert isinstance(obj.get("kind"), str) and obj["kind"], obj
        assert obj.get("metadata", {}).get("name"), f"{obj['kind']} without metadata.name"
    namespaces = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "Namespace"}
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") in namespaces, f"{obj['kind']}/{obj['metadata']['name']}"
    kustomization = yaml.safe_load((INFRA / "knative" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (INFRA / "knative" / resource).is_file()


def test_workloads_reference_what_exists() -> None:
    objects = k8s_objects()
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "minio")
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    port_names = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    for volume in deployment["spec"]["template"]["spec"]["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_store_secret_matches_what_functions_expect() -> None:
    secret = next(o for o in k8s_objects() if o["kind"] == "Secret")
    assert secret["metadata"]["name"] == DEFAULT_STORE_SECRET  # what rendered Services reference by default
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(secret["stringData"])
    endpoint = secret["stringData"]["AWS_ENDPOINT_URL"]
    assert endpoint == "http://minio.hydro.svc.cluster.local:9000"  # the minio Service in the hydro namespace


@pytest.mark.parametrize("verb", ["get", "list", "create", "patch", "delete"])
def test_rbac_allows_what_deploy_does(verb: str) -> None:
    """hydro deploy/list/describe/remove issue exactly these verbs on Knative Services."""
    role = next(o for o in k8s_objects() if o["kind"] == "Role")
    allowed = [rule for rule in role["rules"] if GROUP in rule["apiGroups"] and PLURAL in rule["resources"]]
    assert any(verb in rule["verbs"] for rule in allowed)
    binding = next(o for o in k8s_objects() if o["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
