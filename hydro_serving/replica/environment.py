"""The explicit environment of a replica: built here once, for the local and Docker providers,
Knative rendering and ``hydro run``.

A replica is a stranger to the gateway: it never inherits the gateway's environment (which holds
``HYDRO_TOKEN``, the gateway's own ``AWS_SECRET_ACCESS_KEY``, ...). What it gets, in this order
(a later layer wins):

1. a minimal base (:data:`BASE_KEYS` and the host's native-library tuning, :data:`HOST_TUNING`,
   copied from the operator's environment when set, then ``HOME``/``TMPDIR`` given by the
   provider, ``PYTHONUNBUFFERED=1``);
2. runtime limits the operator set for every replica (:data:`~.contract.RUNTIME_LIMIT_ENVS`) and
   its OpenTelemetry settings (:data:`TELEMETRY`, never the ``*_HEADERS`` that may carry credentials);
3. the store, only for a function that loads a model from it: ``HYDRO_STORE``, the endpoint and
   region settings, and read-only credentials only when the operator provides them as
   ``HYDRO_REPLICA_AWS_ACCESS_KEY_ID``/``..._SECRET_ACCESS_KEY``/``..._SESSION_TOKEN`` (passed on
   as ``AWS_*``);
4. what the function declares: its ``environment_file``s, then its ``environment``;
5. platform variables the provider and the other parts set (``HYDRO_FUNCTION_NAME``,
   ``HYDRO_GATEWAY_URL``, ``HYDRO_SECRETS_DIR``, ``HYDRO_MODEL_PIN``, ``HYDRO_TRUSTED_KEYS``,
   ``HYDRO_ROUTER_KEY``, ...): the platform's word wins over the function's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydro_serving.replica import contract
from hydro_serving.replica.envfile import read_env_file

# copied from the operator's environment when set: what any program needs to run, nothing secret
BASE_KEYS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# set by a provider whose replicas get no store credentials (the gateway fetched the model for them):
# botocore then does not probe the instance-metadata service for seconds at every cold start
NO_METADATA_ENV = "AWS_EC2_METADATA_DISABLED"
# variables that differ between providers by design (addresses, paths, the process's own home);
# everything else a function sees is the same on local, docker, Knative and ``hydro run``
PROVIDER_KEYS = frozenset({
    contract.GATEWAY_URL_ENV, contract.FUNCTION_SPEC_ENV, contract.SECRETS_DIR_ENV, contract.HOST_ENV,
    contract.PORT_ENV, contract.HYDRO_STAGE_URL_TEMPLATE, contract.CACHE_ENV, contract.GATEWAY_TRANSPORT_ENV,
    "HOME", "TMPDIR",
    NO_METADATA_ENV, "HYDRO_CACHE_SEED",  # the docker provider's read-only copy of the pinned model (store.cache)
})


# the host's tuning of native libraries (BLAS kernels, thread pools, allocator, library path): never
# secret, and a replica on this host needs the same (e.g. OPENBLAS_CORETYPE where detection fails)
HOST_TUNING = re.compile(r"^(OPENBLAS_\w+|GOTO\w+|MKL_\w+|OMP_\w+|KMP_\w+|\w*_NUM_THREADS|MALLOC_\w+|NVPL_\w+"
                         r"|LD_LIBRARY_PATH)$")


# the operator's OpenTelemetry settings, so replicas' spans join the gateway's traces; never its
# *_HEADERS (a collector's credentials): a collector that needs them is reached through a local agent
TELEMETRY = re.compile(r"^OTEL_(?!\w*HEADERS$)\w+$")


def base_environment(operator: Mapping[str, str], home: str | None = None, tmpdir: str | None = None) -> dict[str, str]:
    """``PATH``, locale, time zone and the host's native-library tuning (:data:`HOST_TUNING`) from
    ``operator``, plus the replica's own ``HOME``/``TMPDIR``."""
    env = {key: operator[key] for key in BASE_KEYS if operator.get(key)}
    env.update({key: value for key, value in operator.items() if HOST_TUNING.match(key) and value})
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    if home:
        env["HOME"] = home
    if tmpdir:
        env["TMPDIR"] = tmpdir
    env["PYTHONUNBUFFERED"] = "1"
    return env


