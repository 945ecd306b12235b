"""Demo fixtures: the seed request of the original README and the two classifiers, trained once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.demo.training import TrainResult, train_all

REPO = Path(__file__).resolve().parents[2]
# The original README's request, byte for byte, as the repository ships it for the README's curl.
SEED_REQUEST = REPO / "functions" / "pm-features" / "product-matching-request.json"


@pytest.fixture(scope="session")
def seed_body() -> bytes:
    return SEED_REQUEST.read_bytes()


@pytest.fixture(scope="session")
def seed_pairs(seed_body: bytes) -> list[dict[str, Any]]:
    return json.loads(seed_body)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Both demo classifiers trained once for the session (about 5 s on 2 cores)."""
    return train_all(tmp_path_factory.mktemp("demo-models"))
