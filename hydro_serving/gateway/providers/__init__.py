"""Providers run replicas; the gateway's scaler decides how many (written once, for every provider).

``get_provider(name, config)`` builds one by name: ``local`` here; ``docker`` lives beside it and
implements the same :class:`~hydro_serving.gateway.providers.base.Provider`. Knative is not one:
it scales its Services itself, so ``hydro deploy --provider knative`` talks to it directly
(:mod:`hydro_serving.deploy.knative`) and the gateway is not offered a provider it cannot run.
"""

from __future__ import annotations

import importlib

from hydro_serving.errors import ConfigError
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.providers.base import Provider, Replica, ReplicaStartError

PROVIDERS: dict[str, str] = {
    "local": "hydro_serving.gateway.providers.local:LocalProvider",
    "docker": "hydro_serving.gateway.providers.docker:DockerProvider",
}
EXTRAS: dict[str, str] = {"docker": "docker"}  # the pip extra each one needs
SDKS: dict[str, tuple[str, ...]] = {"docker": ("docker",)}


def get_provider(name: str, config: GatewayConfig) -> Provider:
    """Import and build the named provider (lazily: docker/kubernetes SDKs load only when chosen)."""
    target = PROVIDERS.get(name)
    if target is None:
        raise ConfigError(f"unknown provider '{name}' (known: {', '.join(PROVIDERS)})", field="provider")
    module_name, attr = target.split(":")
    extra = EXTRAS.get(name)
    hint = f" (install it with: pip install 'hydro-serving[{extra}]')" if extra else ""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"provider '{name}' is not available in this installation: {module_name} is missing",
                              field="provider") from None
        if extra and exc.name and exc.name.split(".")[0] in SDKS.get(name, ()):
            raise ConfigError(f"provider '{name}' needs the {extra} extra{hint}", field="provider") from None
        raise
    cls = getattr(module, attr, None)
    if cls is None:  # the module exists but does not (yet) implement the gateway interface
        raise ConfigError(f"provider '{name}' is not available as a gateway provider in this version "
                          f"({module_name} has no {attr})", field="provider")
    return cls(config)


__all__ = ["PROVIDERS", "Provider", "Replica", "ReplicaStartError", "get_provider"]
