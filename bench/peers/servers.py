"""How each peer serves the iris model: requirements, files it needs, argv, request, readiness.

Each peer runs with its own defaults except where a default cannot work on this machine; every
such deviation is written into ``notes`` and ends up in the results JSON, so a reader can tell
what ran. The model file is the same joblib file the other cases serve (scikit-learn pinned to the
host's version in every venv); MLflow gets it wrapped into its own model format by its own API.
"""

from __future__ import annotations

import importlib.metadata
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROW = [5.1, 3.5, 1.4, 0.2]


def host_pins() -> list[str]:
    """scikit-learn/joblib/numpy at the host's versions, so the pickled model loads the same everywhere."""
    return [f"{p}=={importlib.metadata.version(p)}" for p in ("scikit-learn", "joblib")]


@dataclass(frozen=True)
class Launch:
    """A prepared peer: the command, its environment additions, and where to send load."""

    argv: list[str]
    cwd: Path
    url: str
    body: bytes
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Peer:
    name: str
    packages: list[str]
    version_of: list[str]
    prepare: Callable[[Path, Path, Path, Callable[[], int]], Launch]  # python, workdir, model, free_port

    def requirements(self) -> list[str]:
        return [*self.packages, *host_pins()]


def _mlserver(python: Path, work: Path, model: Path, port: Callable[[], int]) -> Launch:
    http = port()
    model_dir = work / "iris"
    model_dir.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http, "grpc_port": port(), "metrics_port": port(),
        "parallel_workers": 0, "debug": False,
    }))
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": "iris", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": str(model)},
    }))
    body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]}
    return Launch([str(python.parent / "mlserver"), "start", str(work)], work,
                  f"http://127.0.0.1:{http}/v2/models/iris/infer", json.dumps(body).encode(),
                  f"http://127.0.0.1:{http}/v2/models/iris/ready",
                  notes=["parallel_workers: 0 (its default process pool crashes with recent uvloop; "
                         "inference runs in the server's event loop)"])


BENTO_SERVICE = '''
"""The iris model as a BentoML service (written by the benchmark suite)."""
import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1)
class Iris:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)
'''


def _bentoml(python: Path, work: Path, model: Path, port: Callable[[], int]) -> Launch:
    http = port()
    work.mkdir(parents=True, exist_ok=True)
    (work / "service.py").write_text(textwrap.dedent(BENTO_SERVICE))
    return Launch([str(python.parent / "bentoml"), "serve", "service:Iris", "--host", "127.0.0.1",
                   "--port", str(http)], work, f"http://127.0.0.1:{http}/predict",
                  json.dumps({"x": [ROW]}).encode(), f"http://127.0.0.1:{http}/readyz",
                  env={"BENCH_MODEL": str(model), "BENTOML_HOME": str(work / "bentoml-home"),
                       "BENTOML_DO_NOT_TRACK": "true"},
                  notes=["@bentoml.service(workers=1), the default"])


KSERVE_SERVER = '''
"""The iris model as a KServe custom model (V1 protocol), written by the benchmark suite."""
import os

import joblib
import kserve
import numpy as np


class Iris(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model = None
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(os.environ["BENCH_MODEL"])
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        return {"predictions": self.model.predict(np.asarray(payload["instances"])).tolist()}


if __name__ == "__main__":
    kserve.ModelServer().start([Iris("iris")])
'''


def _kserve(python: Path, work: Path, model: Path, port: Callable[[], int]) -> Launch:
    http = port()
    work.mkdir(parents=True, exist_ok=True)
    (work / "server.py").write_text(textwrap.dedent(KSERVE_SERVER))
    return Launch([str(python), "server.py", "--http_port", str(http), "--grpc_port", str(port()),
                   "--enable_grpc", "false"], work, f"http://127.0.0.1:{http}/v1/models/iris:predict",
                  json.dumps({"instances": [ROW]}).encode(), f"http://127.0.0.1:{http}/v1/models/iris",
                  env={"BENCH_MODEL": str(model)},
                  notes=["kserve.Model subclass with joblib + predict (KServe's sklearnserver is not on PyPI); "
                         "gRPC disabled; one worker (default)"])


MLFLOW_SAVE = """
import sys, joblib, mlflow.sklearn
mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2])
"""


def _mlflow(python: Path, work: Path, model: Path, port: Callable[[], int]) -> Launch:
    import shutil
    import subprocess

    http = port()
    work.mkdir(parents=True, exist_ok=True)
    saved = work / "mlflow-model"
    if saved.exists():
        shutil.rmtree(saved)
    subprocess.run([str(python), "-c", MLFLOW_SAVE, str(model), str(saved)], check=True, capture_output=True,
                   timeout=300, cwd=work)
    return Launch([str(python.parent / "mlflow"), "models", "serve", "-m", str(saved), "-h", "127.0.0.1",
                   "-p", str(http), "--env-manager", "local"], work, f"http://127.0.0.1:{http}/invocations",
                  json.dumps({"inputs": [ROW]}).encode(), f"http://127.0.0.1:{http}/ping",
                  env={"MLFLOW_TRACKING_URI": (work / "mlruns").as_uri()},
                  notes=["mlflow models serve --env-manager local (its default worker count)"])


PEERS: list[Peer] = [
    Peer("mlserver", ["mlserver", "mlserver-sklearn"], ["mlserver", "mlserver-sklearn", "uvloop"], _mlserver),
    Peer("bentoml", ["bentoml"], ["bentoml"], _bentoml),
    Peer("kserve", ["kserve"], ["kserve"], _kserve),
    Peer("mlflow", ["mlflow"], ["mlflow", "mlflow-skinny"], _mlflow),
]
