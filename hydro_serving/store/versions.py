"""The framework versions a model was trained with: recorded at upload, pinned at build, checked at load.

A pickled scikit-learn model loaded by another scikit-learn release may warn, fail, or silently
predict differently; the same holds, less sharply, for the native formats. So ``hydro model
upload`` records, in the manifest's ``framework_versions``, the versions of the packages of the
model's framework as the uploading process has them: a module already imported there (the
training script that uploads through the sdk) gives its ``__version__``, otherwise the installed
distribution's version is read (the CLI imports no framework). Builds pin these versions
(:func:`requirement_pins`) and the runtime compares them with its own at load
(:func:`version_mismatches`), logging a warning and reporting the difference in the V2 metadata.

Nothing here imports a framework.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata

# framework -> [(distribution, module)] whose versions matter to read its model files
FRAMEWORK_PACKAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "sklearn": (("scikit-learn", "sklearn"), ("numpy", "numpy"), ("scipy", "scipy"), ("joblib", "joblib")),
    "xgboost": (("xgboost", "xgboost"), ("numpy", "numpy")),
    "lightgbm": (("lightgbm", "lightgbm"), ("numpy", "numpy")),
    "onnx": (("onnx", "onnx"), ("onnxruntime", "onnxruntime"), ("numpy", "numpy")),
    "tensorflow": (("tensorflow", "tensorflow"), ("keras", "keras"), ("numpy", "numpy")),
    "spark": (("pyspark", "pyspark"), ("numpy", "numpy")),
    "statsmodels": (("statsmodels", "statsmodels"), ("numpy", "numpy"), ("pandas", "pandas")),
}
PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+!_-]{0,63}$")
MAX_PACKAGES = 32


def _live_version(distribution: str, module: str) -> str | None:
    loaded = sys.modules.get(module)
    version = getattr(loaded, "__version__", None) if loaded is not None else None
    if isinstance(version, str) and VERSION_RE.match(version):
        return version
    try:
        found = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    return found if VERSION_RE.match(found) else None


def detect_versions(framework: str | None) -> dict[str, str]:
    """``{distribution: version}`` of the framework's packages present in this process (empty if unknown)."""
    out: dict[str, str] = {}
    for distribution, module in FRAMEWORK_PACKAGES.get(framework or "", ()):
        version = _live_version(distribution, module)
        if version is not None:
            out[distribution] = version
    return out


def installed_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """The versions this process has of ``packages`` (None: not installed)."""
    modules = {d: m for pkgs in FRAMEWORK_PACKAGES.values() for d, m in pkgs}
    return {p: _live_version(p, modules.get(p, p.replace("-", "_"))) for p in packages}


def version_mismatches(recorded: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """``{package: {"trained": v, "installed": w}}`` for every recorded package whose version differs here."""
    installed = installed_versions(recorded)
    return {p: {"trained": v, "installed": installed[p]} for p, v in sorted(recorded.items())
            if installed[p] != v}


def requirement_pins(recorded: Mapping[str, str]) -> list[str]:
    """``package==version`` lines for a build's requirements (validated names and versions only)."""
    return [f"{p}=={v}" for p, v in sorted(recorded.items()) if PACKAGE_RE.match(p) and VERSION_RE.match(v)]


def pin_requirements(lines: Iterable[str], recorded: Mapping[str, str]) -> list[str]:
    """A template's requirement lines with each recorded package pinned to its trained version.

    A line naming a recorded package (``scikit-learn>=1.3``) becomes its pin
    (``scikit-learn==1.9.1``); recorded packages the template does not list (scipy, a dependency
    of scikit-learn) are appended, pinned, so the resolver cannot pick another release of them.
    """
    pins = {p.lower().replace("_", "-"): f"{p}=={v}" for p, v in sorted(recorded.items())
            if PACKAGE_RE.match(p) and VERSION_RE.match(v)}
    out, used = [], set()
    for line in lines:
        name = re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        if name in pins and not line.lstrip().startswith("#"):
            out.append(pins[name])
            used.add(name)
        else:
            out.append(line.rstrip("\n"))
    return out + [pin for name, pin in pins.items() if name not in used]


def check_recorded(data: object, where: str) -> dict[str, str]:
    """A manifest's ``framework_versions``, validated (it is untrusted input: names become requirement lines)."""
    from hydro_serving.errors import StoreError

    if not isinstance(data, dict) or len(data) > MAX_PACKAGES:
        raise StoreError(f"damaged manifest {where}: field 'framework_versions' must be an object of at most "
                         f"{MAX_PACKAGES} package versions", field="framework_versions")
    for package, version in data.items():
        if not (isinstance(package, str) and PACKAGE_RE.match(package)):
            raise StoreError(f"damaged manifest {where}: field 'framework_versions' names an invalid package "
                             f"{str(package)[:80]!r}", field="framework_versions")
        if not (isinstance(version, str) and VERSION_RE.match(version)):
            raise StoreError(f"damaged manifest {where}: field 'framework_versions.{package}' is not a version: "
                             f"{str(version)[:80]!r}", field=f"framework_versions.{package}")
    return dict(data)
