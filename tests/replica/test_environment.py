"""One replica environment: local, docker, Knative and ``hydro run`` give a function the same variables.

Each provider's own code path builds the environment for the same stack (the local and Docker
providers' ``_environment``, Knative's rendered manifest, ``hydro run``'s); what may differ by
design (addresses, paths, the process's own HOME) is :data:`PROVIDER_KEYS`, and is checked apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hydro_serving.builder.knative import render_service
from hydro_serving.cli.run import run_environment
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.providers.docker import DockerProvider
from hydro_serving.gateway.providers.local import LocalProvider
from hydro_serving.gateway.secrets import write_secret
from hydro_serving.replica.environment import BASE_KEYS, function_view, replica_environment
from hydro_serving.stack import load_stack

STACK = """
version: "1"
provider: {name: hydro, store: "s3://models/prod"}
functions:
  iris:
    lang: sklearn
    model: "iris:3"
    environment: {GREETING: hello, HYDRO_MAX_INFLIGHT: "7"}
    environment_file: [app.env]
    secrets: [api-key]
"""

GATEWAY_ENV = {
    "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
    "HYDRO_STORE": "s3://models/prod", "AWS_ENDPOINT_URL": "http://127.0.0.1:7480",
    "HYDRO_TOKEN": "admin-token", "AWS_ACCESS_KEY_ID": "gateway-key", "AWS_SECRET_ACCESS_KEY": "gateway-secret",
    "SOMETHING_ELSE": "gateway-only",
}


def environments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway_env: dict[str, str]) -> dict[str, Any]:
    (tmp_path / "stack.yml").write_text(STACK)
    (tmp_path / "app.env").write_text("FROM_FILE=1\nexport QUOTED='a b'\n")
    for key in list(__import__("os").environ):
        monkeypatch.delenv(key)
    for key, value in gateway_env.items():
        monkeypatch.setenv(key, value)
    stack = load_stack(tmp_path / "stack.yml")
    spec = stack.function("iris").resolved(stack.root)
    config = GatewayConfig(state_dir=tmp_path / "state", port=18080)
    write_secret(config.state_dir, "api-key", b"k")
    local_provider, docker_provider = LocalProvider(config), DockerProvider(config, network="host")
    for provider in (local_provider, docker_provider):  # as the gateway hooks in its platform variables
        provider.credentials = lambda name: {"HYDRO_MODEL_PIN": f"{name}-pin@sha256:ab"}
    local = local_provider._environment(spec, local_secrets := tmp_path / "state" / "secrets-copy")
    docker = docker_provider._environment(spec, 45678)
    service = render_service(stack.function("iris"), stack, store_endpoint="http://127.0.0.1:7480")
    container = service["spec"]["template"]["spec"]["containers"][0]
    knative = {item["name"]: item["value"] for item in container["env"]}
    run = run_environment(spec, stack.provider.store, tmp_path / "function.json", operator=gateway_env)
    return {"local": local, "docker": docker, "knative": knative, "run": run, "local_secrets": local_secrets,
            "container": container}


def test_every_provider_gives_the_same_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = environments(tmp_path, monkeypatch, GATEWAY_ENV)
    for name in ("local", "docker"):  # what the gateway adds reaches its replicas
        assert envs[name].pop("HYDRO_MODEL_PIN") == "iris-pin@sha256:ab"
    views = {name: function_view(envs[name]) for name in ("local", "docker", "knative", "run")}
    expected = {"GREETING": "hello", "HYDRO_MAX_INFLIGHT": "7", "FROM_FILE": "1", "QUOTED": "a b",
                "HYDRO_FUNCTION_NAME": "iris", "HYDRO_STORE": "s3://models/prod",
                "AWS_ENDPOINT_URL": "http://127.0.0.1:7480", "PYTHONUNBUFFERED": "1"}
    # hydro run is the user's own process: it keeps the user's own store credentials, nothing else differs
    assert {k: views["run"].pop(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")} == {
        "AWS_ACCESS_KEY_ID": "gateway-key", "AWS_SECRET_ACCESS_KEY": "gateway-secret"}
    for name, view in views.items():
        assert view == expected, name
    # what differs is where things are, and each provider says where its secrets are
    assert envs["local"]["HYDRO_SECRETS_DIR"] == str(envs["local_secrets"])
    assert envs["docker"]["HYDRO_SECRETS_DIR"] == envs["knative"]["HYDRO_SECRETS_DIR"] == "/var/openfaas/secrets"
    # the store credentials of a cluster come from a Secret, never from the manifest
    assert envs["container"]["envFrom"] == [{"secretRef": {"name": "hydro-store"}}]


def test_no_credential_of_the_gateway_reaches_a_replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = environments(tmp_path, monkeypatch, GATEWAY_ENV)
    for name in ("local", "docker", "knative"):
        env = envs[name]
        assert "admin-token" not in env.values() and "gateway-secret" not in env.values(), name
        assert "gateway-key" not in env.values() and "SOMETHING_ELSE" not in env, name
    assert set(envs["local"]) >= {"PATH", "LANG", "HOME", "TMPDIR"}
    assert envs["local"]["HOME"] != "/root" and envs["local"]["HOME"].startswith(str(tmp_path / "state"))
    assert not set(BASE_KEYS) & set(envs["docker"]), "an image brings its own PATH and locale"


def test_read_only_store_credentials_for_replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Operator-given HYDRO_REPLICA_AWS_* reach local and docker replicas as AWS_*; the gateway's own do not."""
    env = {**GATEWAY_ENV, "HYDRO_REPLICA_AWS_ACCESS_KEY_ID": "reader",
           "HYDRO_REPLICA_AWS_SECRET_ACCESS_KEY": "ro-secret"}
    envs = environments(tmp_path, monkeypatch, env)
    for name in ("local", "docker"):
        assert envs[name]["AWS_ACCESS_KEY_ID"] == "reader" and envs[name]["AWS_SECRET_ACCESS_KEY"] == "ro-secret"
        assert not any(k.startswith("HYDRO_REPLICA_") for k in envs[name]), name
    assert "AWS_ACCESS_KEY_ID" not in envs["knative"]


def test_telemetry_settings_reach_replicas_but_not_collector_credentials() -> None:
    from hydro_serving.stack import FunctionSpec

    spec = FunctionSpec(name="f", lang="python3", handler="/x")
    env = replica_environment(spec, operator={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                              "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer collector-key",
                                              "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x=y"})
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert not any("HEADERS" in k for k in env)


def test_platform_variables_win_over_the_function() -> None:
    from hydro_serving.stack import FunctionSpec

    spec = FunctionSpec(name="f", lang="python3", handler="/x", environment={"HYDRO_ROUTER_KEY": "forged", "A": "1"})
    env = replica_environment(spec, operator={}, platform={"HYDRO_ROUTER_KEY": "real", "HYDRO_TRUSTED_KEYS": "k1"})
    assert env["HYDRO_ROUTER_KEY"] == "real" and env["HYDRO_TRUSTED_KEYS"] == "k1" and env["A"] == "1"
    assert "HYDRO_STORE" not in env  # a function without a store model gets no store settings
