"""The exactly-once consumer SDK: apply each event's effects exactly once in the consumer's database.

::

    from consumers import Consumer

    consumer = Consumer(group="billing", topics=["orders"],
                        bootstrap_servers="127.0.0.1:9092", database_url="postgresql://...")

    @consumer.handler("order.placed")
    def on_order(event, conn):
        conn.execute("INSERT INTO invoices (order_id) VALUES (%s)", (event.payload["id"],))

    consumer.run()

:class:`AsyncConsumer` is the asyncio twin (async handlers, psycopg ``AsyncConnection``).
"""

from consumers._async import AsyncConsumer
from consumers._consumer import Consumer
from consumers._metrics import MetricsSnapshot
from consumers._records import ConsumedEvent, identity_id
from consumers.dlq import DeadLetter, list_dead_letters, replay_dead_letters
from consumers.errors import ConsumerError, HandlerError, MigrationError
from consumers.schema import migrate, migrate_async, sql_text

__all__ = [
    "AsyncConsumer",
    "ConsumedEvent",
    "Consumer",
    "ConsumerError",
    "DeadLetter",
    "HandlerError",
    "MetricsSnapshot",
    "MigrationError",
    "identity_id",
    "list_dead_letters",
    "migrate",
    "migrate_async",
    "replay_dead_letters",
    "sql_text",
]
