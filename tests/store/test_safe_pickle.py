"""Reading a scikit-learn pickle's declared inputs at upload never runs the pickle's code (issue 11 / 14 point 8).

Hostile model files: a top-level ``__reduce__`` to ``os.system``, one hidden in the nested pickle of an
object array (where ``feature_names_in_`` lives), a re-exported class whose constructor touches disk, a
garbled file. Each is refused before its global is called: the marker file never appears, the model is
just not inspected, and the upload itself still works (the runtime checks the model when it loads).
Real estimators (trained here) are read through the same restricted loader.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from hydro_serving.store.declared import declared_inputs
from hydro_serving.store.safepickle import UnsafePickle, allowed, load_sklearn_pickle


class Touch:
    """Unpickling this runs ``os.system('touch <marker>')``: what an attacker's model file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # the pickle protocol
        return (os.system, (f"touch {self.marker}",))


def _xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((60, 3))
    return x, (x[:, 0] > 0.5).astype(int)


@pytest.mark.parametrize("make", [
    lambda x, y: LogisticRegression().fit(x, y),
    lambda x, y: Pipeline([("s", StandardScaler()), ("c", RandomForestClassifier(n_estimators=3))]).fit(x, y),
    lambda x, y: HistGradientBoostingClassifier(max_iter=3).fit(x, y),
], ids=["logistic", "pipeline-forest", "histgb"])
def test_real_estimators_are_read_through_the_restricted_loader(tmp_path: Path, make) -> None:
    x, y = _xy()
    model = make(x, y)
    first = model.steps[0][1] if isinstance(model, Pipeline) else model  # a Pipeline reads its first step's
    first.feature_names_in_ = np.array(["a", "b", "c"], dtype=object)  # as a DataFrame fit records them
    joblib.dump(model, tmp_path / "model.joblib")
    declared = declared_inputs(tmp_path / "model.joblib", "sklearn")
    assert declared is not None and declared.names == ("a", "b", "c") and declared.width == 3


def test_a_reduce_to_os_system_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Touch(marker)))
    joblib.dump(Touch(marker), tmp_path / "model.joblib")
    for name in ("model.pkl", "model.joblib"):
        with pytest.raises(UnsafePickle, match=r"(posix|os|nt)\.system"):
            load_sklearn_pickle(tmp_path / name)
        assert declared_inputs(tmp_path / name, "sklearn") is None
    assert not marker.exists()


def test_a_payload_inside_an_object_array_never_runs(tmp_path: Path) -> None:
    """joblib reads an object array (the feature names) as a nested pickle: it is restricted too."""
    marker = tmp_path / "pwned"
    x, y = _xy()
    model = LogisticRegression().fit(x, y)
    model.feature_names_in_ = np.array(["a", Touch(marker), "c"], dtype=object)
    joblib.dump(model, tmp_path / "model.joblib")
    assert declared_inputs(tmp_path / "model.joblib", "sklearn") is None
    assert not marker.exists()


def test_classes_re_exported_by_sklearn_or_builtins_that_run_code_are_refused() -> None:
    assert not allowed("builtins", "eval") and not allowed("builtins", "getattr") and not allowed("builtins", "exec")
    assert not allowed("sklearn.utils._joblib", "Memory")  # joblib's Memory creates folders: defined elsewhere
    assert not allowed("sklearn.utils", "os") and not allowed("sklearn.base", "nonexistent")
    assert not allowed("numpy", "load") and not allowed("numpy.lib.npyio", "load")
    assert not allowed("subprocess", "Popen") and not allowed("os", "system")
    assert allowed("sklearn.linear_model._logistic", "LogisticRegression")
    assert allowed("numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray", "_reconstruct")


def test_a_nested_attribute_or_a_garbled_file_is_not_inspected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    buf.write(b"\x80\x04\x95" + b"\x00" * 8 + b"\x8c\x05numpy\x94\x8c\x0bndarray.put\x94\x93\x94.")
    (tmp_path / "model.pkl").write_bytes(buf.getvalue())
    with pytest.raises(UnsafePickle):
        load_sklearn_pickle(tmp_path / "model.pkl")
    (tmp_path / "model.joblib").write_bytes(b"not a pickle at all")
    assert declared_inputs(tmp_path / "model.joblib", "sklearn") is None
