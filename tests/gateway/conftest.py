"""Fixtures of the gateway tests: the shared harness in tests/gateway_fixtures.py.

Re-exported here (names and fixtures) so this folder works on its own, and so older loaders that
exec this file by path (``_gateway_helpers().Gateway``) keep working.
"""

from __future__ import annotations

from tests.gateway_fixtures import (  # noqa: F401 - fixtures are registered by being names of this module
    HANDLER,
    Gateway,
    echo_dir,
    free_port,
    gateway,
    gateway_factory,
    http,
    pid_alive,
    python_spec,
    shared_gateway,
    write_handler,
)
