"""What ``publish`` and ``publish_async`` share: validation, statements, transaction checks, errors."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from outbox._table import OutboxTable
from outbox.errors import InvalidEventError, OutboxError, SchemaError, TransactionStateError
from outbox.events import Event, PreparedEvent, check_event

__all__ = ["Statement", "check_transaction", "prepare", "statement", "target", "translate_error"]

Statement = tuple[bytes, dict[str, Any]]


@lru_cache(maxsize=64)
def target(schema: str, table: str) -> OutboxTable:
    """The (validated) outbox table of a publish call."""
    return OutboxTable(schema, table)


def prepare(events: Event | Iterable[Event], max_message_bytes: int) -> list[PreparedEvent]:
    """Check and serialise every event; raise before anything is sent."""
    if isinstance(events, Event):
        return [check_event(events, max_message_bytes=max_message_bytes)]
    if isinstance(events, (str, bytes, dict)) or not isinstance(events, Iterable):
        raise InvalidEventError(f"expected an outbox.Event or an iterable of them, got {type(events).__name__}")
    return [check_event(event, max_message_bytes=max_message_bytes) for event in events]


def statement(target: OutboxTable, prepared: list[PreparedEvent]) -> Statement:
    """One INSERT that first locks the keys (sorted, distinct), then inserts every event."""
    if len(prepared) == 1:
        e = prepared[0]
        return target.query("insert_one"), {
            "lock_key": e.lock_key,
            "event_id": e.event_id,
            "topic": e.topic,
            "key": e.key,
            "key_hash": e.key_hash,
            "type": e.type,
            "payload": e.payload,
            "headers": e.headers,
            "created_at": e.created_at,
        }
    return target.query("insert_many"), {
        "lock_keys": sorted({e.lock_key for e in prepared if e.lock_key is not None}),
        "event_ids": [e.event_id for e in prepared],
        "topics": [e.topic for e in prepared],
        "keys": [e.key for e in prepared],
        "key_hashes": [e.key_hash for e in prepared],
        "types": [e.type for e in prepared],
        "payloads": [e.payload for e in prepared],
        "headers": [e.headers for e in prepared],
        "created_ats": [e.created_at for e in prepared],
    }


def check_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Refuse to publish where the event could not share the fate of the caller's transaction.

    * autocommit connection outside a transaction block: every statement would commit on its own,
      so the event would be committed even if the business change later fails (and the per-key
      lock would be released before the caller's transaction ends). Raise.
    * non-autocommit connection with no transaction yet: allowed. psycopg begins the transaction
      with the first statement, as it would for the caller's own first statement, and only the
      caller can end it (``commit()``/``rollback()`` or the connection/pool context).
    * a failed transaction: raise with the remedy (PostgreSQL would reject the statements anyway).
    """
    status = conn.info.transaction_status
    if status == TransactionStatus.IDLE and conn.autocommit:
        raise TransactionStateError(
            "publish() must run inside the transaction that makes the business change, but this connection "
            "is in autocommit mode outside a transaction: wrap the work in `with conn.transaction():` "
            "(or `async with conn.transaction():`), or use a connection with autocommit=False"
        )
    if status == TransactionStatus.INERROR:
        raise TransactionStateError(
            "the connection's transaction has already failed (an earlier statement raised): roll it back "
            "and redo the whole unit of work, events included"
        )
    if status == TransactionStatus.UNKNOWN or conn.closed:
        raise TransactionStateError("the connection is closed or broken; nothing was published")


def translate_error(exc: psycopg.Error, target: OutboxTable) -> OutboxError | None:
    """An :class:`OutboxError` saying what to do, for errors the library can explain; else None."""
    if isinstance(exc, pg_errors.UndefinedTable):
        return SchemaError(
            f"the outbox table {target.qualified} does not exist in this database: create it with "
            f"`outbox db migrate --schema {target.schema!r} --table {target.table!r}` (or apply "
            "`outbox db sql`); this transaction is now aborted and must be rolled back"
        )
    return None
