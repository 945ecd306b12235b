"""Choosing a transport from a URL: one table, scheme -> class, read in one place.

Built-in transports are named as ``"module:Class"`` strings and imported only when chosen (the
CLI's lazy-command idea), so nothing is built or registered at import time. ``register`` adds one
at run time (a plugin, or a test). A class is built as ``cls(url, headers, **options)`` (options only
when the caller passes some: see :mod:`hydro_serving.transport.base`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from hydro_serving.errors import ConfigError
from hydro_serving.transport.base import Transport

TransportFactory = Callable[..., Transport]  # (url, headers, **options) -> Transport

BUILTIN: dict[str, str] = {
    "http": "hydro_serving.transport.http:HttpTransport",
    "https": "hydro_serving.transport.http:HttpTransport",
    "http+unix": "hydro_serving.transport.unix:UnixHttpTransport",
    "hydro-async": "hydro_serving.transport.hydroasync:AsyncTransport",  # the gateway's durable async queue
    "hydro-async+https": "hydro_serving.transport.hydroasync:AsyncTransport",
}
# Transports a later issue plans, each to become a BUILTIN line: a URL naming one fails with this message.
PLANNED: dict[str, str] = {
}


class Registry:
    """Scheme -> factory; the module-level :data:`DEFAULT` is what :func:`open_transport` uses."""

    def __init__(self) -> None:
        self._extra: dict[str, TransportFactory] = {}

    def register(self, scheme: str, factory: TransportFactory) -> None:
        self._extra[scheme.lower()] = factory

    def schemes(self) -> list[str]:
        return sorted({*BUILTIN, *self._extra})

    def open(self, url: str, headers: Mapping[str, str] | None = None, **options: Any) -> Transport:
        scheme = urlsplit(url).scheme.lower()
        if not scheme:
            raise ConfigError(f"transport URL {url!r} has no scheme (e.g. http://127.0.0.1:8080)", field="transport")
        factory = self._extra.get(scheme)
        if factory is None and scheme in BUILTIN:
            module_name, attr = BUILTIN[scheme].split(":")
            factory = getattr(importlib.import_module(module_name), attr)
        if factory is not None:
            return factory(url, dict(headers or {}), **options)
        if scheme in PLANNED:
            raise ConfigError(PLANNED[scheme], field="transport")
        known = ", ".join(f"{s}://" for s in self.schemes())
        raise ConfigError(f"no transport for {url!r}: known schemes are {known}", field="transport")


DEFAULT = Registry()


def register(scheme: str, factory: TransportFactory) -> None:
    """Make :func:`open_transport` build ``factory(url, headers)`` for URLs of ``scheme``."""
    DEFAULT.register(scheme, factory)


def open_transport(url: str, headers: Mapping[str, str] | None = None, **options: Any) -> Transport:
    """The transport for ``url`` (``http://gw:8080``, ``http+unix://%2Frun%2Fgw.sock``); ``headers`` go with every call.

    ``options`` (``pool_size``, ``connect_timeout``, ``retry``, ``max_response``) go to the transport's class.

    An unknown or not-yet-built scheme is a :class:`ConfigError` naming the field ``transport``.
    """
    return DEFAULT.open(url, headers, **options)
