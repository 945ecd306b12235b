"""Turning a function spec into a loaded handler: template lookup, model resolution, import, ``load()``.

This runs once per worker process, in a background thread, so that the HTTP server can answer
``/_/health`` and ``/_/ready`` (503) while a large model is fetched and deserialised.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydro_serving.errors import ConfigError, HydroError
from hydro_serving.runtime.adapters import Adapter, adapter_class, check_entrypoint
from hydro_serving.sdk.context import LoadContext
from hydro_serving.stack.model import FunctionSpec
from hydro_serving.templates import Template, get_template

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("hydro.runtime")


@dataclass
class LoadedFunction:
    """A handler ready to serve, with the spec it was loaded for (signature filled from the store)."""

    spec: FunctionSpec
    template: Template
    adapter: Adapter
    model_path: Path | None
    handler_dir: Path | None
    manifest: Any = None  # the store's Manifest of a store model (version, framework versions), else None
    version_mismatches: dict[str, Any] = field(default_factory=dict)  # {package: {trained, installed}}

    @property
    def handler(self) -> Any:
        return self.adapter.handler


def resolve_model(spec: FunctionSpec) -> tuple[Path | None, FunctionSpec]:
    """Where the model's files are on this machine, and the spec with the store's signature if it had none.

    A local path is used as it is (development); a store reference is fetched through the
    sha256-verified cache, so a corrupt download is never loaded, and the store's trust policy
    (HYDRO_MODEL_PIN, HYDRO_TRUSTED_KEYS: see hydro_serving.store.trust) is checked on the manifest
    before any file is fetched, so an untrusted model is never unpickled.
    """
    if not spec.model:
        return None, spec
    if spec.model_is_local:
        path = Path(spec.model.removeprefix("file://")).expanduser()
        if not path.exists():
            raise ConfigError(f"model path {path} does not exist (function '{spec.name}')", field="model",
                              function=spec.name)
        return path.resolve(), spec
    from hydro_serving.store import fetch_model, manifest_of  # lazy: boto3 only when a store is used

    tree = Path(fetch_model(spec.model))  # refuses an untrusted or unpinned model (UntrustedModelError)
    manifest = manifest_of(tree)
    if spec.signature is None and manifest is not None and manifest.signature is not None:
        spec = replace(spec, signature=manifest.signature)
    return tree, spec


def import_entrypoint(template: Template) -> Any:
    """The template's handler class, imported from its folder under a private module name.

    A private name keeps template modules (``handler``, ``index``) from colliding with the user's
    own ``handler.py``, which the python3 template imports by that name.
    """
    parts = template.module.split(".")
    file = template.path.joinpath(*parts).with_suffix(".py")
    if not file.is_file():
        file = template.path.joinpath(*parts, "__init__.py")
    if not file.is_file():
        raise ConfigError(f"template '{template.name}': entrypoint module {template.module} not found in "
                          f"{template.path}", field="entrypoint")
    module_name = f"_hydro_template_{template.name.replace('-', '_')}.{template.module}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ConfigError(f"template '{template.name}': cannot import {file}", field="entrypoint")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
    try:
        return getattr(module, template.attribute)
    except AttributeError:
        raise ConfigError(f"template '{template.name}': {template.module} has no {template.attribute}",
                          field="entrypoint") from None


def load_function(spec: FunctionSpec, template: Template | None = None,
                  metrics_registry: CollectorRegistry | None = None) -> LoadedFunction:
    """Resolve, import and ``load()`` a function's handler; every failure is an exception.

    ``metrics_registry`` is handed to the handler in its :class:`LoadContext` so its own series
    are exported by the runtime's ``/metrics``.
    """
    template = template or get_template(spec.lang)
    kind = adapter_class(template)
    template.check_options(spec.options)  # before a model is fetched: a misspelt option is the caller's 400
    model_path, spec = resolve_model(spec)
    handler_dir = Path(spec.handler).expanduser().resolve() if spec.handler else None
    if kind.needs_handler_dir and (handler_dir is None or not handler_dir.is_dir()):
        raise ConfigError(f"function '{spec.name}' (lang {spec.lang}) needs 'handler': a folder with "
                          f"handler.py; {handler_dir or 'none given'}", field="handler", function=spec.name)
    handler_class = import_entrypoint(template)
    check_entrypoint(template, handler_class)
    handler = handler_class()
    manifest, mismatches = check_framework_versions(spec, model_path)
    if manifest is not None:  # the replica's log says which version a reference (an alias) resolved to
        log.info("function %s: model %s resolved to %s", spec.name, spec.model, manifest.ref)
    handler.load(model_path, LoadContext(spec=spec, model_dir=model_path, handler_dir=handler_dir,
                                         metrics_registry=metrics_registry, template=template))
    return LoadedFunction(spec=spec, template=template, adapter=kind(handler), model_path=model_path,
                          handler_dir=handler_dir, manifest=manifest, version_mismatches=mismatches)


def check_framework_versions(spec: FunctionSpec, model_path: Path | None) -> tuple[Any, dict[str, Any]]:
    """The store model's manifest and how this process's framework versions differ from its training's.

    A difference is a warning, not a failure (a patch release rarely matters, and refusing would
    take a function down on an image rebuild); the V2 metadata reports it (``parameters``).
    """
    if model_path is None or not spec.model or spec.model_is_local:
        return None, {}
    from hydro_serving.store import manifest_of
    from hydro_serving.store.versions import version_mismatches

    manifest = manifest_of(model_path)
    if manifest is None or not manifest.framework_versions:
        return manifest, {}
    mismatches = version_mismatches(manifest.framework_versions)
    if mismatches:
        said = ", ".join(f"{p} {m['trained']} (here {m['installed'] or 'not installed'})"
                         for p, m in mismatches.items())
        log.warning("function %s: model %s was trained with %s; predictions may differ", spec.name,
                    manifest.ref, said)
    return manifest, mismatches


@dataclass(frozen=True)
class Preloaded:
    """A function loaded by the server's master process before it forked its workers (see server.py)."""

    loaded: LoadedFunction
    seconds: float


