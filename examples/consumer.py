"""Two consumer groups of the orders service, each applying every order exactly once.

::

    python -m examples.consumer --group inventory --bootstrap-servers 127.0.0.1:9092 \\
        --database-url postgresql://.../inventory
    python -m examples.consumer --group email ...

``inventory`` reserves stock (``inventory.reservations`` and a running total per SKU in
``inventory.stock``); ``email`` writes the confirmation mail it would send into ``email.messages``
(a real service would hand it to a mail relay; that side effect would be at least once). Each
handler's rows commit in the consumer SDK's transaction together with the event id and the
partition offset, so a crash, a restart or a duplicate record never applies an order twice.
The effect tables have no unique constraint on the order on purpose: the demo counts duplicates
instead of letting a constraint hide them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import psycopg

from consumers import Consumer
from examples.events import TOPIC, OrderPlaced

__all__ = ["EFFECT_TABLES", "GROUPS", "build_consumer", "main", "setup"]

logger = logging.getLogger("examples.consumer")

#: The table holding one row per applied order, per group (the demo verifies them).
EFFECT_TABLES = {"inventory": "inventory.reservations", "email": "email.messages"}
GROUPS = tuple(EFFECT_TABLES)

_SETUP_SQL = {
    "inventory": """
CREATE SCHEMA IF NOT EXISTS inventory;
CREATE TABLE IF NOT EXISTS inventory.reservations (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL,
    customer text NOT NULL,
    seq integer NOT NULL,
    sku text NOT NULL,
    quantity integer NOT NULL,
    event_id uuid NOT NULL,
    placed_at timestamptz NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS reservations_applied_at ON inventory.reservations (applied_at);
CREATE TABLE IF NOT EXISTS inventory.stock (
    sku text PRIMARY KEY,
    reserved bigint NOT NULL
);
""",
    "email": """
CREATE SCHEMA IF NOT EXISTS email;
CREATE TABLE IF NOT EXISTS email.messages (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL,
    customer text NOT NULL,
    seq integer NOT NULL,
    recipient text NOT NULL,
    subject text NOT NULL,
    event_id uuid NOT NULL,
    placed_at timestamptz NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS messages_applied_at ON email.messages (applied_at);
""",
}


def setup(conn: psycopg.Connection[Any], group: str) -> None:
    """Create the group's effect tables if missing (idempotent; the SDK creates its own tables)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('examples.consumer'))")
        for statement in _SETUP_SQL[group].split(";"):
            if statement.strip():
                conn.execute(statement.encode())


def reserve_stock(event: OrderPlaced, conn: psycopg.Connection[Any]) -> None:
    """``inventory``: reserve the ordered quantity."""
    order = event.payload
    conn.execute(
        "INSERT INTO inventory.reservations (order_id, customer, seq, sku, quantity, event_id, placed_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (order.order_id, order.customer, order.seq, order.sku, order.quantity, event.id, order.placed_at),
    )
    conn.execute(
        "INSERT INTO inventory.stock AS s (sku, reserved) VALUES (%s, %s) "
        "ON CONFLICT (sku) DO UPDATE SET reserved = s.reserved + EXCLUDED.reserved",
        (order.sku, order.quantity),
    )


def send_confirmation(event: OrderPlaced, conn: psycopg.Connection[Any]) -> None:
    """``email``: queue the order confirmation."""
    order = event.payload
    conn.execute(
        "INSERT INTO email.messages (order_id, customer, seq, recipient, subject, event_id, placed_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            order.order_id,
            order.customer,
            order.seq,
            f"{order.customer}@example.com",
            f"Your order {order.order_id}: {order.quantity} x {order.sku}, {order.total} EUR",
            event.id,
            order.placed_at,
        ),
    )


_HANDLERS = {"inventory": reserve_stock, "email": send_confirmation}


def build_consumer(
    group: str,
    *,
    bootstrap_servers: str,
    database_url: str,
    topic: str = TOPIC,
    instance_id: str | None = None,
    metrics_port: int | None = None,
) -> Consumer:
    """The group's consumer with its handler registered (call ``run()`` on it)."""
    if group not in _HANDLERS:
        raise ValueError(f"unknown group {group!r}; choose one of {', '.join(GROUPS)}")
    kafka_config: dict[str, Any] = {}
    if instance_id:
        # Static membership: a restarted member takes its old place at once instead of waiting
        # for the dead one's session to time out.
        kafka_config["group_instance_id"] = instance_id
    consumer = Consumer(
        group=group,
        topics=[topic],
        bootstrap_servers=bootstrap_servers,
        database_url=database_url,
        metrics_port=metrics_port,
        client_id=f"examples-{group}",
        kafka_config=kafka_config,
    )
    consumer.handler("order.placed")(_HANDLERS[group])
    return consumer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m examples.consumer",
        description="Apply the orders service's events exactly once, as the inventory or the email group.",
    )
    p.add_argument(
        "--group",
        default=os.environ.get("CONSUMER_GROUP"),
        choices=GROUPS,
        help="which consumer group to run [CONSUMER_GROUP]",
    )
    p.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("OUTBOX_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="the store or Kafka [OUTBOX_BOOTSTRAP_SERVERS; default: %(default)s]",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("CONSUMER_DATABASE_URL") or os.environ.get("OUTBOX_DATABASE_URL"),
        help="the consumer's own PostgreSQL [CONSUMER_DATABASE_URL, else OUTBOX_DATABASE_URL]",
    )
    p.add_argument(
        "--topic", default=os.environ.get("ORDERS_TOPIC", TOPIC), help="[ORDERS_TOPIC; default: %(default)s]"
    )
    p.add_argument(
        "--instance-id",
        default=os.environ.get("CONSUMER_INSTANCE_ID"),
        help="static group membership id; a restart with the same id rejoins at once [CONSUMER_INSTANCE_ID]",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ["CONSUMER_METRICS_PORT"]) if os.environ.get("CONSUMER_METRICS_PORT") else None,
        help="serve Prometheus metrics on this port [CONSUMER_METRICS_PORT; default: off]",
    )
    args = p.parse_args(argv)
    if not args.group:
        p.error("--group or CONSUMER_GROUP is required")
    if not args.database_url:
        p.error("--database-url, CONSUMER_DATABASE_URL or OUTBOX_DATABASE_URL is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        setup(conn, args.group)
    consumer = build_consumer(
        args.group,
        bootstrap_servers=args.bootstrap_servers,
        database_url=args.database_url,
        topic=args.topic,
        instance_id=args.instance_id,
        metrics_port=args.metrics_port,
    )
    logger.info("group %s consuming %s from %s", args.group, args.topic, args.bootstrap_servers)
    consumer.run()
    logger.info("group %s stopped", args.group)
    return 0


if __name__ == "__main__":
    sys.exit(main())
