"""Detect a model's framework from its files, without importing any framework.

Structure first (Spark ML ``metadata/`` + ``stages/``, TensorFlow ``saved_model.pb``), then file
extensions, then a peek at the first bytes where an extension is shared (``.json``, ``.txt``).
A directory whose files point at two frameworks is ambiguous: ``None``, never a guess.
"""

from __future__ import annotations

from pathlib import Path

FRAMEWORKS = ("sklearn", "onnx", "spark", "tensorflow", "xgboost", "lightgbm")
_BY_SUFFIX = {
    ".joblib": "sklearn", ".pkl": "sklearn", ".pickle": "sklearn", ".skops": "sklearn",
    ".onnx": "onnx",
    ".keras": "tensorflow", ".h5": "tensorflow",
    ".ubj": "xgboost", ".xgb": "xgboost",
    ".lgb": "lightgbm",
}
_PEEK = 4096


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(_PEEK)
    except OSError:
        return b""


def _file_framework(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    if suffix == ".json":
        head = _head(path).lstrip()
        if head.startswith(b"{") and b'"learner"' in head:
            return "xgboost"
        return None
    if suffix == ".txt" or suffix == ".model":
        lines = _head(path).splitlines()[:3]
        if lines and (lines[0].strip() == b"tree" or lines[0].startswith(b"version=v")):
            return "lightgbm"
    return None


def _spark_root(root: Path) -> bool:
    return (root / "metadata").is_dir() and (root / "stages").is_dir()


def detect_framework(path: str | Path) -> str | None:
    """The framework of a model file or directory, or None when unknown or ambiguous."""
    path = Path(path)
    if path.is_file():
        return _file_framework(path)
    if not path.is_dir():
        return None
    if _spark_root(path):
        return "spark"
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        return "tensorflow"
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and not any(p.is_file() for p in path.iterdir() if not p.name.startswith(".")):
        inner = detect_framework(subdirs[0])  # a model folder wrapped in one more folder
        if inner in ("spark", "tensorflow"):
            return inner
    found = {fw for p in path.rglob("*") if p.is_file() and (fw := _file_framework(p))}
    return found.pop() if len(found) == 1 else None
