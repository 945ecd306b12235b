"""Demo fixtures: the seed request of the original README and the two classifiers, trained once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hydro_serving.demo.training import TrainResult, train_all

SEED_REQUEST = Path(__file__).resolve().parents[3] / "shared" / "seed-demo" / "product-matching-request.json"

# The original README's request, kept here byte for byte too so the tests never depend on a file
# outside the repository (the shared copy is compared with it when present).
SEED_BODY = (
    '[{"Title1": "Apple iPhone 5 - 32GB - White & Silver (Verizon) Smartphone", "ItemSpecifics1": "\'Brand\': '
    '\' Apple\'; \'Style\': \' Bar\'; \'Processor\': \' Dual Core\'; \'Camera Resolution\': \' 8.0MP\'; \'Color\': '
    '\' Silver\'; \'Lock Status\': \' Network Locked\'; \'Network\': \' Verizon\'; \'Model\': \' iPhone 5\'; '
    '\'Storage Capacity\': \' 32GB\'; \'Cosmetic condition\': \' Excellent\'; \'Screen Size\': \' 4\'\'; '
    '\'No accessories\': \' Yes\'; \'UPC\': \' 492550400162\'", "Title2": "Aquarium Fish Tank Vacuum Gravel Cleaner '
    'Water Siphon Pump Filter", "ItemSpecifics2": "\'Brand\': \' Unbranded\'; \'EAN\': \' 4894462250013\'; '
    '\'MPN\': \' Does not apply\'; \'ISBN\': \' 4894462250013\'; \'UPC\': \' 4894462250013\'; \'Designer/Brand\': '
    '\' Unbranded\'"}, {"Title1": "Apple iPhone 5 - 32GB - White & Silver (Verizon) Smartphone", "ItemSpecifics1": '
    '"\'Brand\': \' Apple\'; \'Style\': \' Bar\'; \'Processor\': \' Dual Core\'; \'Camera Resolution\': \' 8.0MP\'; '
    '\'Color\': \' Silver\'; \'Lock Status\': \' Network Locked\'; \'Network\': \' Verizon\'; \'Model\': '
    '\' iPhone 5\'; \'Storage Capacity\': \' 32GB\'; \'Cosmetic condition\': \' Excellent\'; \'Screen Size\': '
    '\' 4\'\'; \'No accessories\': \' Yes\'; \'UPC\': \' 492550400162\'", "Title2": "Apple iPhone 5 - 32GB - White & '
    'Silver (Verizon) Smartphone", "ItemSpecifics2": "\'Brand\': \' Apple\'; \'Style\': \' Bar\'; \'Processor\': '
    '\' Dual Core\'; \'Camera Resolution\': \' 8.0MP\'; \'Color\': \' Silver\'; \'Lock Status\': \' Network '
    'Locked\'; \'Network\': \' Verizon\'; \'Model\': \' iPhone 5\'; \'Storage Capacity\': \' 32GB\'; \'Cosmetic '
    'condition\': \' Excellent\'; \'Screen Size\': \' 4\'\'; \'No accessories\': \' Yes\'; \'UPC\': '
    '\' 492550400162\'"}]'
)


@pytest.fixture(scope="session")
def seed_body() -> bytes:
    """The seed request body as bytes; the shared original when present, else the copy above."""
    if SEED_REQUEST.is_file():
        return SEED_REQUEST.read_bytes()
    return SEED_BODY.encode()


@pytest.fixture(scope="session")
def seed_pairs(seed_body: bytes) -> list[dict[str, Any]]:
    return json.loads(seed_body)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Both demo classifiers trained once for the session (about 5 s on 2 cores)."""
    return train_all(tmp_path_factory.mktemp("demo-models"))
