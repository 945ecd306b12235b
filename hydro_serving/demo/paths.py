"""Where the demo's files live in the repository, and loading the shared feature code by path.

``functions/pm-features/features.py`` is a function's file, not part of the package, yet the
training code must run exactly that code; loading it by path (rather than copying it into the
package) is what keeps training and serving identical.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hydro_serving.errors import ConfigError

_MODULE = "hydro_pm_features"


def repo_root() -> Path:
    """The repository checkout this package runs from (an editable install)."""
    return Path(__file__).resolve().parents[2]


def features_file(root: Path | None = None) -> Path:
    path = (root or repo_root()) / "functions" / "pm-features" / "features.py"
    if not path.is_file():
        raise ConfigError(f"the demo's feature code is missing ({path}); run the demo from a checkout of the "
                          "repository installed with 'pip install -e .'")
    return path


def load_features(root: Path | None = None) -> ModuleType:
    """The feature module, imported once per process (the same name the pm-features handler uses)."""
    module = sys.modules.get(_MODULE)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(_MODULE, features_file(root))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE] = module
    spec.loader.exec_module(module)
    return module
