"""Fixtures of the model-behaviour tests: a function's runtime app, loaded in process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hydro_serving.runtime.app import create_app
from hydro_serving.runtime.config import RuntimeConfig
from hydro_serving.stack.model import FunctionSpec


@pytest.fixture
def serve() -> Iterator[Callable[..., FlaskClient]]:
    """``serve(spec_dict, ready=True)``: the function's app (loaded) and its test client; shut down at teardown."""
    apps: list[Flask] = []

    def build(spec: dict[str, Any], ready: bool = True) -> FlaskClient:
        app = create_app(FunctionSpec.from_dict(spec), RuntimeConfig(load_failure_exit_after=None))
        apps.append(app)
        client = app.test_client()
        for _ in range(6):
            reply = client.get("/_/ready?wait=10")
            if reply.status_code == 200 or (not ready and "failed to load" in reply.get_json()["error"]):
                break
        return client

    yield build
    for app in apps:
        app.extensions["hydro_runtime"].shutdown()
