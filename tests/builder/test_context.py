"""Build contexts are complete, read back from disk, and never contain files from outside the project."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from hydro_serving.builder.context import build_contexts, read_build_info
from hydro_serving.builder.scope import OutOfScope
from hydro_serving.errors import ConfigError, StackError
from hydro_serving.stack import FunctionSpec, load_stack
from tests.builder.conftest import write_template

STACK = """\
version: 1.0
provider:
  name: hydro
functions:
  echo:
    lang: python3
    handler: ./echo
    environment: {GREETING: hi}
    build_args: {EXTRA: "1"}
  iris:
    lang: sklearn
    model: ./models/iris.joblib
    image: registry.example:5000/team/iris:v1
    signature:
      inputs: [{name: x, dtype: double, shape: [-1, 4]}]
      outputs: [{name: y, dtype: int64, shape: [-1]}]
  remote:
    lang: sklearn
    model: iris-model:production
  pipeline:
    lang: router
    chain: [echo, iris]
  prebuilt:
    lang: python3
    handler: ./echo
    image: someone/else:1
    skip_build: true
"""


@pytest.fixture
def project(tmp_path: Path, builder_templates: Path, iris_model_file: Path) -> Path:
    root = tmp_path / "proj"
    (root / "echo").mkdir(parents=True)
    (root / "echo" / "handler.py").write_text("def handle(payload, context):\n    return payload\n")
    (root / "echo" / "requirements.txt").write_text("requests==2.32.3\n")
    (root / "echo" / "lib").mkdir()
    (root / "echo" / "lib" / "util.py").write_text("X = 1\n")
    (root / "echo" / "__pycache__").mkdir()
    (root / "echo" / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    (root / "models").mkdir()
    (root / "models" / "iris.joblib").write_bytes(iris_model_file.read_bytes())
    (root / "stack.yml").write_text(STACK)
    return root


def test_every_context_is_complete(project: Path) -> None:
    contexts = build_contexts(load_stack(project / "stack.yml"))
    assert set(contexts) == {"echo", "iris", "remote", "pipeline"}  # prebuilt has skip_build
    for name, ctx in contexts.items():
        assert ctx == project / "build" / name
        dockerfile = (ctx / "Dockerfile").read_text()
        assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile and "FROM ${BASE_IMAGE}" in dockerfile
        assert "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile and "/_/ready" in dockerfile
        assert "EXPOSE 8080" in dockerfile and "hydro_serving.runtime" in dockerfile
        assert "AWS_SECRET_ACCESS_KEY=" not in dockerfile and "HYDRO_STORE=" not in dockerfile
        spec = FunctionSpec.from_dict(json.loads((ctx / "function.json").read_text()))
        assert spec.name == name
        # the runtime wheel: a real zip with the package, the templates and dependency metadata
        reqs = ctx / "requirements"
        wheels = list(reqs.glob("hydro_serving-*-py3-none-any.whl"))
        assert len(wheels) == 1
        with zipfile.ZipFile(wheels[0]) as zf:
            names = set(zf.namelist())
            assert "hydro_serving/__init__.py" in names and "hydro_serving/stack/schema.json" in names
            metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
            meta = zf.read(metadata).decode()
            assert "Requires-Dist: flask" in meta and "Provides-Extra: sklearn" in meta
            assert any(n.endswith(".dist-info/RECORD") for n in names)
        hydro_req = (reqs / "hydro.txt").read_text().strip()
        assert hydro_req == f"/tmp/requirements/{wheels[0].name}" + ("[sklearn]" if "sklearn" in spec.lang else "")
        info = read_build_info(ctx)
        assert info["function"] == name and info["build_args"]["BASE_IMAGE"] == "python:3.11-slim"
        assert (ctx / "template" / spec.lang / "template.yml").is_file()
        assert (ctx / "template" / spec.lang / "handler.py").is_file()


def test_python_function_handler_and_requirements(project: Path) -> None:
    ctx = build_contexts(load_stack(project / "stack.yml"), ["echo"])["echo"]
    assert (ctx / "function" / "handler.py").read_text().startswith("def handle")
    assert (ctx / "function" / "lib" / "util.py").read_text() == "X = 1\n"
    assert not (ctx / "function" / "__pycache__").exists()
    assert (ctx / "requirements" / "function.txt").read_text() == "requests==2.32.3\n"
    spec = json.loads((ctx / "function.json").read_text())
    assert spec["handler"] == "/home/app/function" and spec["environment"] == {"GREETING": "hi"}
    assert read_build_info(ctx)["build_args"] == {"BASE_IMAGE": "python:3.11-slim", "EXTRA": "1"}
    assert read_build_info(ctx)["image"] == "hydro/echo:latest"


def test_local_model_is_copied_and_store_model_stays_a_reference(project: Path, iris_model_file: Path) -> None:
    contexts = build_contexts(load_stack(project / "stack.yml"), ["iris", "remote"])
    iris = contexts["iris"]
    assert (iris / "model" / "iris.joblib").read_bytes() == iris_model_file.read_bytes()
    spec = json.loads((iris / "function.json").read_text())
    assert spec["model"] == "/home/app/model/iris.joblib" and spec["signature"]["inputs"][0]["name"] == "x"
    assert read_build_info(iris)["image"] == "registry.example:5000/team/iris:v1"
    assert (iris / "requirements" / "template.txt").read_text() == "scikit-learn>=1.3\n"
    remote = contexts["remote"]
    assert json.loads((remote / "function.json").read_text())["model"] == "iris-model:production"
    assert [p.name for p in (remote / "model").iterdir()] == [".keep"]


def test_router_has_chain_and_no_handler(project: Path) -> None:
    ctx = build_contexts(load_stack(project / "stack.yml"), ["pipeline"])["pipeline"]
    spec = FunctionSpec.from_dict(json.loads((ctx / "function.json").read_text()))
    assert spec.is_router and [s.functions for s in spec.chain] == [["echo"], ["iris"]]
    assert spec.handler is None and [p.name for p in (ctx / "function").iterdir()] == [".keep"]


def test_base_image_flag_beats_env_and_is_written_into_the_dockerfile(project: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRO_BASE_IMAGE", "localhost/from-env:1")
    ctx = build_contexts(load_stack(project / "stack.yml"), ["echo"])["echo"]
    assert "ARG BASE_IMAGE=localhost/from-env:1\n" in (ctx / "Dockerfile").read_text()
    ctx = build_contexts(load_stack(project / "stack.yml"), ["echo"], base_image="localhost/flag:2")["echo"]
    assert "ARG BASE_IMAGE=localhost/flag:2\n" in (ctx / "Dockerfile").read_text()
    assert read_build_info(ctx)["build_args"]["BASE_IMAGE"] == "localhost/flag:2"


def test_rebuild_replaces_a_context_but_never_a_foreign_folder(project: Path) -> None:
    stack = load_stack(project / "stack.yml")
    ctx = build_contexts(stack, ["echo"])["echo"]
    (ctx / "stale.txt").write_text("old")
    ctx = build_contexts(stack, ["echo"])["echo"]
    assert not (ctx / "stale.txt").exists()
    out = project / "mine"
    (out / "echo").mkdir(parents=True)
    (out / "echo" / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a build context"):
        build_contexts(stack, ["echo"], out)
    assert (out / "echo" / "precious.txt").read_text() == "keep me"


def test_handler_outside_the_project_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "handler.py").write_text("SECRET = 1\n")
    (project / "stack.yml").write_text(STACK.replace("handler: ./echo\n    environment", "handler: ../outside\n"
                                                     "    environment"))
    with pytest.raises(OutOfScope) as info:
        build_contexts(load_stack(project / "stack.yml"), ["echo"])
    assert info.value.field == "functions.echo.handler" and "outside the project" in info.value.message
    assert not (project / "build" / "echo").exists()


def test_symlink_escaping_the_project_is_refused(project: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("aws_secret_access_key = x\n")
    os.symlink(secret, project / "echo" / "creds.txt")
    with pytest.raises(OutOfScope) as info:
        build_contexts(load_stack(project / "stack.yml"), ["echo"])
    assert "creds.txt" in info.value.message and info.value.field == "functions.echo.handler"
    assert not (project / "build" / "echo").exists()


def test_symlink_inside_the_project_is_copied_as_a_file(project: Path) -> None:
    (project / "shared.py").write_text("SHARED = True\n")
    os.symlink(project / "shared.py", project / "echo" / "shared.py")
    os.symlink(project / "echo", project / "echo" / "loop")  # a cycle must not recurse forever
    ctx = build_contexts(load_stack(project / "stack.yml"), ["echo"])["echo"]
    target = ctx / "function" / "shared.py"
    assert target.read_text() == "SHARED = True\n" and not target.is_symlink()


def test_model_outside_project_or_of_the_wrong_kind_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.joblib").write_bytes(b"x")
    text = STACK.replace("./models/iris.joblib", "../elsewhere.joblib")
    (project / "stack.yml").write_text(text)
    with pytest.raises(OutOfScope) as info:
        build_contexts(load_stack(project / "stack.yml"), ["iris"])
    assert info.value.field == "functions.iris.model"
    (project / "models" / "iris.onnx").write_bytes(b"x")
    (project / "stack.yml").write_text(STACK.replace("./models/iris.joblib", "./models/iris.onnx"))
    with pytest.raises(StackError, match=r"does not match what template sklearn loads \(\*\.joblib, \*\.pkl\)"):
        build_contexts(load_stack(project / "stack.yml"), ["iris"])
    (project / "stack.yml").write_text(STACK.replace("./models/iris.joblib", "./models/missing.joblib"))
    with pytest.raises(StackError, match="does not exist"):
        build_contexts(load_stack(project / "stack.yml"), ["iris"])


def test_unknown_template_and_missing_handler_are_clear(project: Path) -> None:
    (project / "stack.yml").write_text(STACK.replace("lang: sklearn\n    model: iris-model", "lang: sklaern\n"
                                                     "    model: iris-model"))
    with pytest.raises(StackError) as info:
        build_contexts(load_stack(project / "stack.yml"), ["remote"])
    assert info.value.field == "functions.remote.lang"
    assert "unknown template 'sklaern'" in info.value.message and "python3, router, sklearn" in info.value.message
    (project / "stack.yml").write_text(STACK.replace("    handler: ./echo\n    environment", "    environment"))
    with pytest.raises(StackError, match="needs a handler folder") as info:
        build_contexts(load_stack(project / "stack.yml"), ["echo"])
    assert info.value.field == "functions.echo.handler"


def test_unknown_filter_names_the_known_functions(project: Path) -> None:
    from hydro_serving.errors import NotFound

    with pytest.raises(NotFound, match=r"no function 'nope'.*echo, iris"):
        build_contexts(load_stack(project / "stack.yml"), ["nope"])


def test_bake_model_copies_the_store_version_and_its_signature(project: Path, iris_model_file: Path) -> None:
    """A real directory store (HYDRO_STORE=file://..., set per test): upload, then bake into the context."""
    from hydro_serving.store import open_store

    open_store().upload(iris_model_file, "iris-model", framework="sklearn", signature={
        "inputs": [{"name": "features", "dtype": "double", "shape": [-1, 4]}],
        "outputs": [{"name": "label", "dtype": "int64", "shape": [-1]}]})
    (project / "stack.yml").write_text(STACK.replace("iris-model:production", "iris-model:1"))
    stack = load_stack(project / "stack.yml")
    plain = build_contexts(stack, ["remote"])["remote"]
    assert json.loads((plain / "function.json").read_text())["model"] == "iris-model:1"
    ctx = build_contexts(stack, ["remote"], bake_model=True)["remote"]
    assert (ctx / "model" / "model.joblib").read_bytes() == iris_model_file.read_bytes()
    spec = FunctionSpec.from_dict(json.loads((ctx / "function.json").read_text()))
    assert spec.model == "/home/app/model" and spec.model_is_local
    assert spec.signature is not None and spec.signature.inputs[0].name == "features"
    assert read_build_info(ctx)["baked_model"] is True


def test_bake_model_of_an_unknown_model_is_a_clear_error(project: Path) -> None:
    from hydro_serving.errors import HydroError

    with pytest.raises(HydroError) as info:
        build_contexts(load_stack(project / "stack.yml"), ["remote"], bake_model=True)
    assert info.value.status == 404 and "iris-model" in info.value.message
    assert not (project / "build" / "remote").exists()  # no half-written context is left behind


def test_every_context_gets_the_shared_dockerfile_rendered_completely(project: Path) -> None:
    """No template in the fixture ships a Dockerfile: each context holds the shared one, no placeholder left."""
    for name, ctx in build_contexts(load_stack(project / "stack.yml")).items():
        dockerfile = (ctx / "Dockerfile").read_text()
        assert "{{" not in dockerfile and "}}" not in dockerfile, name
        assert "--start-period=60s" in dockerfile and "apt-get install" in dockerfile  # only ADDITIONAL_PACKAGES'
        assert "# System packages this template's libraries need" not in dockerfile
        assert not (ctx / "template" / read_build_info(ctx)["template"] / "Dockerfile").exists()


def test_a_template_own_dockerfile_overrides_the_shared_one(project: Path, builder_templates: Path) -> None:
    own = "# my own image\nARG BASE_IMAGE=python:3.12-slim\nFROM ${BASE_IMAGE}\nRUN echo '{{ not a placeholder }}'\n"
    (builder_templates / "python3" / "Dockerfile").write_text(own)
    ctx = build_contexts(load_stack(project / "stack.yml"), ["echo"], base_image="localhost/flag:2")["echo"]
    assert (ctx / "Dockerfile").read_text() == own.replace("python:3.12-slim", "localhost/flag:2")
    assert not (ctx / "template" / "python3" / "Dockerfile").exists()  # the override is not copied twice
    (builder_templates / "python3" / "Dockerfile").write_text("FROM python:3.11-slim\n")
    with pytest.raises(ConfigError, match=r"must declare 'ARG BASE_IMAGE=\.\.\.'"):
        build_contexts(load_stack(project / "stack.yml"), ["echo"])


def test_template_data_is_rendered_into_the_shared_dockerfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydro_serving.builder.context import render_dockerfile
    from hydro_serving.builder.templates import get_template

    root = tmp_path / "templates"
    write_template(root, "jvm", "model")
    with (root / "jvm" / "template.yml").open("a") as fh:
        fh.write("system_packages: [openjdk-17-jre-headless, procps]\nhealthcheck_start_period: 2m\n")
    monkeypatch.setenv("HYDRO_TEMPLATES", str(root))
    text = render_dockerfile(get_template("jvm"), "localhost/base:1")
    assert "ARG BASE_IMAGE=localhost/base:1\n" in text and '"jvm" template' in text
    assert "--no-install-recommends openjdk-17-jre-headless procps \\\n" in text
    assert "--start-period=2m " in text and "# test model template\n" in text


@pytest.mark.parametrize(("name", "packages", "start_period"), [
    ("spark", "openjdk-17-jre-headless procps", "120s"),
    ("xgboost", "libgomp1", "60s"),
    ("lightgbm", "libgomp1", "60s"),
    ("sklearn", None, "60s"),
    ("python3", None, "60s"),
])
def test_repository_templates_render_their_system_packages(name: str, packages: str | None, start_period: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The repo's templates use the shared Dockerfile; spark installs Java, the boosting ones OpenMP."""
    from hydro_serving.builder.context import render_dockerfile
    from hydro_serving.builder.templates import get_template

    monkeypatch.delenv("HYDRO_TEMPLATES", raising=False)
    template = get_template(name)
    assert not template.has_own_dockerfile
    text = render_dockerfile(template, "python:3.11-slim")
    assert "{{" not in text and f"--start-period={start_period} " in text
    assert "USER 10001" in text and "hydro_serving.runtime" in text
    if packages is None:
        assert "--no-install-recommends $ADDITIONAL_PACKAGES" in text and "openjdk" not in text
        assert "--no-install-recommends libgomp1" not in text
    else:
        assert f"apt-get install -y --no-install-recommends {packages} \\\n" in text
