"""Per-function virtual environments, so two functions needing different versions of a library run side by side.

The gateway's local provider runs replicas as ``python -m hydro_serving.runtime`` processes. By default
they share the gateway's interpreter; a function that asks for isolation runs under the ``python`` of its
own virtual environment instead, built from the template's ``requirements.txt`` and the function's own
(``<handler>/requirements.txt``), with the hydro-serving package linked in so the runtime server runs
inside it.

How isolation is asked for (``HYDRO_ISOLATE``, in the function's ``environment`` in stack.yml, or in the
gateway's environment for every function):

* ``1`` / ``true`` / ``layered``: a venv with ``--system-site-packages``. The function's pinned
  requirements are installed into the venv and win over the machine's; whatever it does not pin
  (numpy, pyspark, tensorflow, ...) comes from the machine. Building one costs seconds, not a
  500 MB TensorFlow download per function: isolation where it is asked for, speed everywhere else.
* ``full``: a venv that sees nothing of the machine's packages; hydro-serving's own dependencies and
  every requirement are installed from the package index (slow, and needs the index).

Venvs are cached under ``HYDRO_VENVS`` (default ``$HYDRO_HOME/venvs``) by a sha256 of the requirement
files' contents, the mode, the Python version and where hydro-serving lives: a changed requirement
gives a new venv, an unchanged one is reused at no cost. A venv is built in a temporary folder and
renamed into place (a venv is relocatable when run as ``venv/bin/python -m ...``, which is how replicas
run), under a file lock, so two replicas starting at once build it once and nobody ever sees half a
venv. A pip failure is a :class:`ConfigError` naming the requirement and the file it came from.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hydro_serving.errors import ConfigError

log = logging.getLogger("hydro.gateway")
ISOLATE_ENV = "HYDRO_ISOLATE"
MARKER = "hydro-venv.json"
LAYERED = "layered"
FULL = "full"
_TRUE = {"1", "true", "yes", "on", LAYERED}
_FALSE = {"", "0", "false", "no", "off"}
DEFAULT_TIMEOUT = 1800.0


def isolation_mode(environment: Mapping[str, str] | None = None,
                   gateway_env: Mapping[str, str] | None = None) -> str | None:
    """``layered``, ``full`` or None (share the gateway's interpreter), from ``HYDRO_ISOLATE``.

    The function's own environment (stack.yml ``environment``) wins over the gateway's.
    """
    gateway_env = os.environ if gateway_env is None else gateway_env
    raw = (environment or {}).get(ISOLATE_ENV)
    if raw is None:
        raw = gateway_env.get(ISOLATE_ENV, "")
    value = str(raw).strip().lower()
    if value in _FALSE:
        return None
    if value in _TRUE:
        return LAYERED
    if value == FULL:
        return FULL
    raise ConfigError(f"{ISOLATE_ENV} must be 1, true, layered, full or 0, got {raw!r}", field=ISOLATE_ENV)


def replica_python(spec: Any, *, base_dir: Path | None = None) -> str:
    """The interpreter a replica of ``spec`` (a FunctionSpec) runs under: the gateway's, or its own venv's.

    This is the one call the local provider makes (in a thread: a first build runs pip).
    """
    mode = isolation_mode(spec.environment)
    if mode is None:
        return sys.executable
    from hydro_serving.templates import get_template

    handler_dir = Path(spec.handler) if spec.handler else None
    return str(ensure_function_venv(get_template(spec.lang), handler_dir, base_dir=base_dir, mode=mode,
                                    trained=trained_versions(spec)))


def trained_versions(spec: Any) -> dict[str, str]:
    """The framework versions the function's store model was trained with (its manifest), else none.

    The deploy's pin names the exact version; without one the reference is resolved as the replica
    would. A store that cannot answer gives an unpinned venv (logged): pins are a safeguard, and
    the runtime still warns at load when the versions differ.
    """
    if not spec.model or spec.model_is_local:
        return {}
    from hydro_serving.errors import HydroError
    from hydro_serving.replica import contract
    from hydro_serving.replica.environment import declared_environment
    from hydro_serving.store import open_store
    from hydro_serving.store.trust import PIN_ANNOTATION

    ref = (spec.annotations.get(PIN_ANNOTATION) or spec.model).split("@", 1)[0]
    try:
        store_url = declared_environment(spec).get(contract.STORE_ENV) or None  # the function's own, else ours
        return dict(open_store(store_url).get_manifest(ref).framework_versions)
    except HydroError as exc:
        log.warning("function %s: framework versions of %s unknown (%s); its venv is not pinned to them",
                    spec.name, ref, exc.message)
        return {}


def default_base_dir() -> Path:
    """``HYDRO_VENVS``, else ``$HYDRO_HOME/venvs``, else the user's data directory's ``hydro/venvs``."""
    if os.environ.get("HYDRO_VENVS"):
        return Path(os.environ["HYDRO_VENVS"]).expanduser()
    from hydro_serving.store.store import hydro_home

    return hydro_home() / "venvs"


def requirement_files(template: Any, handler_dir: Path | None) -> list[tuple[str, Path]]:
    """``[(label, path)]`` of the requirement files that exist: the template's, then the function's."""
    files: list[tuple[str, Path]] = []
    template_file = Path(template.path) / getattr(template, "requirements", "requirements.txt")
    if template_file.is_file():
        files.append((f"template {template.name}", template_file))
    if handler_dir is not None and (Path(handler_dir) / "requirements.txt").is_file():
        files.append(("function", Path(handler_dir) / "requirements.txt"))
    return files


def _pinned_template_file(base: Path, template: Any, files: list[tuple[str, Path]],
                          trained: Mapping[str, str]) -> list[tuple[str, Path]]:
    """The template's requirement file replaced by a copy pinned to ``trained`` (kept by content digest)."""
    from hydro_serving.store.versions import pin_requirements

    label = f"template {template.name}"
    source = dict(files).get(label)
    lines = source.read_text().splitlines() if source is not None else []
    text = "\n".join(pin_requirements(lines, trained)) + "\n"
    pinned = base / "pins" / f"{template.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.txt"
    if not pinned.is_file():
        pinned.parent.mkdir(parents=True, exist_ok=True)
        tmp = pinned.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, pinned)
    rest = [(lbl, path) for lbl, path in files if lbl != label]
    return [(f"{label} pinned to the model's training versions", pinned), *rest]


