"""Fixtures for the outbox library's tests: a fresh database per test with the outbox migrated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from outbox import migrate


@pytest.fixture
def outbox_url(database_url: str) -> str:
    """A fresh database with ``outbox.events`` created by ``migrate``."""
    with psycopg.connect(database_url) as conn:
        migrate(conn)
    return database_url


@pytest.fixture
def conn(outbox_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A non-autocommit connection to the migrated database."""
    with psycopg.connect(outbox_url) as connection:
        yield connection