def describe_failure(exc: BaseException) -> str:
    """A one-line cause for /_/ready: our errors' own words, otherwise the exception type and text."""
    if isinstance(exc, HydroError):
        return exc.message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BackgroundLoader:
    """Loads the function in a thread and records the outcome for the readiness endpoints.

    ``on_failure`` runs after a failed load has been logged (the server uses it to exit the
    worker so a supervisor notices); ``on_ready`` gets the load duration in seconds.
    """

    def __init__(self, spec: FunctionSpec, template: Template | None = None,
                 on_ready: Callable[[float], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None,
                 metrics_registry: CollectorRegistry | None = None,
                 preloaded: Preloaded | None = None) -> None:
        self.spec = spec
        self.preloaded = preloaded
        self.metrics_registry = metrics_registry
        self.template = template
        self.on_ready = on_ready
        self.on_failure = on_failure
        self.loaded: LoadedFunction | None = None
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> str:
        if self.loaded is not None:
            return "ready"
        return "failed" if self.error is not None else "loading"

    def start(self) -> None:
        if self.preloaded is not None and self.loaded is None:  # loaded before the fork: ready at once
            self.loaded, self.load_seconds = self.preloaded.loaded, self.preloaded.seconds
            self._done.set()
            if self.on_ready is not None:
                self.on_ready(self.load_seconds)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"hydro-load-{self.spec.name}", daemon=True)
            self._thread.start()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def _run(self) -> None:
        started = time.monotonic()
        log.info("function '%s': loading (lang %s, model %s)", self.spec.name, self.spec.lang, self.spec.model)
        try:
            loaded = load_function(self.spec, self.template, self.metrics_registry)
        except BaseException as exc:
            self.error = describe_failure(exc)
            log.error("function '%s': load failed: %s", self.spec.name, self.error, exc_info=exc)
            self._done.set()
            if self.on_failure is not None:
                self.on_failure(exc)
            return
        self.load_seconds = time.monotonic() - started
        self.loaded = loaded
        self._done.set()
        log.info("function '%s': ready in %.3fs", self.spec.name, self.load_seconds)
        if self.on_ready is not None:
            self.on_ready(self.load_seconds)
