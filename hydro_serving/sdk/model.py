"""The model handler: a template writes ``load_model`` and ``predict``; this class does the rest of a load.

Every model template did the same three things before touching its framework - find the one model
file among the declared patterns, refuse unknown or malformed options, complain when no model was
given - and each did them slightly differently (four re-read their own ``template.yml``, one forgot
the option check). :meth:`ModelHandler.load` does them once, from the template's own declaration
(``model_patterns`` and the ``options`` schema of ``template.yml``), then calls the subclass.

The runtime serves a ``kind: model`` template only through this class (see
:mod:`hydro_serving.runtime.adapters`): the optional parts (``infer_v2``, ``predict_batch``,
``signature``, ``close``) have working defaults here, so the runtime never probes a handler for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydro_serving.contract import Signature
from hydro_serving.errors import ConfigError
from hydro_serving.sdk.context import LoadContext
from hydro_serving.templates import Template, get_template


class ModelHandler:
    """Base class of a model template's handler: built with no arguments, loaded once, then called per request.

    Subclasses implement :meth:`load_model` and :meth:`predict`; they may override :meth:`infer_v2`
    (V2 tensors straight to the framework), :meth:`predict_batch` (many requests in one framework
    call), :meth:`locate_model` (a model that is a folder, not a file) and :meth:`close`. A caller's
    mistake is a :class:`hydro_serving.errors.ValidationError` (400 naming the field); any other
    exception becomes a 500 whose details go only to the log.
    """

    signature: Signature | None = None  # what the model itself reports, when the spec declares none

    # ---- load: the template method ----------------------------------------------------------------

    def load(self, model_dir: Path | None, context: LoadContext) -> None:
        """Check the options, find the model, then :meth:`load_model` (called once, by the runtime)."""
        template = context.template or get_template(context.spec.lang)
        template.check_options(context.options)
        if model_dir is None:
            raise ConfigError(f"function '{context.spec.name}' (lang {template.name}) needs 'model'", field="model",
                              function=context.spec.name)
        self.load_model(self.locate_model(Path(model_dir), template), context)

    def locate_model(self, model_dir: Path, template: Template) -> Path:
        """The path :meth:`load_model` gets: by default the single file matching the template's patterns."""
        return find_model_file(model_dir, template.model_patterns, template.name)

    def load_model(self, path: Path, context: LoadContext) -> None:
        """Load the framework's model from ``path``; ``context.options`` are already checked against the schema."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_model(path, context)")

    # ---- requests ---------------------------------------------------------------------------------

    def predict(self, payload: Any) -> Any:
        """One decoded JSON request -> a JSON-able answer."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict(payload)")

    def infer_v2(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """V2 tensors (``{name: numpy array}``) -> ``{output name: array}``.

        By default the tensors become a columnar JSON object for :meth:`predict`, whose answer is the
        one output ``predict``; a template overrides this to feed tensors to its framework directly.
        """
        columnar = {name: array.tolist() for name, array in arrays.items()}
        return {"predict": self.predict(columnar)}

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        """One answer per payload, in order; an element that is an exception fails only that request.

        By default each payload is predicted on its own (adaptive batching then only queues); a
        template whose framework gains from one big call overrides this (see
        :func:`hydro_serving.sdk.outputs.answer_batch`).
        """
        results: list[Any] = []
        for payload in payloads:
            try:
                results.append(self.predict(payload))
            except Exception as exc:  # this request's failure is its answer; the others still get theirs
                results.append(exc)
        return results

    def close(self) -> None:
        """Release what the model holds (threads, sessions) when the replica exits; by default nothing."""


def find_model_file(path: Path, patterns: tuple[str, ...] | list[str], template: str) -> Path:
    """The model file to load: ``path`` itself, or the single file in the directory matching ``patterns``.

    A directory with none or several matches is an error that lists what was found, because
    silently picking one of two ``*.pkl`` files would serve the wrong model.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"model path {path} does not exist", field="model")
    matches = sorted({p for pattern in patterns for p in path.rglob(pattern) if p.is_file()})
    if len(matches) == 1:
        return matches[0]
    wanted = ", ".join(patterns) or "(no patterns)"
    if not matches:
        present = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise ConfigError(f"no model file matching {wanted} for template '{template}' in {path} "
                          f"(found: {present})", field="model")
    names = ", ".join(str(p.relative_to(path)) for p in matches[:10])
    raise ConfigError(f"several model files match {wanted} in {path} ({names}); point 'model' at one of them",
                      field="model")
