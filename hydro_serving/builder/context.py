"""Build contexts: one folder per function holding everything its image needs, and nothing else.

``build_contexts`` is a pure copy step (no engine, no network unless a store model is baked):

    build/<fn>/
      Dockerfile             the shared one rendered for the template (or the template's own), with its
                             BASE_IMAGE default set to the chosen base image
      build.json             what images.py needs: function, template, image tag, build args
      function.json          the spec (FunctionSpec.to_dict()), paths rewritten to in-image locations
      requirements/          a wheel of this very hydro-serving + hydro.txt, template.txt, function.txt
      template/<template>/   the template folder (the runtime finds it through HYDRO_TEMPLATES)
      function/              the function's handler folder (empty when it has none)
      model/                 a local-path model, or a store model with bake_model (empty otherwise)

A store model (``name[:version|alias]``) stays a reference: the runtime fetches it from the store
when the container starts (HYDRO_STORE and AWS_* come from the environment at run time and are
never written into a context). ``bake_model`` fetches it now and copies its files in, for
air-gapped clusters. Every handler and local model path must resolve inside the project folder.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydro_serving.builder.scope import copy_in_scope, resolve_in_scope
from hydro_serving.builder.templates import SHARED_DOCKERFILE, Template, get_template
from hydro_serving.builder.wheel import build_wheel
from hydro_serving.errors import ConfigError, HydroError, NotFound, StackError
from hydro_serving.stack.model import FunctionSpec, Stack

log = logging.getLogger("hydro.builder")

APP_HOME = "/home/app"
IN_IMAGE_HANDLER = f"{APP_HOME}/function"
IN_IMAGE_MODEL = f"{APP_HOME}/model"
IN_IMAGE_SPEC = f"{APP_HOME}/function.json"
MARKER = "build.json"
_BASE_ARG = re.compile(r"^(ARG\s+BASE_IMAGE)(=\S*)?\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


def default_image(spec: FunctionSpec) -> str:
    """The tag an image gets: the function's ``image``, else ``hydro/<fn>:latest``."""
    return spec.image or f"hydro/{spec.name}:latest"


def choose_base_image(template: Template, base_image: str | None = None) -> str:
    """``--base-image`` beats ``HYDRO_BASE_IMAGE`` beats the template's ``base_image``."""
    return base_image or os.environ.get("HYDRO_BASE_IMAGE") or template.base_image


def build_contexts(stack: Stack, names: list[str] | tuple[str, ...] | None = None, out_dir: Path | None = None,
                   *, base_image: str | None = None, bake_model: bool = False) -> dict[str, Path]:
    """Write ``out_dir/<fn>/`` for each selected function; returns ``{function: context folder}``.

    Functions with ``skip_build: true`` are left out (their image is built elsewhere). A function
    naming an unknown template fails with the known template names before anything is written.
    """
    root = Path(os.path.realpath(stack.root))
    out = Path(out_dir) if out_dir is not None else root / "build"
    out = out if out.is_absolute() else root / out
    selected = [spec for spec in stack.select(list(names) if names else None) if not spec.skip_build]
    plans = [(spec, _template_for(spec)) for spec in selected]
    if not plans:
        return {}
    out.mkdir(parents=True, exist_ok=True)
    wheel_dir = out / ".wheel"
    if wheel_dir.exists():
        shutil.rmtree(wheel_dir)
    wheel = build_wheel(wheel_dir)
    contexts: dict[str, Path] = {}
    try:
        for spec, template in plans:
            contexts[spec.name] = _write_context(stack, root, spec, template, out, wheel,
                                                 base_image=base_image, bake_model=bake_model)
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    return contexts


def _template_for(spec: FunctionSpec) -> Template:
    try:
        return get_template(spec.lang)
    except NotFound as exc:
        raise StackError(f"functions.{spec.name}.lang: {exc.message}", field=f"functions.{spec.name}.lang",
                         function=spec.name) from None


