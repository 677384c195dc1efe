"""The transactional outbox: publish events inside your own psycopg transaction.

::

    from outbox import Event, publish

    with conn.transaction():
        conn.execute("INSERT INTO orders ...")
        publish(conn, Event(topic="orders", key="order-17", type="order.placed", payload={...}))

The event is in the outbox table if and only if that transaction commits; the relay moves it to
the stream store (or Kafka). Create the table with ``outbox db migrate`` (or :func:`migrate`).
"""

from outbox import doorbell
from outbox._hashing import key_hash
from outbox.errors import InvalidEventError, MigrationError, OutboxError, SchemaError, TransactionStateError
from outbox.events import DEFAULT_MAX_MESSAGE_BYTES, RESERVED_HEADERS, Event, check_event
from outbox.publish import publish
from outbox.publish_async import publish_async
from outbox.schema import OutboxSettings, grant, migrate, read_settings, sql_text

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "RESERVED_HEADERS",
    "Event",
    "InvalidEventError",
    "MigrationError",
    "OutboxError",
    "OutboxSettings",
    "SchemaError",
    "TransactionStateError",
    "check_event",
    "doorbell",
    "grant",
    "key_hash",
    "migrate",
    "publish",
    "publish_async",
    "read_settings",
    "sql_text",
]
