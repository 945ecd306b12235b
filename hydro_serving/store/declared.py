"""What a model itself says about its inputs, and a signature checked against it (issue 14 point 8).

A signature with one input ``foo`` for a model that knows its 13 column names used to be accepted at
upload and failed (or silently fed wrong columns) at the first request. Here the model is asked:

* scikit-learn: ``feature_names_in_`` (ordered), else ``n_features_in_``;
* ONNX: the graph's inputs (names and shapes), read with ``onnx`` without running anything;
* XGBoost / LightGBM: the booster's feature names (ordered) and count;
* Keras: the model's input names and shapes.

What was found is a :class:`Declared`, stored in the manifest's metadata under
:data:`METADATA_KEY` at upload, so the gateway compares a stack's signature against it at deploy
without loading the model (a pickle is code). Frameworks are imported lazily, only for their format.

Rules (the columns of a tabular model are fed in the signature's order, so order matters):

* a model with ordered feature names takes either one input per feature, with exactly those names in
  that order, or a single 2-D input ``[-1, n]`` (a matrix of rows);
* a model that knows only its feature count takes that many one-value inputs, or one ``[-1, n]`` input;
* a model with several named input tensors (ONNX, Keras) takes inputs with exactly those names, each
  with a compatible shape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydro_serving.contract.signature import Signature
from hydro_serving.errors import ValidationError

log = logging.getLogger(__name__)

METADATA_KEY = "hydro.model_inputs"
_SHOWN = 8


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...] | None  # -1 for a dimension the model leaves open


@dataclass(frozen=True)
class Declared:
    """The model's own word on its inputs; ``source`` says where it came from (for error messages)."""

    source: str
    names: tuple[str, ...] | None = None  # ordered feature names of a tabular model
    width: int | None = None  # number of features of a tabular model
    tensors: tuple[Tensor, ...] | None = None  # named input tensors (ONNX, Keras) when there are several

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.names is not None:
            out["names"] = list(self.names)
        if self.width is not None:
            out["width"] = self.width
        if self.tensors is not None:
            out["tensors"] = [{"name": t.name, "shape": list(t.shape) if t.shape is not None else None}
                              for t in self.tensors]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Declared | None:
        """Read back what :meth:`to_dict` wrote into a manifest (untrusted: anything odd is ignored)."""
        if not isinstance(data, dict) or not isinstance(data.get("source"), str):
            return None
        names = data.get("names")
        width = data.get("width")
        tensors = data.get("tensors")
        try:
            return cls(
                source=data["source"],
                names=tuple(str(n) for n in names) if isinstance(names, list) else None,
                width=int(width) if isinstance(width, int) and not isinstance(width, bool) else None,
                tensors=tuple(Tensor(str(t["name"]), tuple(int(d) for d in t["shape"])
                                     if isinstance(t.get("shape"), list) else None)
                              for t in tensors) if isinstance(tensors, list) else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def declared_of_manifest(manifest: Any) -> Declared | None:
    """What a version's model declared, as recorded in its manifest's metadata at upload (None: unknown)."""
    metadata = getattr(manifest, "metadata", None)
    return Declared.from_dict(metadata.get(METADATA_KEY)) if isinstance(metadata, dict) else None


def _shown(names: list[str] | tuple[str, ...]) -> str:
    head = ", ".join(names[:_SHOWN])
    return head + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def _tabular(source: str, names: Any, width: Any) -> Declared | None:
    ordered = tuple(str(n) for n in names) if names is not None and len(names) else None
    count = int(width) if width is not None else (len(ordered) if ordered else None)
    if ordered is None and count is None:
        return None
    return Declared(source=source, names=ordered, width=count)


def _tensors(source: str, tensors: list[Tensor]) -> Declared | None:
    if not tensors:
        return None
    if len(tensors) == 1:
        only = tensors[0]
        if only.shape is not None and len(only.shape) == 2 and only.shape[1] > 0:
            return Declared(source=source, width=only.shape[1])  # a matrix of rows: tabular
        return Declared(source=source, tensors=tuple(tensors))
    return Declared(source=source, tensors=tuple(tensors))


# ---- reading models ------------------------------------------------------------------------------


def _model_file(path: Path, suffixes: tuple[str, ...]) -> Path | None:
    if path.is_file():
        return path if path.suffix.lower() in suffixes else None
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    return found[0] if len(found) == 1 else None


def _sklearn(path: Path) -> Declared | None:
    file = _model_file(path, (".joblib", ".pkl", ".pickle"))
    if file is None:
        return None  # .skops needs the trusted types of the function's options: checked at load
    from hydro_serving.store.safepickle import UnsafePickle, load_sklearn_pickle

    try:  # never joblib.load: a pickle is a program, and an unsigned one must never run (issue 11)
        model = load_sklearn_pickle(file)
    except UnsafePickle as exc:
        log.info("%s: not inspected for its inputs: %s", file.name, exc.message)
        return None
    return _tabular("feature_names_in_", getattr(model, "feature_names_in_", None),
                    getattr(model, "n_features_in_", None))


def _onnx(path: Path) -> Declared | None:
    file = _model_file(path, (".onnx",))
    if file is None:
        return None
    import onnx

    graph = onnx.load(str(file), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    tensors = []
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims) if dims else None
        tensors.append(Tensor(value.name, shape))
    return _tensors("ONNX inputs", tensors)


def _xgboost(path: Path) -> Declared | None:
    file = _model_file(path, (".ubj", ".xgb", ".json"))
    if file is None:
        return None
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(file))
    return _tabular("booster feature names", booster.feature_names, booster.num_features())