def _fresh_dir(path: Path) -> None:
    """Empty ``path`` for a new context, refusing to delete a folder this builder did not write."""
    if path.exists():
        if not path.is_dir() or (any(path.iterdir()) and not (path / MARKER).is_file()):
            raise ConfigError(f"{path} exists and is not a build context written by hydro build; "
                              "move it away or choose another output folder", field="out_dir")
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _write_context(stack: Stack, root: Path, spec: FunctionSpec, template: Template, out: Path, wheel: Path,
                   *, base_image: str | None, bake_model: bool) -> Path:
    where = f"functions.{spec.name}"
    if template.kind == "function" and not spec.handler:
        raise StackError(f"{where}.handler: lang {spec.lang} runs your code, so the function needs a handler folder",
                         field=f"{where}.handler", function=spec.name)
    handler_src = (resolve_in_scope(spec.handler, root, field=f"{where}.handler", function=spec.name)
                   if spec.handler else None)
    if handler_src is not None and not handler_src.is_dir():
        raise StackError(f"{where}.handler: {spec.handler} is not a folder", field=f"{where}.handler",
                         function=spec.name)
    model_src = None
    if spec.model and spec.model_is_local:
        model_src = resolve_in_scope(spec.model.removeprefix("file://"), root, field=f"{where}.model",
                                     function=spec.name)
        if not model_src.exists():
            raise StackError(f"{where}.model: {spec.model} does not exist", field=f"{where}.model",
                             function=spec.name)
        _check_model_patterns(model_src, template, where, spec.name)

    ctx = out / spec.name
    _fresh_dir(ctx)
    (ctx / MARKER).write_text("{}")  # claims the folder first; rewritten with the real content below
    try:
        _fill_context(ctx, stack, root, spec, template, out, wheel, handler_src, model_src,
                      base_image=base_image, bake_model=bake_model)
    except BaseException:
        shutil.rmtree(ctx, ignore_errors=True)  # a half-written context must not be mistaken for a good one
        raise
    return ctx


def _fill_context(ctx: Path, stack: Stack, root: Path, spec: FunctionSpec, template: Template, out: Path,
                  wheel: Path, handler_src: Path | None, model_src: Path | None, *, base_image: str | None,
                  bake_model: bool) -> None:
    where = f"functions.{spec.name}"
    chosen_base = choose_base_image(template, base_image)

    copy_in_scope(template.path, ctx / "template" / template.name, template.path, field="template")
    (ctx / "template" / template.name / "Dockerfile").unlink(missing_ok=True)
    (ctx / "Dockerfile").write_text(render_dockerfile(template, chosen_base))

    (ctx / "function").mkdir()
    if handler_src is not None:
        copy_in_scope(handler_src, ctx / "function", root, field=f"{where}.handler", function=spec.name,
                      exclude=[out])
    (ctx / "model").mkdir()
    in_image_model = spec.model
    signature = spec.signature
    if model_src is not None:
        copy_in_scope(model_src, ctx / "model" / model_src.name if model_src.is_file() else ctx / "model", root,
                      field=f"{where}.model", function=spec.name)
        in_image_model = f"{IN_IMAGE_MODEL}/{model_src.name}" if model_src.is_file() else IN_IMAGE_MODEL
    elif spec.model and bake_model:
        signature = _bake_store_model(stack, spec, ctx / "model") or signature
        in_image_model = IN_IMAGE_MODEL
    for folder in ("function", "model"):
        if not any((ctx / folder).iterdir()):
            (ctx / folder / ".keep").write_text("")

    _write_requirements(ctx / "requirements", wheel, template, ctx / "function", _trained_versions(stack, spec))

    image_spec = replace(
        spec,
        handler=IN_IMAGE_HANDLER if spec.handler else None,
        model=in_image_model,
        environment_file=(),  # read by whoever deploys; the files themselves stay out of the image
        signature=signature,
    )
    (ctx / "function.json").write_text(json.dumps(image_spec.to_dict(), indent=2, sort_keys=True) + "\n")
    build_args = {"BASE_IMAGE": chosen_base, **spec.build_args}
    (ctx / MARKER).write_text(json.dumps({
        "function": spec.name, "template": template.name, "image": default_image(spec),
        "base_image": chosen_base, "build_args": build_args, "baked_model": bool(model_src or bake_model),
    }, indent=2, sort_keys=True) + "\n")


