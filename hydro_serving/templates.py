"""The template registry: which runtime templates exist, and what each one's ``template.yml`` says.

A template is a folder (``templates/<name>/``) with ``template.yml``, a handler module standing
on :mod:`hydro_serving.sdk` and a ``requirements.txt``. This module only finds and parses
templates: the runtime, the builder, the stack loader and the gateway all import it, and it
imports none of them (a replica must not pull in the image builder to learn its own template).
The registry is read from disk on every call (no state built at import time), so a template added
while a gateway runs is seen without a restart.

``options`` in ``template.yml`` is a JSON Schema for the ``options:`` of a function using the
template. :meth:`Template.option_errors` checks a function's options against it, so that
``hydro deploy``/``build``/``render``, the gateway and the runtime refuse a misspelt option the same
way, naming ``options.<key>``, before any replica starts.

Where templates are found, first match of a name wins:

1. every folder in ``HYDRO_TEMPLATES`` (``os.pathsep``-separated), so users can add or override;
2. ``hydro_serving/_templates`` (the copy a wheel installs);
3. the repository's top-level ``templates/`` (an editable install, where ``_templates`` is absent).

``template.yml`` is validated strictly: an unknown key is an error naming the key and the file,
because a misspelt ``model_pattern`` silently ignored would make a build accept the wrong files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hydro_serving.errors import ConfigError, NotFound

TEMPLATE_FILE = "template.yml"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
DEFAULT_HEALTHCHECK_START_PERIOD = "60s"
KINDS = ("model", "function", "router")

_REQUIRED = ("name", "kind", "entrypoint")
_OPTIONAL: dict[str, Any] = {
    "description": "",
    "requirements": "requirements.txt",
    "base_image": DEFAULT_BASE_IMAGE,
    "model_patterns": [],
    "extra": None,
    "frameworks": [],
    "preload": [],  # modules a pre-imported template process (zygote) imports before forking replicas
    "system_packages": [],  # Debian packages the image installs for the model library (libgomp1, a JRE)
    "healthcheck_start_period": DEFAULT_HEALTHCHECK_START_PERIOD,  # how long a replica may take to load
    "options": None,  # a JSON Schema for the function's ``options:`` (None: any mapping, the handler decides)
}
_ENTRYPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$")
# Debian package names (optionally =version): the names land in a RUN line of the image, so anything that
# is not plainly a package name (spaces, ';', '$(...)') is refused rather than handed to the build's shell.
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+~:-]+)?$")
# Docker's duration syntax for HEALTHCHECK flags (it takes no variables, so the builder writes the value in).
_DURATION = re.compile(r"^([0-9]+(ns|us|ms|s|m|h))+$")


@dataclass(frozen=True)
class Template:
    """One runtime template as declared by its ``template.yml`` (``path`` is its folder)."""

    name: str
    kind: str
    path: Path
    entrypoint: str
    requirements: str = "requirements.txt"
    base_image: str = DEFAULT_BASE_IMAGE
    model_patterns: tuple[str, ...] = ()
    extra: str | None = None
    frameworks: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    healthcheck_start_period: str = DEFAULT_HEALTHCHECK_START_PERIOD
    description: str = ""
    source: str = field(default="", compare=False)
    options_schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def module(self) -> str:
        """The handler module named by ``entrypoint`` (``module:Attr``)."""
        return self.entrypoint.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        return self.entrypoint.split(":", 1)[1]

    @property
    def dockerfile(self) -> Path:
        """The template's own ``Dockerfile`` (it may not exist): when it does, it overrides the shared one."""
        return self.path / "Dockerfile"

    @property
    def has_own_dockerfile(self) -> bool:
        return self.dockerfile.is_file()

    @property
    def requirements_file(self) -> Path:
        return self.path / self.requirements

    def option_errors(self, options: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
        """Every way ``options`` breaks this template's option schema, as (key path, message), deepest first.

        An unknown key is reported at its own path with the allowed keys, because a misspelt
        option is the common mistake and its fix is the right spelling.
        """
        if self.options_schema is None:
            return []
        import jsonschema

        errors = []
        for err in jsonschema.Draft202012Validator(self.options_schema).iter_errors(dict(options)):
            path = tuple(str(p) for p in err.absolute_path)
            if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
                known = sorted(err.schema.get("properties", {}))
                extra = sorted(str(k) for k in err.instance if k not in known)
                if extra:
                    errors.append(((*path, extra[0]), f"unknown option '{extra[0]}' for lang {self.name} "
                                                      f"(options: {', '.join(known) or 'none'})"))
                    continue
            errors.append((path, err.message))
        errors.sort(key=lambda item: -len(item[0]))
        return errors

    def check_options(self, options: Mapping[str, Any], where: str = "options") -> None:
        """Raise a 400 :class:`ConfigError` naming ``<where>.<key>`` for the first bad option."""
        errors = self.option_errors(options)
        if errors:
            path, message = errors[0]
            field_ = ".".join((where, *path))
            raise ConfigError(f"{field_}: {message}", field=field_)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "path": str(self.path), "entrypoint": self.entrypoint,
            "requirements": self.requirements, "base_image": self.base_image,
            "model_patterns": list(self.model_patterns), "extra": self.extra,
            "frameworks": list(self.frameworks), "preload": list(self.preload),
            "system_packages": list(self.system_packages), "healthcheck_start_period": self.healthcheck_start_period,
            "description": self.description, "options": self.options_schema,
        }


