"""``publish_async``: the asyncio twin of :func:`outbox.publish`, for psycopg's AsyncConnection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from outbox._publish import check_transaction, prepare, statement, target, translate_error
from outbox._table import DEFAULT_SCHEMA, DEFAULT_TABLE
from outbox.errors import OutboxError
from outbox.events import DEFAULT_MAX_MESSAGE_BYTES, Event

__all__ = ["publish_async"]


async def publish_async(
    conn: psycopg.AsyncConnection[Any] | psycopg.AsyncCursor[Any],
    events: Event | Iterable[Event],
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> None:
    """Write ``events`` into the outbox as part of the caller's open transaction.

    The same contract as :func:`outbox.publish`, for an ``AsyncConnection`` or ``AsyncCursor``.
    """
    if isinstance(conn, psycopg.AsyncConnection):
        connection, cursor = conn, None
    elif isinstance(conn, psycopg.AsyncCursor) and not isinstance(conn, psycopg.AsyncServerCursor):
        connection, cursor = conn.connection, conn
    elif isinstance(conn, psycopg.AsyncServerCursor):
        connection, cursor = conn.connection, None
    else:
        hint = "; for a (sync) Connection use publish()" if isinstance(conn, psycopg.Connection) else ""
        raise OutboxError(f"publish_async() takes a psycopg AsyncConnection or AsyncCursor, got {type(conn).__name__}{hint}")
    prepared = prepare(events, max_message_bytes)
    if not prepared:
        return
    outbox_table = target(schema, table)
    check_transaction(connection)
    query, params = statement(outbox_table, prepared)
    try:
        if cursor is None:
            async with connection.cursor() as cur:
                await cur.execute(query, params)
        else:
            await cursor.execute(query, params)
    except psycopg.Error as exc:
        translated = translate_error(exc, outbox_table)
        if translated is None:
            raise
        raise translated from exc