def read_build_info(context: Path) -> dict[str, Any]:
    """The ``build.json`` written by :func:`build_contexts` (image tag and build args)."""
    try:
        return json.loads((context / MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{context} is not a build context written by hydro build ({exc})",
                          field="context") from None


def _check_model_patterns(model: Path, template: Template, where: str, function: str) -> None:
    """A local model must be a file the template can load: catches ``lang: sklearn`` with a .onnx file."""
    if not template.model_patterns:
        return
    names = [model.name] if model.is_file() else [p.name for p in model.rglob("*") if p.is_file()]
    if not any(fnmatch.fnmatch(n, pat) for n in names for pat in template.model_patterns):
        raise StackError(f"{where}.model: {model.name} does not match what template {template.name} loads "
                         f"({', '.join(template.model_patterns)})", field=f"{where}.model", function=function)


def render_dockerfile(template: Template, base_image: str) -> str:
    """The Dockerfile text for ``template``, its ``ARG BASE_IMAGE`` default set so a plain ``docker build`` agrees.

    The template's own ``Dockerfile`` wins and is taken as written (only the default base image is
    set), so an override never depends on placeholders it did not ask for. Otherwise the shared
    Dockerfile is rendered with the template's data: the values are written into the text rather
    than passed as build args because ``HEALTHCHECK`` takes no variables, and because a context
    must build the same image with no arguments at all.
    """
    source = template.dockerfile if template.has_own_dockerfile else SHARED_DOCKERFILE
    if not source.is_file():
        raise ConfigError(f"template {template.name} has no Dockerfile at {source}", field="Dockerfile")
    text = source.read_text()
    if not _BASE_ARG.search(text):
        raise ConfigError(f"{source}: must declare 'ARG BASE_IMAGE=...' before FROM ${{BASE_IMAGE}}",
                          field="Dockerfile")
    if source == SHARED_DOCKERFILE:
        text = _fill_placeholders(text, source, _dockerfile_values(template))
    return _BASE_ARG.sub(lambda m: f"{m.group(1)}={base_image}", text, count=1)


def _dockerfile_values(template: Template) -> dict[str, str]:
    """What the shared Dockerfile's ``{{ name }}`` placeholders stand for, from the template's template.yml."""
    described = (textwrap.wrap(template.description, width=110, break_on_hyphens=False)
                 or [f"Serves the {template.name} template."])
    if template.system_packages:
        packages = " ".join(template.system_packages)
        system = ("# System packages this template's libraries need (template.yml system_packages).\n"
                  "RUN apt-get update \\\n"
                  f" && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {packages} \\\n"
                  " && rm -rf /var/lib/apt/lists/*")
    else:
        system = "# No system packages for this template (template.yml system_packages is empty)."
    return {
        "name": template.name,
        "description": "\n".join(f"# {line}" for line in described),
        "system_packages": system,
        "healthcheck_start_period": template.healthcheck_start_period,
    }


def _fill_placeholders(text: str, source: Path, values: dict[str, str]) -> str:
    """One pass (a value is never scanned again); a placeholder with no value is the builder's bug, said so."""
    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ConfigError(f"{source}: unknown placeholder '{{{{ {key} }}}}' (known: {', '.join(values)})",
                              field="Dockerfile")
        return values[key]

    return _PLACEHOLDER.sub(value, text)


def _write_requirements(folder: Path, wheel: Path, template: Template, function_dir: Path,
                        trained: dict[str, str] | None = None) -> None:
    """hydro.txt installs the runtime wheel (with the template's extra), then template and function needs.

    ``trained`` (the store manifest's ``framework_versions``) pins the template's framework
    packages to the versions the model was trained with (``scikit-learn>=1.3`` -> ``==1.9.1``).
    """
    from hydro_serving.store.versions import pin_requirements

    folder.mkdir()
    shutil.copyfile(wheel, folder / wheel.name)
    extra = f"[{template.extra}]" if template.extra else ""
    (folder / "hydro.txt").write_text(f"/tmp/requirements/{wheel.name}{extra}\n")
    template_reqs = template.requirements_file
    text = template_reqs.read_text() if template_reqs.is_file() else ""
    if trained:
        text = "\n".join(pin_requirements(text.splitlines(), trained)) + "\n"
    (folder / "template.txt").write_text(text)
    function_reqs = function_dir / "requirements.txt"
    (folder / "function.txt").write_text(function_reqs.read_text() if function_reqs.is_file() else "")


def _trained_versions(stack: Stack, spec: FunctionSpec) -> dict[str, str]:
    """The framework versions a store model was trained with (empty for a local model or an unreachable store)."""
    if not spec.model or spec.model_is_local:
        return {}
    from hydro_serving.store import open_store

    try:
        return dict(open_store(stack.provider.store).get_manifest(spec.model).framework_versions)
    except HydroError as exc:  # a build without the store builds unpinned, and says so
        log.warning("function %s: framework versions of %s unknown (%s); the build is not pinned to them",
                    spec.name, spec.model, exc.message)
        return {}


def _bake_store_model(stack: Stack, spec: FunctionSpec, target: Path) -> Any:
    """Fetch a store model (sha256-verified cache) into the context; returns the manifest's signature."""
    from hydro_serving.store import fetch_model, manifest_of, open_store

    assert spec.model is not None
    store_url = stack.provider.store
    source = fetch_model(spec.model, store_url)  # a cached pinned version: no request to the store
    for item in sorted(Path(source).iterdir()):
        if item.is_dir():
            shutil.copytree(item, target / item.name)
        else:
            shutil.copyfile(item, target / item.name)
    if spec.signature is not None:
        return None
    cached = manifest_of(source)  # recorded with the cached files: works with the store down (issue 14)
    if cached is not None:
        return cached.signature
    try:
        return open_store(store_url).get_manifest(spec.model).signature
    except HydroError:  # the signature is a convenience; the model files are what matters
        return None
