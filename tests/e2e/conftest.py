"""Fixtures of the end-to-end suite (real store processes, real clients, real faults).

``store_factory`` and ``store`` come from ``tests/conftest.py``; this file only adds what the
e2e tests share on top of them.
"""

from __future__ import annotations

import random

import pytest


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A per-test random generator; the seed is printed so a failure can be replayed."""
    seed = random.randrange(1 << 32)
    print(f"{request.node.nodeid}: random seed {seed}")
    return random.Random(seed)
