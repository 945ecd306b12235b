"""The sdk's ModelHandler and the runtime's adapters, in process: what the base class does before the subclass runs.

Templates here are written by the test into a folder on ``HYDRO_TEMPLATES``, so what the base class
reads (``model_patterns``, the ``options`` schema) is visibly the template's own declaration.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hydro_serving.errors import ConfigError, HydroError, ValidationError
from hydro_serving.runtime.adapters import FunctionAdapter, ModelAdapter, RouterAdapter, adapter_class
from hydro_serving.runtime.loader import load_function
from hydro_serving.sdk import FunctionHandler, InvocationContext, LoadContext, ModelHandler
from hydro_serving.stack import function_from_dict
from hydro_serving.templates import get_template

TEMPLATE = """\
name: echo-model
kind: model
entrypoint: handler:EchoModel
model_patterns: ["*.weights"]
options:
  additionalProperties: false
  properties:
    scale: {type: number}
"""

HANDLER = '''\
from hydro_serving.errors import ValidationError
from hydro_serving.sdk import ModelHandler


class EchoModel(ModelHandler):
    def load_model(self, path, context):
        self.path = path
        self.scale = float(context.options.get("scale", 1.0))
        self.weight = float(path.read_text())

    def predict(self, payload):
        if not isinstance(payload, list):
            raise ValidationError("send a list of numbers", field="$")
        return [x * self.weight * self.scale for x in payload]
'''


@pytest.fixture
def templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "templates"
    folder = root / "echo-model"
    folder.mkdir(parents=True)
    (folder / "template.yml").write_text(TEMPLATE)
    (folder / "handler.py").write_text(HANDLER)
    monkeypatch.setenv("HYDRO_TEMPLATES", str(root))
    return root


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.weights").write_text("2")
    (folder / "README.txt").write_text("not the model")
    return folder


def spec(model: Path | None, **options: Any) -> Any:
    data: dict[str, Any] = {"name": "echo", "lang": "echo-model", "options": options}
    if model is not None:
        data["model"] = str(model)
    return function_from_dict(data)


def test_the_base_class_finds_the_file_the_template_declares_and_checks_options(templates: Path,
                                                                              model_dir: Path) -> None:
    loaded = load_function(spec(model_dir, scale=3))
    assert isinstance(loaded.adapter, ModelAdapter)
    assert loaded.handler.path.name == "w.weights"  # the declared pattern, not README.txt
    assert loaded.handler.predict([1, 2]) == [6.0, 12.0]


def test_a_misspelt_option_fails_before_load_model_runs(templates: Path, model_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_function(spec(model_dir, scael=3))
    assert caught.value.field == "options.scael" and "options: scale" in caught.value.message


def test_no_model_or_an_ambiguous_model_folder_names_the_model_field(templates: Path, model_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_function(spec(None))
    assert caught.value.field == "model" and "needs 'model'" in caught.value.message
    (model_dir / "other.weights").write_text("5")
    with pytest.raises(ConfigError) as caught:
        load_function(spec(model_dir))
    assert caught.value.field == "model" and "several model files" in caught.value.message


def test_the_defaults_serve_v2_and_batches_through_predict(templates: Path, model_dir: Path) -> None:
    handler = load_function(spec(model_dir)).handler
    with pytest.raises(ValidationError):  # V2 tensors reach predict as a columnar object, which this one refuses
        handler.infer_v2({"x": np.array([1.0, 2.0])})
    results = handler.predict_batch([[1], "hostile", [3]])
    assert results[0] == [2.0] and results[2] == [6.0]
    assert isinstance(results[1], ValidationError)  # one caller's bad payload fails only its own request


def test_default_v2_hands_predict_a_columnar_object() -> None:
    class Columns(ModelHandler):
        def predict(self, payload: Any) -> Any:
            return sorted(payload)

    assert Columns().infer_v2({"b": np.array([1]), "a": np.array([2])}) == {"predict": ["a", "b"]}


def test_a_hostile_entrypoint_that_is_not_an_sdk_class_is_refused_before_it_is_built(templates: Path,
                                                                                     model_dir: Path,
                                                                                     tmp_path: Path) -> None:
    marker = tmp_path / "constructed"
    folder = templates / "hostile-model"  # its own name: an imported template module is cached by name
    folder.mkdir()
    (folder / "template.yml").write_text(TEMPLATE.replace("echo-model", "hostile-model"))
    (folder / "handler.py").write_text(textwrap.dedent(f'''\
        class EchoModel:
            def __init__(self):
                open({str(marker)!r}, "w").write("built")
            def load(self, model_dir, context):
                pass
            def predict(self, payload):
                return payload
        '''))
    with pytest.raises(ConfigError) as caught:
        load_function(function_from_dict({"name": "h", "lang": "hostile-model", "model": str(model_dir)}))
    assert caught.value.field == "entrypoint" and "ModelHandler" in caught.value.message
    assert not marker.exists()


def test_one_adapter_per_kind() -> None:
    assert adapter_class(get_template("sklearn")) is ModelAdapter
    assert adapter_class(get_template("python3")) is FunctionAdapter
    assert adapter_class(get_template("router")) is RouterAdapter
    assert ModelAdapter.inline and not FunctionAdapter.inline
    assert FunctionAdapter.accepts_raw and not ModelAdapter.accepts_raw
    assert FunctionAdapter.needs_handler_dir and not RouterAdapter.needs_handler_dir


def test_a_function_adapter_passes_the_context_and_shapes_v2_outputs() -> None:
    class Echo(FunctionHandler):
        def handle(self, payload: Any, context: InvocationContext) -> Any:
            context.response_headers["X-Seen"] = context.headers.get("X-In", "")
            return payload

    fn = function_from_dict({"name": "f", "lang": "python3"})
    context = InvocationContext(spec=fn, headers={"X-In": "1"})
    adapter = FunctionAdapter(Echo())
    assert adapter.call({"a": 1}, context)() == {"a": 1}
    assert context.response_headers == {"X-Seen": "1"}
    assert adapter.call_v2({"a": np.array([1, 2])}, context)() == {"a": [1, 2]}
    assert adapter.predict_batch is None and adapter.signature is None


def test_a_function_whose_v2_answer_is_nothing_is_an_error_not_an_empty_tensor() -> None:
    class Nothing(FunctionHandler):
        def handle(self, payload: Any, context: InvocationContext) -> Any:
            return None

    fn = function_from_dict({"name": "f", "lang": "python3"})
    with pytest.raises(HydroError, match="nothing"):
        FunctionAdapter(Nothing()).call_v2({}, InvocationContext(spec=fn, headers={}))()


def test_a_model_signature_is_only_a_signature() -> None:
    class Liar(ModelHandler):
        signature = "inputs: everything"  # type: ignore[assignment]

    assert ModelAdapter(Liar()).signature is None


def test_load_context_without_a_template_finds_it_by_lang(tmp_path: Path) -> None:
    """Loading a handler by hand (as tests and notebooks do): the base class looks the template up."""
    handler = ModelHandler()
    with pytest.raises(ConfigError) as caught:
        handler.load(tmp_path, LoadContext(spec=function_from_dict({"name": "s", "lang": "sklearn",
                                                                      "options": {"colour": 1}}),
                                           model_dir=tmp_path, handler_dir=None))
    assert caught.value.field == "options.colour"