def package_dir() -> Path:
    """The hydro_serving package folder the venv links to (a source checkout or an installed copy)."""
    import hydro_serving

    return Path(hydro_serving.__file__).resolve().parent


def venv_key(files: list[tuple[str, Path]], mode: str) -> str:
    """sha256 of everything that makes two venvs differ: requirements' contents, mode, Python, hydro-serving."""
    digest = hashlib.sha256()
    identity = {
        "python": f"{sys.implementation.name}-{platform.python_version()}-{platform.machine()}",
        "base": sys.base_prefix,
        "prefix": sys.prefix,
        "mode": mode,
        "hydro": str(package_dir()),
    }
    digest.update(json.dumps(identity, sort_keys=True).encode())
    for label, path in files:
        digest.update(f"\0{label}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def venv_python(venv: Path) -> Path:
    """The venv's interpreter (not resolved: the symlink is what makes Python use the venv)."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_function_venv(template: Any, handler_dir: Path | None, *, base_dir: Path | None = None,
                         mode: str = LAYERED, timeout: float = DEFAULT_TIMEOUT,
                         trained: Mapping[str, str] | None = None) -> Path:
    """The python executable of the venv for ``template`` (a Template) + the function in ``handler_dir``.

    ``trained`` (a manifest's ``framework_versions``) pins the template's framework packages to the
    versions the model was trained with: a model trained elsewhere gets its own venv.
    Reused when already built; otherwise built once (other callers wait on the lock) and renamed into place.
    """
    if mode not in (LAYERED, FULL):
        raise ConfigError(f"isolation mode must be {LAYERED} or {FULL}, got {mode!r}", field=ISOLATE_ENV)
    base = Path(base_dir) if base_dir is not None else default_base_dir()
    files = requirement_files(template, handler_dir)
    if trained:
        files = _pinned_template_file(base, template, files, trained)
    key = venv_key(files, mode)
    name = f"{template.name}-{key[:16]}"
    final = base / name
    if _complete(final, key):
        return venv_python(final)
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / f".{name}.lock", timeout, name):
        if _complete(final, key):  # built by whoever held the lock before us
            return venv_python(final)
        if final.exists():  # a folder without its marker is a leftover of a crash: never trust it
            shutil.rmtree(final, ignore_errors=True)
        tmp = base / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _build(tmp, files, mode, timeout)
            (tmp / MARKER).write_text(json.dumps({
                "key": key, "mode": mode, "template": template.name, "created": time.time(),
                "requirements": {label: str(path) for label, path in files}, "python": platform.python_version(),
            }, indent=2))
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return venv_python(final)


def _complete(venv: Path, key: str) -> bool:
    try:
        return json.loads((venv / MARKER).read_text()).get("key") == key and venv_python(venv).exists()
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _locked(path: Path, timeout: float, name: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, waiting at most ``timeout`` seconds for another builder."""
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"timed out after {timeout:.0f}s waiting for another process to build the "
                                      f"virtual environment {name}", field=ISOLATE_ENV) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _build(venv: Path, files: list[tuple[str, Path]], mode: str, timeout: float) -> None:
    """Create the venv (no pip inside: the gateway's pip installs into it), link hydro-serving, install."""
    argv = [sys.executable, "-m", "venv", "--without-pip"]
    if mode == LAYERED:
        argv.append("--system-site-packages")
    _run([*argv, str(venv)], timeout, "creating the virtual environment")
    python = venv_python(venv)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout,
                     "inspecting the virtual environment").strip())
    site.mkdir(parents=True, exist_ok=True)
    (site / "hydro_serving").symlink_to(package_dir(), target_is_directory=True)
    if mode == LAYERED:
        _layer_on_gateway_packages(site)
    requirement_args: list[str] = []
    if mode == FULL:
        core = _core_requirements()
        if core:
            core_file = venv / "hydro-core-requirements.txt"
            core_file.write_text("\n".join(core) + "\n")
            files = [("hydro-serving", core_file), *files]
    for _, path in files:
        requirement_args += ["-r", str(path)]
    if not requirement_args:
        return
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check",
           "--no-input", *requirement_args]
    out = subprocess.run(pip, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise _pip_error(out.stdout + "\n" + out.stderr, files)


def _layer_on_gateway_packages(site: Path) -> None:
    """Let a layered venv see the packages of the interpreter that built it, after its own.

    ``--system-site-packages`` layers a venv on the *base* interpreter: when hydro-serving itself is
    installed in a virtual environment (the usual way), the gateway's packages (gunicorn, flask, numpy,
    ...) live in that venv, not in the base, and the replica would die with ``No module named
    'gunicorn'``. A ``.pth`` file processed after the venv's own site-packages adds the gateway's
    site directories (``site.addsitedir`` so their own ``.pth`` files apply too), so the function's
    pinned requirements still win and everything else comes from where the gateway got it.
    """
    if sys.prefix == sys.base_prefix:
        return  # not in a venv: --system-site-packages already sees the gateway's packages
    import site as site_module

    outer = [p for p in site_module.getsitepackages() if Path(p).is_dir() and Path(p).resolve() != site.resolve()]
    lines = [f"import site; site.addsitedir({p!r})" for p in outer]
    (site / "zz-hydro-gateway-packages.pth").write_text("\n".join(lines) + "\n")


def _run(argv: list[str], timeout: float, what: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{what} failed: {exc}", field=ISOLATE_ENV) from None
    if out.returncode != 0:
        last = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ConfigError(f"{what} failed: {last[0]}", field=ISOLATE_ENV)
    return out.stdout


_FAILED_REQ = (
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"Invalid requirement: '([^']+)'"),
    re.compile(r"Failed to build (\S+)"),
    re.compile(r"ResolutionImpossible.*?\n.*?(\S+==\S+)", re.S),
)


def _pip_error(output: str, files: list[tuple[str, Path]]) -> ConfigError:
    """A one-line error naming the requirement pip could not install and the file that asked for it."""
    requirement = next((m.group(1) for pattern in _FAILED_REQ if (m := pattern.search(output))), None)
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("ERROR")]
    reason = lines[-1] if lines else (output.strip().splitlines() or ["pip failed"])[-1]
    source = None
    if requirement is not None:
        bare = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
        for label, path in files:
            names = [re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
                     for line in path.read_text().splitlines()]
            if bare in names:
                source = (label, path)
                break
    where = f" (from {source[0]} requirements: {source[1]})" if source else ""
    what = f"'{requirement}'" if requirement else "the requirements"
    return ConfigError(f"pip could not install {what}{where}: {reason}",
                       field=str(source[1]) if source else "requirements.txt",
                       details={"requirement": requirement, "pip_output": output[-4000:]})


def _core_requirements() -> list[str]:
    """hydro-serving's own dependencies (no extras), from its installed metadata or pyproject.toml."""
    from importlib import metadata

    try:
        requires = metadata.requires("hydro-serving") or []
        return [r for r in requires if "extra ==" not in r]
    except metadata.PackageNotFoundError:
        pass
    pyproject = package_dir().parent / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        return list(tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies", []))
    return []
