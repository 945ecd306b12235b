"""Reading a scikit-learn pickle's declared inputs without running the code a pickle can carry.

Why: at upload the store records what a model declares (``feature_names_in_``, ``n_features_in_``,
issue 14 point 8), and a pickle is a program: ``joblib.load`` on a file someone else wrote runs whatever
its ``__reduce__`` names (``os.system``, ``builtins.exec``...). The platform promises that an unsigned
pickle never runs, so the store reads one with joblib's own unpickler restricted to the globals a
scikit-learn estimator is made of:

* classes *defined* in ``sklearn`` (estimators, cython trees and losses, ``Bunch``; a class re-exported
  there from elsewhere, such as joblib's ``Memory``, is refused) and cython's ``__pyx_unpickle_*``
  helpers of sklearn's compiled modules;
* numpy's array, dtype and scalar reconstruction, and its random-state constructors (with the cython
  helpers of ``numpy.random``); scipy's sparse matrix classes;
* joblib's ``NumpyArrayWrapper`` (the array framing of a ``.joblib`` file; joblib routes the nested
  pickle of an object array, e.g. the feature names, through the same ``find_class``);
* ``copyreg._reconstructor`` and a few inert builtins (``set``, ``frozenset``, ``slice``, ``complex``).

Anything else stops the read with :class:`UnsafePickle` before the global is even imported: the
model is then simply not inspected (the runtime checks it at load, which a signed or trusted model
reaches anyway). A joblib old enough not to route nested pickles through ``find_class`` is not used.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path
from typing import Any

from hydro_serving.errors import HydroError

_NUMPY_FUNCTIONS = frozenset({"_reconstruct", "scalar", "_frombuffer", "__randomstate_ctor", "__bit_generator_ctor",
                              "__generator_ctor"})
_BUILTINS = frozenset({"set", "frozenset", "slice", "complex", "bytearray"})


class UnsafePickle(HydroError):
    """The pickle names a global outside the allow-list (or cannot be read safely): it is not inspected."""


def _is_numpy_safe(module: str, name: str) -> bool:
    if name in _NUMPY_FUNCTIONS:
        return module.startswith("numpy.")
    if name.startswith("__pyx_unpickle_") and module.startswith("numpy.random."):  # SeedSequence & co.
        return callable(_resolve(module, name))
    if not (module == "numpy" or module.startswith("numpy.")):
        return False
    obj = _resolve(module, name)
    import numpy as np

    return isinstance(obj, type) and issubclass(obj, (np.ndarray, np.dtype, np.generic, np.random.RandomState,
                                                      np.random.BitGenerator, np.random.Generator,
                                                      np.random.SeedSequence))


def _is_sklearn_safe(module: str, name: str) -> bool:
    if not module.startswith("sklearn."):
        return False
    obj = _resolve(module, name)
    if isinstance(obj, type):
        return (getattr(obj, "__module__", "") or "").startswith("sklearn.")  # defined there, not re-exported
    # cython's pickle helper of a compiled sklearn type: it only rebuilds that type from its state
    return name.startswith("__pyx_unpickle_") and callable(obj) and not isinstance(obj, type)


def _is_scipy_sparse(module: str, name: str) -> bool:
    if not module.startswith("scipy.sparse"):
        return False
    obj = _resolve(module, name)
    return isinstance(obj, type) and (getattr(obj, "__module__", "") or "").startswith("scipy.sparse")


def _resolve(module: str, name: str) -> Any:
    """Import ``module`` (an installed, trusted package: sklearn, numpy, scipy) and read ``name``."""
    if "." in name:
        raise UnsafePickle(f"the pickle names a nested attribute {module}.{name}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UnsafePickle(f"the pickle names {module}.{name}, which does not exist here") from exc


def allowed(module: str, name: str) -> bool:
    """Whether ``module.name`` may be looked up while reading a model's pickle (see the module docstring)."""
    if (module, name) in {("copyreg", "_reconstructor"), ("joblib.numpy_pickle", "NumpyArrayWrapper")}:
        return True
    if module == "builtins":
        return name in _BUILTINS
    if module == "collections":
        return name == "OrderedDict"
    try:
        return _is_numpy_safe(module, name) or _is_sklearn_safe(module, name) or _is_scipy_sparse(module, name)
    except UnsafePickle:  # no such name (or a nested one): nothing to allow
        return False


@functools.cache
def _joblib_routes_nested_pickles() -> bool:
    """joblib reads an object array's nested pickle with the outer unpickler's ``find_class`` (1.5+)."""
    import joblib.numpy_pickle as npk

    try:
        return "find_class = unpickler.find_class" in inspect.getsource(npk.NumpyArrayWrapper.read_array)
    except (OSError, TypeError, AttributeError):
        return False


def load_sklearn_pickle(file: Path) -> Any:
    """The object in a ``.joblib``/``.pkl`` file, read with only the allowed globals; :class:`UnsafePickle` else."""
    import joblib.numpy_pickle as npk

    if not _joblib_routes_nested_pickles():
        raise UnsafePickle("this joblib reads nested pickles unrestricted: the model is not inspected")

    class Restricted(npk.NumpyUnpickler):  # type: ignore[misc,name-defined]
        def find_class(self, module: str, name: str) -> Any:
            if not allowed(module, name):
                raise UnsafePickle(f"the pickle names {module}.{name}, which reading a model never needs")
            return super().find_class(module, name)

    takes_byte_order = "ensure_native_byte_order" in inspect.signature(npk.NumpyUnpickler.__init__).parameters
    with open(file, "rb") as handle, npk._validate_fileobject_and_memmap(handle, str(file), None) as (fobj, _):
        if isinstance(fobj, str):  # joblib < 0.10's format, with companion files: never read here
            raise UnsafePickle("a joblib file older than 0.10 is not inspected")
        unpickler = Restricted(str(file), fobj, True) if takes_byte_order else Restricted(str(file), fobj)
        try:
            return unpickler.load()
        except UnsafePickle:
            raise
        except Exception as exc:  # a truncated or garbled file: not ours to report here (the runtime will)
            raise UnsafePickle(f"the pickle could not be read ({type(exc).__name__})") from exc
