"""Options declared in template.yml: a misspelt or mistyped option is a 400 naming the key, before anything starts.

Checked at every door a function comes through: stack.yml parsing (``hydro deploy``, ``build``,
``render``), the gateway's deployment API and the runtime's loader. The CLI runs as a child
process and the gateway is a real one on 127.0.0.1 (tests/gateway_fixtures.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.errors import ConfigError, HydroError, StackError
from hydro_serving.runtime.loader import load_function
from hydro_serving.stack import function_from_dict, load_stack, parse_stack
from hydro_serving.templates import get_template, load_template
from tests.conftest import free_port

STACK = """\
version: "1.0"
provider: {{name: hydro, gateway: "http://127.0.0.1:{port}"}}
functions:
  iris:
    lang: sklearn
    model: ./model
    options:
      method: predict_proba
      {key}: {value}
"""


def stack_text(key: str = "methd", value: str = "predict") -> str:
    return STACK.format(key=key, value=value, port=free_port())


def hydro(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, with no credentials or gateway of the developer's."""
    env = {**os.environ, "HYDRO_HOME": str(cwd / ".hydro-home")}
    env.pop("HYDRO_GATEWAY", None)
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False, env=env)


# ---- stack.yml -------------------------------------------------------------------------------------


def test_a_misspelt_option_names_the_key_the_template_and_the_line() -> None:
    with pytest.raises(StackError) as caught:
        parse_stack(stack_text(), "stack.yml", env={})
    err = caught.value
    assert err.status == 400
    assert err.field == "functions.iris.options.methd"
    assert "unknown option 'methd' for lang sklearn" in err.message and "method, outputs" in err.message
    assert err.details == {"line": 9}


def test_a_mistyped_option_names_the_key() -> None:
    text = STACK.format(key="skops_trusted", value="not-a-list", port=1).replace("lang: sklearn", "lang: sklearn")
    with pytest.raises(StackError) as caught:
        parse_stack(text, "stack.yml", env={})
    assert caught.value.field == "functions.iris.options.skops_trusted"
    assert "is not of type 'array'" in caught.value.message


def test_a_nested_option_value_is_checked_at_its_own_path() -> None:
    text = STACK.format(key="threads", value="0", port=1).replace("lang: sklearn", "lang: onnx")
    with pytest.raises(StackError) as caught:
        parse_stack(text.replace("      method: predict_proba\n", ""), "stack.yml", env={})
    assert caught.value.field == "functions.iris.options.threads"


def test_every_shipped_template_option_and_the_documented_ones_parse() -> None:
    good = {
        "sklearn": {"method": "predict_proba", "outputs": {"p": "proba:1"}, "skops_trusted": ["x.Y"]},
        "onnx": {"outputs": {"p": "probabilities:1"}, "threads": 2},
        "xgboost": {"method": "predict", "classes": ["a", "b"], "threads": 1, "outputs": {"l": "label"}},
        "lightgbm": {"method": "predict", "classes": [0, 1], "threads": 1},
        "tensorflow": {"signature_name": "serving_default", "threads": 1, "outputs": {"y": "output_0"}},
        "spark": {"outputs": ["prediction"], "master": "local[1]", "driver_memory": "512m", "spark_conf": {}},
        "statsmodels": {"outputs": ["mean", "mean_ci_lower"], "alpha": 0.1},
        "router": {"breaker_failures": 2, "prewarm": False},
    }
    for lang, options in good.items():
        assert get_template(lang).option_errors(options) == [], lang
        assert get_template(lang).option_errors({"colour": "blue"}), f"{lang} takes any key"


def test_python3_functions_take_any_options() -> None:
    """A custom function reads its own options: its template declares no schema."""
    spec = function_from_dict({"name": "f", "lang": "python3", "options": {"anything": [1, 2]}})
    assert get_template("python3").option_errors(spec.options) == []


def test_a_lang_this_machine_does_not_have_is_left_to_the_machine_that_has_it() -> None:
    text = stack_text().replace("lang: sklearn", "lang: my-team-template")
    stack = parse_stack(text, "stack.yml", env={})
    assert stack.functions["iris"].options["methd"] == "predict"


def test_a_router_option_typo_is_refused_at_parse() -> None:
    text = """\
functions:
  a: {lang: python3, handler: ./a}
  pipe:
    lang: router
    chain: [a]
    options: {breaker_failure: 3}
"""
    with pytest.raises(StackError) as caught:
        parse_stack(text, "stack.yml", env={})
    assert caught.value.field == "functions.pipe.options.breaker_failure"
    assert "breaker_failures" in caught.value.message


def test_a_template_with_a_broken_option_schema_is_refused_by_the_registry(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    base = "name: bad\nkind: model\nentrypoint: handler:Model\n"
    (folder / "template.yml").write_text(base + "options: {type: array}\n")
    with pytest.raises(ConfigError, match="JSON Schema of an object"):
        load_template(folder)
    (folder / "template.yml").write_text(base + "options: {properties: {x: {type: colour}}}\n")
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        load_template(folder)


# ---- the CLI: deploy, build and render refuse before touching anything ------------------------------


@pytest.mark.parametrize("command", [
    ["render", "knative"],
    ["build", "--shrinkwrap"],
    ["deploy"],
])
def test_cli_refuses_a_misspelt_option_before_doing_anything(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "stack.yml").write_text(stack_text())
    done = hydro(*command, "-f", "stack.yml", cwd=tmp_path)
    assert done.returncode != 0, done.stdout
    assert "functions.iris.options.methd" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "build").exists()  # nothing written
    assert "deployed" not in done.stdout


def test_load_stack_reads_options_the_template_declares(tmp_path: Path) -> None:
    (tmp_path / "stack.yml").write_text(stack_text(key="outputs", value="{p: 'proba:1'}"))
    spec = load_stack(tmp_path / "stack.yml").functions["iris"]
    assert spec.options == {"method": "predict_proba", "outputs": {"p": "proba:1"}}


# ---- the gateway ----------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"methd": "predict"}, {"method": "predict", "threads": 2}])
def test_gateway_refuses_a_misspelt_option_naming_it(shared_gateway: Any, options: dict[str, Any],
                                                     tmp_path: Path) -> None:
    body = {"service": "typo", "hydro": {"lang": "sklearn", "model": str(tmp_path), "options": options}}
    for method in ("POST", "PUT"):
        status, out = shared_gateway.admin(method, "/system/functions", body)
        assert status == 400, out
        bad = next(iter(k for k in options if k not in ("method",)))
        assert out["field"] == f"functions.typo.options.{bad}", out
        assert "Traceback" not in str(out)
    status, listed = shared_gateway.admin("GET", "/system/functions")
    assert status == 200 and all(f["name"] != "typo" for f in listed)


# ---- the runtime: the loader refuses before it fetches a model --------------------------------------


def test_runtime_refuses_a_misspelt_option_before_fetching_the_model(tmp_path: Path) -> None:
    """The model reference points at a store that does not exist: the option error must come first."""
    spec = function_from_dict({"name": "r", "lang": "sklearn", "model": "iris:1", "options": {"methd": "x"}})
    with pytest.raises(HydroError) as caught:
        load_function(spec)
    assert caught.value.status == 400
    assert caught.value.field == "options.methd"
