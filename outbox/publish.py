"""``publish``: write events into the outbox inside the caller's psycopg transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from outbox._publish import check_transaction, prepare, statement, target, translate_error
from outbox._table import DEFAULT_SCHEMA, DEFAULT_TABLE
from outbox.errors import OutboxError
from outbox.events import DEFAULT_MAX_MESSAGE_BYTES, Event

__all__ = ["publish"]


def publish(
    conn: psycopg.Connection[Any] | psycopg.Cursor[Any],
    events: Event | Iterable[Event],
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> None:
    """Write ``events`` into the outbox as part of the caller's open transaction.

    The events are committed if and only if the caller's transaction commits: this function never
    begins (except psycopg's implicit begin on a non-autocommit connection), commits or rolls back.
    Events of one ``(topic, key)`` published by concurrent transactions get outbox ids in the order
    the transactions commit: before inserting, the transaction takes a transaction-scoped advisory
    lock on each key of ``events`` (sorted, so batches cannot deadlock each other), which it holds
    until it ends. Keys locked by separate calls in one transaction are locked in call order: to
    avoid deadlocks between such transactions, publish a transaction's events in one call.

    All events are validated and serialised before anything is sent, then written by one statement
    (one round trip) that takes the locks and inserts.

    :param conn: a psycopg ``Connection`` or ``Cursor`` (the cursor's current result is replaced).
    :param events: one event or an iterable of events (possibly of different topics).
    :param max_message_bytes: the largest record batch the topics accept (``max.message.bytes``).
    :raises InvalidEventError: an event cannot be published; nothing was sent.
    :raises TransactionStateError: the connection is in autocommit mode outside a transaction, or
        its transaction already failed; nothing was sent.
    :raises SchemaError: the outbox table does not exist (run ``outbox db migrate``).
    """
    if isinstance(conn, psycopg.Connection):
        connection, cursor = conn, None
    elif isinstance(conn, psycopg.Cursor) and not isinstance(conn, psycopg.ServerCursor):
        connection, cursor = conn.connection, conn
    elif isinstance(conn, psycopg.ServerCursor):
        connection, cursor = conn.connection, None  # a named cursor can only run queries
    else:
        hint = "; for an AsyncConnection use publish_async()" if isinstance(conn, psycopg.AsyncConnection) else ""
        raise OutboxError(f"publish() takes a psycopg Connection or Cursor, got {type(conn).__name__}{hint}")
    prepared = prepare(events, max_message_bytes)
    if not prepared:
        return
    outbox_table = target(schema, table)
    check_transaction(connection)
    query, params = statement(outbox_table, prepared)
    try:
        if cursor is None:
            with connection.cursor() as cur:
                cur.execute(query, params)
        else:
            cursor.execute(query, params)
    except psycopg.Error as exc:
        translated = translate_error(exc, outbox_table)
        if translated is None:
            raise
        raise translated from exc

