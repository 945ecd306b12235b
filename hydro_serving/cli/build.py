"""``hydro new``, ``hydro build``, ``hydro push``, ``hydro templates``: thin wrappers over hydro_serving.builder.

The commands only parse flags, call the builder and print; every decision lives in the builder
modules so that the gateway or tests can use the same code without a terminal.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click

from hydro_serving.errors import ConfigError
from hydro_serving.stack import load_stack
from hydro_serving.templates import scan_templates


def _old_yaml_spelling(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """``--yaml`` was these commands' name for the stack file; every other command says ``-f/--file``."""
    if value is not None:
        click.echo("note: --yaml is deprecated and will be removed; use -f/--file (as every hydro command does)",
                   err=True)
    return value


def STACK_OPTION(command: Any) -> Any:
    """``-f/--file`` (the stack file, as in every command), and the old spelling ``--yaml``, hidden."""
    command = click.option("--yaml", "old_stack_file", default=None, hidden=True, callback=_old_yaml_spelling,
                           type=click.Path(dir_okay=False, path_type=Path))(command)
    return click.option("-f", "--file", "stack_file", default="stack.yml", show_default=True,
                        type=click.Path(dir_okay=False, path_type=Path), help="The stack file.")(command)


def _stack_file(stack_file: Path, old_stack_file: Path | None) -> Path:
    return old_stack_file if old_stack_file is not None else stack_file

FILTER_OPTION = click.option("--filter", "filters", multiple=True, metavar="NAME",
                             help="Only this function (repeatable).")


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


@click.command()
@click.argument("name")
@click.option("--lang", required=True, metavar="TEMPLATE", help="The template (see 'hydro templates').")
@STACK_OPTION
def new(name: str, lang: str, stack_file: Path, old_stack_file: Path | None) -> None:
    """Create function NAME from a template and add it to the stack file (created when missing)."""
    from hydro_serving.builder.scaffold import new_function

    done = new_function(name, lang, _stack_file(stack_file, old_stack_file))
    verb = "created" if done.created_stack else "updated"
    if done.folder.exists():
        click.echo(f"created {_relative(done.folder)}/")
    click.echo(f"{verb} {_relative(done.stack_file)}:")
    click.echo("".join(f"  {line}" for line in done.entry.splitlines(keepends=True)).rstrip("\n"))
    click.echo("\nnext steps:")
    for step in next_steps(name, done.entry, _relative(done.folder), _relative(done.stack_file)):
        click.echo(f"  {step}")


def next_steps(name: str, entry: str, folder: str, stack_file: str) -> list[str]:
    """What to do after ``hydro new``, by what the entry holds (a handler, a model line, a chain).

    A new user was left with an empty folder and no idea what goes in it; the steps name the
    file to write and the commands that try it, locally first and then behind a gateway.
    """
    flag = "" if stack_file == "stack.yml" else f" -f {stack_file}"
    model = re.search(r"^\s*model:\s*(\S+)", entry, re.MULTILINE)
    if model is None and re.search(r"^\s*chain:", entry, re.MULTILINE):
        return [f"1. check the stages under {name}.chain in {stack_file} (they run in that order)",
                f"2. deploy the stages and the router behind a local gateway: hydro up{flag}",
                f"3. call it: hydro invoke {name} -d '{{...}}'  (or -d @request.json)"]
    steps: list[str] = []
    if model is not None:
        steps += [f"1. save the trained model as {model.group(1)} "
                  f"(or upload it: hydro model upload FILE --name {name},",
                  f"   then write the NAME:VERSION it prints as model: in {stack_file})"]
    else:
        steps += [f"1. write your logic in {folder}/handler.py (handle(payload, context)); "
                  f"dependencies go in {folder}/requirements.txt"]
    steps += [f"2. try it on this machine: hydro run {name}{flag}  (then, in another shell: "
              f"curl -H 'Content-Type: application/json' -d '{{...}}' http://127.0.0.1:8080/)",
              f"3. deploy it behind a local gateway: hydro up{flag}",
              f"4. call it: hydro invoke {name} -d '{{...}}'  (or -d @request.json)"]
    return steps


@click.command()
@STACK_OPTION
@FILTER_OPTION
@click.option("--shrinkwrap", is_flag=True, help="Only write the build contexts (build/<fn>/); build no image.")
@click.option("--base-image", metavar="IMAGE", help="Base image for every function (default: HYDRO_BASE_IMAGE, "
              "else the template's base_image).")
@click.option("--bake-model", is_flag=True, help="Copy store models into the image instead of fetching at start.")
@click.option("--push", "push_after", is_flag=True, help="Push each image to its registry after building it.")
@click.option("--network", metavar="MODE", help="Network mode for build steps (e.g. host).")
@click.option("--no-cache", is_flag=True, help="Do not use the engine's layer cache.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the contexts (default: build/ beside the stack file).")
def build(stack_file: Path, old_stack_file: Path | None, filters: tuple[str, ...], shrinkwrap: bool,
          base_image: str | None, bake_model: bool, push_after: bool, network: str | None, no_cache: bool,
          output: Path | None) -> None:
    """Write a build context per function and build its image through the Docker Engine API."""
    from hydro_serving.builder.context import build_contexts
    stack = load_stack(_stack_file(stack_file, old_stack_file))
    for spec in stack.select(list(filters) or None):
        if spec.skip_build:
            click.echo(f"skipping {spec.name} (skip_build: true)")
    contexts = build_contexts(stack, list(filters) or None, output.resolve() if output else None,
                              base_image=base_image, bake_model=bake_model)
    for name, path in contexts.items():
        click.echo(f"wrote {_relative(path)}/ ({name})")
    if shrinkwrap or not contexts:
        return
    from hydro_serving.builder.images import EngineUnavailable, build_images, connect

    try:
        client = connect()
    except EngineUnavailable as exc:
        written = ", ".join(f"{_relative(p)}/" for p in contexts.values())
        raise EngineUnavailable(f"{exc.message}. The build contexts were written: {written}; build them with any "
                                "Docker-compatible tool, or start an engine and run 'hydro build' again",
                                details=exc.details) from None
    images = build_images(contexts, network_mode=network, push=push_after, nocache=no_cache,
                          echo=lambda line: click.echo(line), client=client)
    for name, image in images.items():
        click.echo(f"{name}: {image}" + (" (pushed)" if push_after else ""))


@click.command()
@STACK_OPTION
@FILTER_OPTION
def push(stack_file: Path, old_stack_file: Path | None, filters: tuple[str, ...]) -> None:
    """Push the functions' images (built by 'hydro build') to their registries."""
    from hydro_serving.builder.context import default_image
    from hydro_serving.builder.images import push_images
    stack = load_stack(_stack_file(stack_file, old_stack_file))
    images = [default_image(spec) for spec in stack.select(list(filters) or None) if not spec.skip_build]
    push_images(images, echo=lambda line: click.echo(line))


@click.command()
def templates() -> None:
    """List the runtime templates: name, kind and description."""
    found, errors = scan_templates()
    if not found and not errors:
        click.echo("no templates found (set HYDRO_TEMPLATES to a folder of templates)")
        return
    width = max((len(t.name) for t in found), default=0)
    for tpl in found:
        description = " ".join(tpl.description.split())
        click.echo(f"{tpl.name:<{width}}  {tpl.kind:<8}  {description}".rstrip())
    if errors:
        raise ConfigError("broken template: " + "; broken template: ".join(e.message for e in errors))
