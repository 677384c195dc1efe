"""An orders service: each order row and its ``order.placed`` event commit in one transaction.

::

    python -m examples.orders_service --database-url postgresql://... --events 1000 --writers 4

Several writer threads place orders for a few hundred customers. Each transaction bumps the
customer's sequence number (a row lock, so the numbers follow commit order), inserts the order and
publishes the event with :func:`outbox.publish`; one order in fifty is declined and rolled back,
which takes its event with it (G1). The event key is the customer, so every consumer sees one
customer's orders in sequence order (G3). Tables: ``shop.customers`` and ``shop.orders``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from types import FrameType
from typing import Any
from uuid import uuid4

import psycopg

import outbox
from examples.events import OrderPayload, OrderPlaced

__all__ = ["SETUP_SQL", "OrderWriter", "main", "place_order", "setup"]

logger = logging.getLogger("examples.orders_service")

SETUP_SQL = """
CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.customers (
    customer text PRIMARY KEY,
    last_seq integer NOT NULL
);
CREATE TABLE IF NOT EXISTS shop.orders (
    id bigserial PRIMARY KEY,
    customer text NOT NULL,
    seq integer NOT NULL,
    sku text NOT NULL,
    quantity integer NOT NULL,
    total numeric(10, 2) NOT NULL,
    event_id uuid NOT NULL UNIQUE,
    placed_at timestamptz NOT NULL,
    UNIQUE (customer, seq)
);
"""

SKUS = [f"sku-{n:03d}" for n in range(50)]


class Declined(Exception):
    """The order was declined: its transaction rolls back, so neither the row nor the event exist."""


def setup(conn: psycopg.Connection[Any]) -> None:
    """Create the outbox table and the shop tables if missing (idempotent)."""
    outbox.migrate(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('examples.orders_service'))")
        for statement in SETUP_SQL.split(";"):
            if statement.strip():
                conn.execute(statement.encode())


def place_order(conn: psycopg.Connection[Any], customer: str, rng: random.Random, decline_rate: float) -> int:
    """Place one order in one transaction; return its id, or raise :class:`Declined` (rolled back)."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO shop.customers AS c (customer, last_seq) VALUES (%s, 1) "
            "ON CONFLICT (customer) DO UPDATE SET last_seq = c.last_seq + 1 RETURNING last_seq",
            (customer,),
        ).fetchone()
        assert row is not None
        seq = int(row[0])
        sku = rng.choice(SKUS)
        quantity = rng.randint(1, 5)
        total = Decimal(rng.randint(500, 50_000)) / 100
        placed_at = datetime.now(UTC)
        event_id = uuid4()
        row = conn.execute(
            "INSERT INTO shop.orders (customer, seq, sku, quantity, total, event_id, placed_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (customer, seq, sku, quantity, total, event_id, placed_at),
        ).fetchone()
        assert row is not None
        order_id = int(row[0])
        payload = OrderPayload(
            order_id=order_id, customer=customer, seq=seq, sku=sku, quantity=quantity, total=total, placed_at=placed_at
        )
        outbox.publish(conn, OrderPlaced(id=event_id, key=customer, payload=payload))
        if rng.random() < decline_rate:
            raise Declined(f"order {order_id} of {customer} declined")
    return order_id


class OrderWriter:
    """Writer threads placing ``events`` committed orders in total (0: until :meth:`stop`)."""

    def __init__(
        self,
        database_url: str,
        *,
        events: int,
        writers: int = 4,
        customers: int = 500,
        rate: float = 0.0,
        decline_rate: float = 0.02,
        seed: int | None = None,
    ) -> None:
        self.database_url = database_url
        self.events = events
        self.writers = writers
        self.customers = customers
        self.rate = rate
        self.decline_rate = decline_rate
        self.seed = seed
        self.committed = 0
        self.declined = 0
        self.errors = 0
        self._issued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def stop(self) -> None:
        self._stop.set()

    def _claim(self) -> bool:
        with self._lock:
            if self._stop.is_set() or (self.events and self._issued >= self.events):
                return False
            self._issued += 1
            return True

    def _write(self, index: int) -> None:
        rng = random.Random(None if self.seed is None else self.seed * 1000 + index)
        interval = self.writers / self.rate if self.rate > 0 else 0.0
        next_at = time.monotonic()
        conn: psycopg.Connection[Any] | None = None
        try:
            while self._claim():
                while not self._stop.is_set():
                    if interval:
                        next_at += interval
                        delay = next_at - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            return
                    try:
                        if conn is None or conn.closed:
                            conn = psycopg.connect(self.database_url, autocommit=True)
                        place_order(conn, f"customer-{rng.randrange(self.customers)}", rng, self.decline_rate)
                    except Declined:
                        with self._lock:
                            self.declined += 1
                        continue
                    except psycopg.OperationalError as exc:
                        # Lost connection: the transaction may or may not have committed; an
                        # orders table is the truth, so retrying can place one extra order.
                        logger.warning("writer %d: %s; reconnecting", index, exc)
                        with self._lock:
                            self.errors += 1
                        if conn is not None:
                            conn.close()
                        conn = None
                        self._stop.wait(0.5)
                        continue
                    with self._lock:
                        self.committed += 1
                    break
        finally:
            if conn is not None:
                conn.close()

    def start(self) -> OrderWriter:
        for index in range(self.writers):
            thread = threading.Thread(target=self._write, args=(index,), name=f"writer-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the writers; True once all finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m examples.orders_service",
        description="Place orders; each order and its order.placed event commit in one transaction.",
    )
    p.add_argument(
        "--database-url",
        default=_env("OUTBOX_DATABASE_URL"),
        help="the service's PostgreSQL (libpq URL) [OUTBOX_DATABASE_URL]",
    )
    p.add_argument(
        "--events",
        type=int,
        default=int(_env("ORDERS_EVENTS", "0") or 0),
        help="committed orders to place, then exit; 0 = until SIGTERM [ORDERS_EVENTS; default: 0]",
    )
    p.add_argument(
        "--writers",
        type=int,
        default=int(_env("ORDERS_WRITERS", "4") or 4),
        help="writer threads [ORDERS_WRITERS; default: 4]",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=float(_env("ORDERS_RATE", "0") or 0),
        help="orders per second over all writers; 0 = as fast as possible [ORDERS_RATE; default: 0]",
    )
    p.add_argument("--customers", type=int, default=500, help="distinct customers (event keys) [default: 500]")
    p.add_argument("--decline-rate", type=float, default=0.02, help="share of orders rolled back [default: 0.02]")
    p.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    p.add_argument("--no-setup", action="store_true", help="do not create the outbox and shop tables")
    args = p.parse_args(argv)
    if not args.database_url:
        p.error("--database-url or OUTBOX_DATABASE_URL is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if not args.no_setup:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            setup(conn)
    writer = OrderWriter(
        args.database_url,
        events=args.events,
        writers=args.writers,
        customers=args.customers,
        rate=args.rate,
        decline_rate=args.decline_rate,
        seed=args.seed,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping after the transactions in hand", signum)
        writer.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    logger.info("placing %s orders with %d writers", args.events or "unlimited", args.writers)
    writer.start()
    last_report = started
    while not writer.join(timeout=0.5):
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            logger.info("%d orders committed, %d declined", writer.committed, writer.declined)
    elapsed = time.monotonic() - started
    logger.info(
        "done: %d orders committed, %d declined, %d connection errors in %.1f s (%.0f/s)",
        writer.committed,
        writer.declined,
        writer.errors,
        elapsed,
        writer.committed / elapsed if elapsed else 0.0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
