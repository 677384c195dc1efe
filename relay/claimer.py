"""Claiming outbox rows, turning them into records, and choosing which rows an outcome lets us delete.

No id cursor (DESIGN.md): ids are drawn at insert time, so a row may commit after rows with larger
ids were published. Every claim re-reads the oldest committed rows of the owned buckets, which is
cheap because acknowledged rows are deleted before the next claim.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from outbox._table import OutboxTable
from relay.publisher import OutgoingRecord

__all__ = ["ClaimedRow", "claim", "deletable", "delete", "to_record"]

_CONTENT_TYPE = ("content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    id: int
    event_id: str
    topic: str
    key: str | None
    type: str
    payload: bytes
    headers: str
    timestamp_ms: int
    bucket: int


def claim(conn: psycopg.Connection[Any], table: OutboxTable, buckets: Sequence[int], limit: int) -> list[ClaimedRow]:
    """The oldest committed rows of ``buckets``, in id order."""
    with conn.cursor(binary=True) as cur:
        cur.execute(table.query("claim"), {"buckets": list(buckets), "limit": limit})
        return [ClaimedRow(*row) for row in cur.fetchall()]


def delete(conn: psycopg.Connection[Any], table: OutboxTable, ids: Sequence[int]) -> int:
    """Delete acknowledged rows; returns how many were deleted."""
    cur = conn.execute(table.query("delete"), {"ids": list(ids)})
    return cur.rowcount


def to_record(row: ClaimedRow) -> OutgoingRecord:
    """The Kafka record of an outbox row: key, the exact JSON payload, identity headers, event time."""
    headers: list[tuple[str, str | bytes | None]] = [
        ("event-id", row.event_id.encode()),
        ("event-type", row.type.encode()),
        _CONTENT_TYPE,
    ]
    if row.headers != "{}":
        headers.extend((name, value.encode()) for name, value in json.loads(row.headers).items())
    key = row.key.encode() if row.key is not None else None
    return OutgoingRecord(row.topic, key, bytes(row.payload), headers, row.timestamp_ms)


def deletable(rows: Sequence[ClaimedRow], errors: Sequence[str | None]) -> tuple[list[int], int]:
    """The ids that may be deleted after a round, and how many acknowledged rows must be kept.

    A row may go once acknowledged, unless an earlier row of the same (topic, key) failed: that
    one is re-published next round, and so must every later row of its key, to keep the key's
    first occurrences in commit order (the earlier copies are harmless duplicates).
    """
    blocked: set[tuple[str, str]] = set()
    ids: list[int] = []
    kept = 0
    for row, error in zip(rows, errors, strict=True):
        key = (row.topic, row.key) if row.key is not None else None
        if error is not None:
            if key is not None:
                blocked.add(key)
            continue
        if key is not None and key in blocked:
            kept += 1
            continue
        ids.append(row.id)
    return ids, kept
