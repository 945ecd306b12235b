"""The template registry: which runtime templates exist, and what each one's ``template.yml`` says.

A template is a folder (``templates/<name>/``) with ``template.yml``, a handler module, a
``requirements.txt`` and a ``Dockerfile``. The registry is read from disk on every call (no state
built at import time), so a template added while a gateway runs is seen without a restart.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hydro_serving.errors import ConfigError, NotFound

TEMPLATE_FILE = "template.yml"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
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
}
_ENTRYPOINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$")


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
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def module(self) -> str:
        """The handler module named by ``entrypoint`` (``module:Attr``)."""
        return self.entrypoint.split(":", 1)[0]

    @property
    def attribute(self) -> str:
        return self.entrypoint.split(":", 1)[1]

    @property
    def dockerfile(self) -> Path:
        return self.path / "Dockerfile"

    @property
    def requirements_file(self) -> Path:
        return self.path / self.requirements

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "path": str(self.path), "entrypoint": self.entrypoint,
            "requirements": self.requirements, "base_image": self.base_image,
            "model_patterns": list(self.model_patterns), "extra": self.extra,
            "frameworks": list(self.frameworks), "preload": list(self.preload), "description": self.description,
        }


def template_dirs() -> list[Path]:
    """The folders searched for templates, in priority order (existing ones only)."""
    import hydro_serving

    package = Path(hydro_serving.__file__).resolve().parent
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
    return Template(
        name=name, kind=kind, path=folder.resolve(), entrypoint=entrypoint, requirements=requirements,
        base_image=text("base_image"), model_patterns=strings("model_patterns"), extra=extra,
        frameworks=strings("frameworks"), preload=strings("preload"), description=text("description").strip(),
        source=where,
    )


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