def replica_store_credentials(operator: Mapping[str, str]) -> dict[str, str]:
    """The read-only store credentials the operator gives replicas (``HYDRO_REPLICA_AWS_*`` as ``AWS_*``)."""
    out = {}
    for key in contract.REPLICA_CREDENTIAL_ENVS:
        value = operator.get(contract.REPLICA_CREDENTIAL_PREFIX + key)
        if value:
            out[key] = value
    return out if "AWS_ACCESS_KEY_ID" in out and "AWS_SECRET_ACCESS_KEY" in out else {}


def uses_store(spec: Any) -> bool:
    """Does the function load its model from the store (not from a local path)?"""
    return bool(spec.model) and not spec.model_is_local


def declared_environment(spec: Any, root: Path | None = None) -> dict[str, str]:
    """The function's ``environment_file``s (relative paths against ``root``) then its ``environment``."""
    env: dict[str, str] = {}
    for i, name in enumerate(spec.environment_file):
        path = Path(name)
        if not path.is_absolute() and root is not None:
            path = root / path
        env.update(read_env_file(path, field=f"functions.{spec.name}.environment_file[{i}]"))
    env.update({str(k): str(v) for k, v in spec.environment.items()})
    return env


def replica_environment(
    spec: Any,
    *,
    operator: Mapping[str, str] | None = None,
    root: Path | None = None,
    home: str | None = None,
    tmpdir: str | None = None,
    store: str | None = None,
    store_credentials: Mapping[str, str] | None = None,
    platform: Mapping[str, str] | None = None,
    base: bool = True,
) -> dict[str, str]:
    """Every variable a replica of ``spec`` (a FunctionSpec) starts with, and nothing else.

    ``operator`` is the environment of whoever starts replicas (the gateway, the user of ``hydro
    run``, ``{}`` for a rendered manifest): only the base keys, the runtime limits and the store
    settings are read from it. ``store`` is the store URL (default: the operator's ``HYDRO_STORE``);
    ``store_credentials`` default to :func:`replica_store_credentials` of ``operator`` (pass ``{}``
    when credentials reach the replica another way, e.g. a Kubernetes Secret). ``platform`` is what
    the provider and the other parts add (function name, gateway URL, secrets dir, model pin, keys).
    ``base=False`` for an image, whose own ``ENV`` (``PATH``, ``HOME``, ...) is the base.
    """
    operator = {} if operator is None else operator
    env = base_environment(operator, home, tmpdir) if base else {"PYTHONUNBUFFERED": "1"}
    env.update({k: operator[k] for k in contract.RUNTIME_LIMIT_ENVS if operator.get(k)})
    env.update({k: v for k, v in operator.items() if TELEMETRY.match(k) and v})
    if uses_store(spec):
        store = store or operator.get(contract.STORE_ENV)
        if store:
            env[contract.STORE_ENV] = store
        env.update({k: operator[k] for k in contract.STORE_SETTING_ENVS if operator.get(k)})
        credentials = replica_store_credentials(operator) if store_credentials is None else dict(store_credentials)
        env.update(credentials)
    env.update(declared_environment(spec, root))
    env[contract.FUNCTION_NAME_ENV] = spec.name
    env.update({k: str(v) for k, v in (platform or {}).items() if v is not None})
    return env


def function_view(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the provider-specific keys and the base (an image brings its own ``PATH``):
    what must be equal on every provider."""
    return {k: v for k, v in env.items() if k not in PROVIDER_KEYS and k not in BASE_KEYS and not HOST_TUNING.match(k)}
