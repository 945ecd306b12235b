"""Image helpers that need no engine: references, registries, the no-engine error."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydro_serving.builder.images import EngineUnavailable, connect, image_reference, is_insecure_registry, registry_of


def test_image_reference_helpers() -> None:
    assert image_reference("127.0.0.1:5000/team/iris:v1") == ("127.0.0.1:5000/team/iris", "v1")
    assert image_reference("127.0.0.1:5000/team/iris") == ("127.0.0.1:5000/team/iris", "latest")
    assert registry_of("127.0.0.1:5000/team/iris") == "127.0.0.1:5000"
    assert registry_of("hydro/iris") == "docker.io" and registry_of("ghcr.io/a/b") == "ghcr.io"
    assert is_insecure_registry("127.0.0.1:5000") and is_insecure_registry("localhost:5000")
    assert not is_insecure_registry("ghcr.io")
    assert image_reference("ghcr.io/a/b@sha256:abc") == ("ghcr.io/a/b", "sha256:abc")


def test_insecure_registries_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRO_INSECURE_REGISTRIES", "registry.lan:5000, other:80")
    assert is_insecure_registry("registry.lan:5000") and is_insecure_registry("other:80")
    assert not is_insecure_registry("registry.lan:5001")


def test_connect_without_engine_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nothing.sock'}")
    with pytest.raises(EngineUnavailable) as info:
        connect(timeout=2)
    assert info.value.message.startswith(f"no Docker engine found (DOCKER_HOST=unix://{tmp_path}")