def _lightgbm(path: Path) -> Declared | None:
    file = _model_file(path, (".txt", ".lgb", ".model"))
    if file is None:
        return None
    import lightgbm

    booster = lightgbm.Booster(model_file=str(file))
    names = [n for n in booster.feature_name()]
    if all(n.startswith("Column_") for n in names):  # LightGBM's placeholders: only the count is known
        return Declared(source="booster feature count", width=booster.num_feature())
    return _tabular("booster feature names", names, booster.num_feature())


def _keras(path: Path) -> Declared | None:
    file = _model_file(path, (".keras", ".h5"))
    if file is None:
        return None  # a SavedModel's signatures are checked at load
    import keras

    model = keras.models.load_model(str(file), compile=False, safe_mode=True)
    tensors = [Tensor(str(getattr(t, "name", f"input_{i}")).split(":")[0],
                      tuple(-1 if d is None else int(d) for d in t.shape))
               for i, t in enumerate(model.inputs)]
    return _tensors("Keras input shapes", tensors)


_READERS = {"sklearn": _sklearn, "onnx": _onnx, "xgboost": _xgboost, "lightgbm": _lightgbm,
            "tensorflow": _keras}


def declared_inputs(path: str | Path, framework: str | None) -> Declared | None:
    """What the model at ``path`` declares about its inputs; None when it says nothing we can read.

    A model that cannot be read here (a framework not installed, a format we do not inspect) is not an
    error of the signature: the runtime checks it when it loads the model.
    """
    reader = _READERS.get(framework or "")
    if reader is None:
        return None
    try:
        return reader(Path(path))
    except ImportError as exc:
        log.info("cannot inspect the %s model at %s (%s): its signature is checked when it loads",
                 framework, path, exc)
        return None
    except Exception as exc:  # a file its framework cannot read: the runtime reports that when it loads it
        log.warning("could not read the inputs of the %s model at %s (%s: %s); its signature is not checked "
                    "against it", framework, path, type(exc).__name__, exc)
        return None


# ---- the check -----------------------------------------------------------------------------------


def check_signature(signature: Signature | None, declared: Declared | None, field: str = "signature") -> None:
    """Raise a 400 naming ``<field>.inputs`` when ``signature`` cannot feed the model that ``declared``."""
    if signature is None or declared is None or not signature.inputs:
        return
    inputs = signature.inputs
    where = f"{field}.inputs"
    if declared.tensors is not None:
        _check_tensors(inputs, declared, where)
        return
    if len(inputs) == 1 and inputs[0].row_shape is not None and len(inputs[0].row_shape) == 1:
        (n,) = inputs[0].row_shape
        if n in (-1, declared.width) or declared.width is None:
            return  # one [-1, n] matrix of rows
        listed = f": {_shown(declared.names)}" if declared.names else ""
        raise ValidationError(f"{where}[0].shape: input '{inputs[0].name}' has {n} values per row, but the model "
                              f"takes {declared.width} features ({declared.source}{listed})", field=f"{where}[0].shape")
    names = [f.name for f in inputs]
    if declared.names is not None:
        want = list(declared.names)
        if names == want:
            return
        missing = [n for n in want if n not in names]
        unknown = [n for n in names if n not in want]
        if unknown:
            i = names.index(unknown[0])
            raise ValidationError(f"{where}[{i}].name: '{unknown[0]}' is not a feature of the model; it expects "
                                  f"{len(want)} features ({declared.source}): {_shown(want)}",
                                  field=f"{where}[{i}].name")
        if missing:
            raise ValidationError(f"{where}: the model expects {len(want)} features ({declared.source}): "
                                  f"{_shown(want)}; missing from the signature: {_shown(missing)}", field=where)
        raise ValidationError(f"{where}: the features are fed in the signature's order, and the model was trained on "
                              f"them in this order ({declared.source}): {_shown(want)}", field=where)
    if declared.width is not None and len(inputs) != declared.width:
        raise ValidationError(f"{where}: the signature declares {len(inputs)} input(s) ({_shown(names)}), but the "
                              f"model takes {declared.width} features ({declared.source})", field=where)


def _check_tensors(inputs: Any, declared: Declared, where: str) -> None:
    assert declared.tensors is not None
    want = {t.name: t for t in declared.tensors}
    names = [f.name for f in inputs]
    for i, fld in enumerate(inputs):
        tensor = want.get(fld.name)
        if tensor is None:
            raise ValidationError(f"{where}[{i}].name: '{fld.name}' is not an input of the model; it takes "
                                  f"{_shown(list(want))} ({declared.source})", field=f"{where}[{i}].name")
        if fld.shape is not None and tensor.shape is not None and not _shape_fits(fld.shape, tensor.shape):
            raise ValidationError(f"{where}[{i}].shape: input '{fld.name}' is declared {list(fld.shape)}, but the "
                                  f"model takes {list(tensor.shape)} ({declared.source})", field=f"{where}[{i}].shape")
    missing = [n for n in want if n not in names]
    if missing:
        raise ValidationError(f"{where}: the model takes the inputs {_shown(list(want))} ({declared.source}); missing "
                              f"from the signature: {_shown(missing)}", field=where)


def _shape_fits(declared: tuple[int, ...], model: tuple[int, ...]) -> bool:
    if len(declared) != len(model):
        return False
    return all(a == -1 or b == -1 or a == b for a, b in zip(declared, model, strict=True))
