"""Getting the demo's models into the store and the demo's pipeline onto a gateway.

``hydro demo`` is the first command a new user runs, so everything here is idempotent: models
already in the store are reused (``retrain`` forces new versions), and deploying an unchanged
stack is a no-op on the gateway. The model names come from the stack's ``model:`` references,
so editing stack.yml is enough to rename them.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hydro_serving.errors import ConfigError, NotFound
from hydro_serving.stack import FunctionSpec, Stack

# The template of each classifier, and the file train_all writes for it.
MODEL_FILES = {"sklearn": "model.joblib", "onnx": "model.onnx"}
TRAINED_DIRS = {"sklearn": "pm-classifier", "onnx": "pm-classifier-gb"}


@dataclass
class ModelsReport:
    """What :func:`ensure_models` did: refs reused, refs uploaded, and the training scores if it trained."""

    reused: list[str]
    uploaded: list[str]
    scores: dict[str, Any]
    seconds: float


def demo_model_functions(stack: Stack) -> list[FunctionSpec]:
    """The stack's functions whose model comes from the store and that the demo knows how to train."""
    out = [fn for fn in stack.functions.values() if fn.model and not fn.model_is_local and fn.lang in MODEL_FILES]
    if not out:
        raise ConfigError(f"{stack.path} declares no sklearn or onnx function with a store model; "
                          "the demo needs the repository's stack.yml", field="functions")
    return out


def ensure_models(store: Any, stack: Stack, retrain: bool = False,
                  say: Callable[[str], None] = lambda _line: None,
                  train: Callable[[Path], Any] | None = None) -> ModelsReport:
    """Train and upload the classifiers the store lacks (all of them with ``retrain``).

    ``train(out_dir) -> TrainResult`` defaults to :func:`hydro_serving.demo.training.train_all`;
    tests pass one that returns models they trained already, to pay for training once.
    """
    from hydro_serving.store import parse_ref

    started = time.monotonic()
    missing: list[FunctionSpec] = []
    reused: list[str] = []
    for fn in demo_model_functions(stack):
        assert fn.model is not None
        try:
            manifest = store.get_manifest(fn.model)
        except NotFound:
            missing.append(fn)
            continue
        if retrain:
            missing.append(fn)
        else:
            reused.append(manifest.ref)
    if not missing:
        return ModelsReport(reused, [], {}, time.monotonic() - started)

    if train is None:
        from hydro_serving.demo.training import train_all as train

    say("training the product-matching classifiers on generated listing pairs ...")
    uploaded: list[str] = []
    scores: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hydro-demo-") as tmp:
        result = train(Path(tmp))
        trained = {"sklearn": (result.sklearn_dir, result.sklearn_metrics),
                   "onnx": (result.onnx_dir, result.onnx_metrics)}
        for fn in missing:
            folder, metrics = trained[fn.lang]
            scores[fn.name] = metrics
            metadata = json.loads((folder / "metrics.json").read_text())
            metadata["trained_by"] = "hydro demo (hydro_serving.demo.training.train_all)"
            manifest = store.upload(folder / MODEL_FILES[fn.lang], parse_ref(fn.model).name, framework=fn.lang,
                                    signature=folder / "signature.json",
                                    training_data=folder / "training-data.csv", metadata=metadata)
            uploaded.append(manifest.ref)
    return ModelsReport(reused, uploaded, scores, time.monotonic() - started)


def with_store(stack: Stack, store_url: str) -> Stack:
    """The stack with ``HYDRO_STORE`` set on its store-model functions, so their replicas read the
    store the demo uploaded to even when the gateway was started with another environment."""
    functions = {}
    for name, fn in stack.functions.items():
        if fn.model and not fn.model_is_local and "HYDRO_STORE" not in fn.environment:
            fn = replace(fn, environment={**fn.environment, "HYDRO_STORE": store_url})
        functions[name] = fn
    return replace(stack, functions=functions)


def pipeline_name(stack: Stack) -> str:
    """The router function of the stack (the demo's entry point)."""
    routers = [fn.name for fn in stack.functions.values() if fn.is_router]
    if not routers:
        raise ConfigError(f"{stack.path} declares no router function to call", field="functions")
    return routers[0]


def check_answer(answer: Any) -> str | None:
    """Why the seed request's answer is wrong, or None: it must be no match, then match."""
    if not isinstance(answer, list) or len(answer) != 2 or not all(isinstance(a, dict) for a in answer):
        return f"expected a list of two records, got {json.dumps(answer)[:200]}"
    if [a.get("match") for a in answer] != [False, True]:
        return f"expected no match then match, got {json.dumps(answer)}"
    return None
