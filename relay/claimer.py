"""Claiming outbox rows, turning them into records, and choosing which rows an outcome lets us delete.

No id cursor (DESIGN.md): ids are drawn at insert time, so a row may commit after rows with larger
ids were published. Every claim re-reads the oldest committed rows of the owned buckets (minus the
batch in flight), which is cheap because acknowledged rows are deleted right away.

This is the relay's hot path (each drained event passes here once): rows stay tuples, and the
SQL hands over bytes ready for the producer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

from outbox._table import OutboxTable
from relay.publisher import OutgoingRecord

__all__ = ["ClaimedRow", "claim", "deletable", "delete", "id_array", "to_record"]

_CONTENT_TYPE = ("content-type", b"application/json")


class ClaimedRow(NamedTuple):
    id: int
    topic: str
    key: bytes | None
    payload: bytes
    timestamp_ms: int
    event_id: bytes
    type: bytes
    headers: str


_new_row = tuple.__new__  # a NamedTuple's own __new__ is a Python function: ~10% of a drain's CPU


def id_array(ids: Sequence[int]) -> str:
    """A bigint[] literal: psycopg dumps this string far faster than a list of ints."""
    return "{" + ",".join(map(str, ids)) + "}"


def claim(
    conn: psycopg.Connection[Any],
    table: OutboxTable,
    buckets: Sequence[int],
    limit: int,
    exclude: Sequence[int] = (),
) -> list[ClaimedRow]:
    """The oldest committed rows of ``buckets``, in id order, except the ids in ``exclude`` (in flight)."""
    with conn.cursor(binary=True) as cur:
        if exclude:
            params = {"buckets": list(buckets), "limit": limit, "exclude": id_array(exclude)}
            cur.execute(table.query("claim_more"), params)
        else:
            cur.execute(table.query("claim"), {"buckets": list(buckets), "limit": limit})
        return [_new_row(ClaimedRow, row) for row in cur.fetchall()]


def delete(conn: psycopg.Connection[Any], table: OutboxTable, ids: Sequence[int]) -> int:
    """Delete acknowledged rows; returns how many were deleted."""
    cur = conn.execute(table.query("delete"), {"ids": id_array(ids)})
    return cur.rowcount


def to_record(row: ClaimedRow) -> OutgoingRecord:
    """The Kafka record of an outbox row: key, the exact JSON payload, identity headers, event time."""
    headers: list[tuple[str, str | bytes | None]] = [
        ("event-id", row.event_id),
        ("event-type", row.type),
        _CONTENT_TYPE,
    ]
    if row.headers != "{}":
        headers.extend((name, value.encode()) for name, value in json.loads(row.headers).items())
    return _new_row(OutgoingRecord, (row.topic, row.key, row.payload, headers, row.timestamp_ms))


def deletable(rows: Sequence[ClaimedRow], errors: Sequence[str | None]) -> tuple[list[int], int]:
    """The ids that may be deleted after a round, and how many acknowledged rows must be kept.

    A row may go once acknowledged, unless an earlier row of the same (topic, key) failed: that
    one is re-published next round, and so must every later row of its key, to keep the key's
    first occurrences in commit order (the earlier copies are harmless duplicates).
    """
    if not any(e is not None for e in errors):
        return [row.id for row in rows], 0
    blocked: set[tuple[str, bytes]] = set()
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