def template_dirs() -> list[Path]:
    """The folders searched for templates, in priority order (existing ones only)."""
    package = Path(__file__).resolve().parent  # this module sits at the package's top level
    dirs: list[Path] = []
    for entry in os.environ.get("HYDRO_TEMPLATES", "").split(os.pathsep):
        if entry.strip():
            dirs.append(Path(entry.strip()).expanduser())
    dirs.append(package / "_templates")
    dirs.append(package.parent / "templates")
    seen: set[Path] = set()
    out = []
    for d in dirs:
        resolved = d.resolve()
        if resolved not in seen and resolved.is_dir():
            seen.add(resolved)
            out.append(resolved)
    return out


def load_template(folder: Path) -> Template:
    """Read and validate ``folder/template.yml``; every mistake names the file and the key."""
    path = folder / TEMPLATE_FILE
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: template folder has no {TEMPLATE_FILE}", field=where) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{line}", field=where) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys to values", field=where)
    unknown = sorted(str(k) for k in data if k not in _REQUIRED and k not in _OPTIONAL)
    if unknown:
        allowed = ", ".join([*_REQUIRED, *_OPTIONAL])
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (allowed: {allowed})", field=unknown[0])
    missing = [k for k in _REQUIRED if data.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"{where}: required key '{missing[0]}' is missing", field=missing[0])
    values = {**_OPTIONAL, **{k: v for k, v in data.items() if v is not None or k == "extra"}}

    def text(key: str) -> str:
        value = values[key]
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a string, got {type(value).__name__}", field=key)
        return value

    def strings(key: str) -> tuple[str, ...]:
        value = values[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: '{key}' must be a list of strings", field=key)
        return tuple(value)

    name = text("name")
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name '{name}' must be lowercase letters, digits, '-' or '_'", field="name")
    kind = text("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got '{kind}'", field="kind")
    entrypoint = text("entrypoint")
    if not _ENTRYPOINT.match(entrypoint):
        raise ConfigError(f"{where}: entrypoint must look like 'module:Attribute', got '{entrypoint}'",
                          field="entrypoint")
    requirements = text("requirements")
    if Path(requirements).is_absolute() or ".." in Path(requirements).parts:
        raise ConfigError(f"{where}: requirements must be a file inside the template folder", field="requirements")
    extra = values["extra"]
    if extra is not None and not isinstance(extra, str):
        raise ConfigError(f"{where}: 'extra' must be a string or null", field="extra")
    system_packages = strings("system_packages")
    bad = [p for p in system_packages if not _PACKAGE.match(p)]
    if bad:
        raise ConfigError(f"{where}: system_packages: '{bad[0]}' is not a Debian package name", field="system_packages")
    start_period = values["healthcheck_start_period"]
    if isinstance(start_period, int) and not isinstance(start_period, bool):
        start_period = f"{start_period}s"  # a bare number reads naturally as seconds
    if not isinstance(start_period, str) or not _DURATION.match(start_period):
        raise ConfigError(f"{where}: healthcheck_start_period must be a duration like 60s or 2m, got "
                          f"'{start_period}'", field="healthcheck_start_period")
    options_schema = _options_schema(values["options"], where)
    return Template(
        name=name, kind=kind, path=folder.resolve(), entrypoint=entrypoint, requirements=requirements,
        base_image=text("base_image"), model_patterns=strings("model_patterns"), extra=extra,
        frameworks=strings("frameworks"), preload=strings("preload"), system_packages=system_packages,
        healthcheck_start_period=start_period, description=text("description").strip(), source=where,
        options_schema=options_schema,
    )


def _options_schema(raw: Any, where: str) -> dict[str, Any] | None:
    """``options`` of template.yml: a JSON Schema of an object, itself checked so a broken schema fails here."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type", "object") != "object":
        raise ConfigError(f"{where}: options must be a JSON Schema of an object (type: object, properties: ...)",
                          field="options")
    import jsonschema

    schema = {"type": "object", **raw}
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{where}: options is not a valid JSON Schema: {exc.message}", field="options") from None
    return schema


def _candidates() -> dict[str, Path]:
    """Template name (its folder name) -> folder, first search directory wins."""
    found: dict[str, Path] = {}
    for root in template_dirs():
        for child in sorted(root.iterdir()):
            if child.is_dir() and (child / TEMPLATE_FILE).is_file() and child.name not in found:
                found[child.name] = child
    return found


def list_templates() -> list[Template]:
    """Every template found, sorted by name; a broken ``template.yml`` is an error, not skipped."""
    found, errors = scan_templates()
    if errors:
        raise errors[0]
    return found


def scan_templates() -> tuple[list[Template], list[ConfigError]]:
    """The valid templates and, separately, what is wrong with each broken one (for ``hydro templates``)."""
    found: list[Template] = []
    errors: list[ConfigError] = []
    for name in sorted(_candidates()):
        try:
            found.append(get_template(name))
        except ConfigError as exc:
            errors.append(exc)
    return found, errors


def get_template(name: str) -> Template:
    """The template called ``name``; NotFound lists the known names so a typo is easy to fix."""
    candidates = _candidates()
    folder = candidates.get(name)
    if folder is None:
        known = ", ".join(sorted(candidates)) or "none found"
        raise NotFound(f"unknown template '{name}' (known templates: {known})", field="lang")
    template = load_template(folder)
    if template.name != name:
        raise ConfigError(f"{template.source}: name '{template.name}' does not match its folder '{name}'",
                          field="name")
    return template
