"""A handler's lifecycle hooks in a real runtime process: its metrics on the replica's /metrics, close() at exit.

The template is written by the test (found through ``HYDRO_TEMPLATES``) so that what it does at
load and at close is observable from outside the process: a counter registered in the runtime's
registry, and a marker file written by ``close()``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.conftest import free_port
from tests.runtime.helpers import base_env, get, post, start_runtime

TEMPLATE_YML = """\
name: lifecycle
kind: model
entrypoint: handler:Lifecycle
"""

HANDLER = '''\
import os

from prometheus_client import Counter

from hydro_serving.sdk import ModelHandler


class Lifecycle(ModelHandler):
    def load(self, model_dir, context):  # no model file: the whole load is overridden
        registry = context.metrics_registry
        assert registry is not None, "the runtime passes its registry"
        self.calls = Counter("hydro_test_lifecycle_calls", "predict calls", registry=registry)

    def predict(self, payload):
        self.calls.inc()
        return {"ok": True}

    def close(self):
        with open(os.environ["TEST_CLOSED"], "w") as fh:
            fh.write(str(os.getpid()))
'''


def test_handler_metrics_are_served_and_close_runs_at_shutdown(tmp_path: Path) -> None:
    templates = tmp_path / "templates" / "lifecycle"
    templates.mkdir(parents=True)
    (templates / "template.yml").write_text(TEMPLATE_YML)
    (templates / "handler.py").write_text(HANDLER)
    closed = tmp_path / "closed"
    env = base_env(tmp_path / "home", {"HYDRO_TEMPLATES": str(templates.parent), "TEST_CLOSED": str(closed)})
    port = free_port()
    proc = start_runtime({"name": "life", "lang": "lifecycle"}, port, tmp_path, env)
    try:
        proc.wait_ready()
        assert post(port, "/", {"x": 1}).status == 200
        metrics = get(port, "/metrics").body.decode()
        assert "hydro_test_lifecycle_calls_total 1.0" in metrics
        assert 'hydro_function_ready{function="life"} 1.0' in metrics  # one registry, both kinds of series
        os.killpg(proc.proc.pid, signal.SIGTERM)
        assert proc.proc.wait(timeout=30) == 0, proc.output()
        assert closed.exists(), f"close() did not run:\n{proc.output()}"
    finally:
        proc.stop()


GATED_HANDLER = '''\
import os
import time

from hydro_serving.sdk import ModelHandler


class Lifecycle(ModelHandler):
    def load(self, model_dir, context):
        deadline = time.monotonic() + 60
        while not os.path.exists(os.environ["TEST_GATE"]) and time.monotonic() < deadline:
            time.sleep(0.01)

    def predict(self, payload):
        return payload
'''


def test_ready_wait_answers_when_the_load_completes(tmp_path: Path) -> None:
    """``/_/ready?wait=S`` holds the probe until the model is loaded (a supervisor needs no poll interval)."""
    import threading

    templates = tmp_path / "templates" / "lifecycle"
    templates.mkdir(parents=True)
    (templates / "template.yml").write_text(TEMPLATE_YML)
    (templates / "handler.py").write_text(GATED_HANDLER)
    gate = tmp_path / "gate"
    env = base_env(tmp_path / "home", {"HYDRO_TEMPLATES": str(templates.parent), "TEST_GATE": str(gate)})
    port = free_port()
    proc = start_runtime({"name": "gated", "lang": "lifecycle"}, port, tmp_path, env)
    try:
        proc.wait_up()
        assert get(port, "/_/ready?wait=0").status == 503
        assert get(port, "/_/ready?wait=soon").status == 400
        answers: list[int] = []
        waiter = threading.Thread(target=lambda: answers.append(get(port, "/_/ready?wait=10").status))
        waiter.start()
        gate.touch()
        waiter.join(30)
        assert answers == [200]
    finally:
        gate.touch()
        proc.stop()
