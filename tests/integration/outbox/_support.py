"""Helpers shared by the outbox tests."""

from __future__ import annotations

from typing import Any

import psycopg

EVENTS_QUERY = "SELECT event_id, topic, key, type FROM outbox.events ORDER BY id"


def rows(url: str, query: str = EVENTS_QUERY, params: Any = None) -> list[Any]:
    """What another session sees (committed rows only)."""
    with psycopg.connect(url, autocommit=True) as other:
        return other.execute(query, params).fetchall()
