"""Fixtures of the cold-start tests: the real-gateway harness of tests/gateway_fixtures.py."""

from __future__ import annotations

from tests.gateway_fixtures import gateway, gateway_factory  # noqa: F401 - fixtures are registered by name
