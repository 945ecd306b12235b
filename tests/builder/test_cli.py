"""`hydro new`, `hydro build`, `hydro push`, `hydro templates` as a user runs them: the real `hydro` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hydro_serving.stack import FunctionSpec, load_stack


def hydro(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process (what a user's shell does)."""
    return subprocess.run([sys.executable, "-m", "hydro_serving.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, **(env or {})})


def test_new_then_shrinkwrap_from_a_fresh_directory(tmp_path: Path, builder_templates: Path) -> None:
    out = hydro("new", "hello", "--lang", "python3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "created stack.yml" in out.stdout
    handler = (tmp_path / "hello" / "handler.py").read_text()
    assert "def handle(payload: Any, context: Any) -> Any:" in handler
    assert (tmp_path / "hello" / "requirements.txt").read_text() == ""
    spec = load_stack(tmp_path / "stack.yml").function("hello")
    assert spec.lang == "python3" and spec.handler == "./hello"

    out = hydro("build", "--shrinkwrap", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ctx = tmp_path / "build" / "hello"
    assert "wrote build/hello/" in out.stdout
    assert FunctionSpec.from_dict(json.loads((ctx / "function.json").read_text())).handler == "/home/app/function"
    assert (ctx / "function" / "handler.py").read_text() == handler and (ctx / "Dockerfile").is_file()

    # the scaffolded handler really works: import it and call it the way the runtime does
    namespace: dict[str, object] = {}
    exec(compile(handler, "handler.py", "exec"), namespace)
    assert namespace["handle"]({"a": 1}, None) == {"echo": {"a": 1}}


def test_new_appends_without_destroying_comments(tmp_path: Path, builder_templates: Path) -> None:
    original = """\
# my project
version: 1.0
provider:
  name: hydro   # the local gateway
functions:
    # the first function
    first:
        lang: python3
        handler: ./first   # keep this comment
configuration:
  copy: [./shared]
"""
    (tmp_path / "first").mkdir()
    (tmp_path / "stack.yml").write_text(original)
    # 'configuration' is not ours: parsing fails, the file is still edited in place as text
    out = hydro("new", "second", "--lang", "sklearn", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "stack.yml").read_text()
    assert text.startswith(original.split("configuration:")[0])
    assert "    second:\n        lang: sklearn\n" in text  # indented like its sibling
    assert "        model: ./second/model.joblib\n" in text and "# the trained model" in text
    assert text.endswith("configuration:\n  copy: [./shared]\n")
    assert (tmp_path / "second").is_dir()


def test_new_on_a_valid_stack_keeps_it_valid_and_adds_a_router(tmp_path: Path, builder_templates: Path) -> None:
    for name, lang in (("a", "python3"), ("b", "sklearn")):
        assert hydro("new", name, "--lang", lang, cwd=tmp_path).returncode == 0
    (tmp_path / "stack.yml").write_text((tmp_path / "stack.yml").read_text() + "# trailing comment\n")
    out = hydro("new", "pipe", "--lang", "router", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    stack = load_stack(tmp_path / "stack.yml")
    assert list(stack.functions) == ["a", "b", "pipe"]
    assert [s.functions for s in stack.function("pipe").chain] == [["a"], ["b"]]
    assert "# trailing comment" in (tmp_path / "stack.yml").read_text()
    assert not (tmp_path / "pipe").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["new", "Bad_Name", "--lang", "python3"], r"must be a DNS label"),
    (["new", "x", "--lang", "pyhton3"], r"unknown template 'pyhton3' \(known templates: [a-z0-9, ]*python3, router"),
    (["new", "r", "--lang", "router"], r"create the functions first"),
])
def test_new_refuses_bad_input(tmp_path: Path, builder_templates: Path, args: list[str], message: str) -> None:
    out = hydro(*args, cwd=tmp_path)
    assert out.returncode == 1 and re.search(message, out.stderr) and "Traceback" not in out.stderr
    assert not (tmp_path / "stack.yml").exists()


def test_new_refuses_an_existing_name_and_leaves_the_file_alone(tmp_path: Path, builder_templates: Path) -> None:
    assert hydro("new", "dup", "--lang", "python3", cwd=tmp_path).returncode == 0
    before = (tmp_path / "stack.yml").read_text()
    out = hydro("new", "dup", "--lang", "sklearn", cwd=tmp_path)
    assert out.returncode == 1 and "function 'dup' already exists" in out.stderr
    assert (tmp_path / "stack.yml").read_text() == before


def test_build_without_engine_fails_and_lists_the_contexts(tmp_path: Path, builder_templates: Path) -> None:
    assert hydro("new", "hello", "--lang", "python3", cwd=tmp_path).returncode == 0
    dead = tmp_path / "no-engine.sock"
    out = hydro("build", cwd=tmp_path, env={"DOCKER_HOST": f"unix://{dead}"})
    assert out.returncode == 1
    assert "no Docker engine found (DOCKER_HOST=unix://" in out.stderr
    assert "build/hello/" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "build" / "hello" / "Dockerfile").is_file()


def test_push_without_engine_fails_clearly(tmp_path: Path, builder_templates: Path) -> None:
    assert hydro("new", "hello", "--lang", "python3", cwd=tmp_path).returncode == 0
    out = hydro("push", cwd=tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"})
    assert out.returncode == 1 and "no Docker engine found" in out.stderr


def test_build_with_a_broken_stack_names_the_key(tmp_path: Path, builder_templates: Path) -> None:
    (tmp_path / "stack.yml").write_text("version: 1.0\nfunctions:\n  x:\n    lang: python3\n    handlr: ./x\n")
    out = hydro("build", "--shrinkwrap", cwd=tmp_path)
    assert out.returncode == 1 and "functions.x.handlr" in out.stderr and "unknown key" in out.stderr
    out = hydro("build", "--shrinkwrap", "-f", "missing.yml", cwd=tmp_path)
    assert out.returncode == 1 and "no stack file" in out.stderr


def test_templates_lists_one_line_each(tmp_path: Path, builder_templates: Path) -> None:
    out = hydro("templates", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in out.stdout.strip().splitlines()}
    # ours (HYDRO_TEMPLATES wins over the repository's templates of the same name)
    assert rows["python3"] == ["function", "test function template"]
    assert rows["router"] == ["router", "test router template"]
    assert rows["sklearn"] == ["model", "test model template"]


def test_templates_reports_a_broken_template_and_still_lists_the_rest(tmp_path: Path, builder_templates: Path) -> None:
    (builder_templates / "bad").mkdir()
    (builder_templates / "bad" / "template.yml").write_text("name: bad\nkind: model\nentrypiont: h:M\n")
    out = hydro("templates", cwd=tmp_path)
    assert out.returncode == 1
    assert "python3" in out.stdout and "broken template:" in out.stderr and "unknown key 'entrypiont'" in out.stderr


@pytest.mark.parametrize(("lang", "model"), [("sklearn", "./fn/model.joblib"), ("onnx", "./fn/model.onnx"),
                                             ("spark", "./fn/model"), ("xgboost", "./fn/model.ubj")])
def test_new_with_the_shipped_model_templates_points_at_a_loadable_model_path(tmp_path: Path, lang: str,
                                                                              model: str) -> None:
    """A Spark model is a folder (its pattern is the ``_SUCCESS`` marker), the others are files."""
    out = hydro("new", "fn", "--lang", lang, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert load_stack(tmp_path / "stack.yml").function("fn").model == model
