"""publish(): G1 (an event is in the outbox iff its transaction committed), the caller owns the
transaction, and what a row holds for the relay. Real PostgreSQL, no mocks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from pydantic import BaseModel

from outbox import Event, SchemaError, TransactionStateError, key_hash, publish, read_settings
from tests.integration.outbox._support import rows


def ev(key: str | None = "k1", **kw: Any) -> Event:
    return Event(topic=kw.pop("topic", "orders"), key=key, type=kw.pop("type", "order.placed"), payload=kw.pop("payload", {"n": 1}), **kw)


def test_committed_events_are_in_the_outbox_and_rolled_back_ones_are_not(conn: psycopg.Connection[Any], outbox_url: str) -> None:
    kept, dropped, dropped_batch = ev("a"), ev("b"), [ev("c"), ev(None)]
    with conn.transaction():
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        publish(conn, kept)
    with pytest.raises(ZeroDivisionError), conn.transaction():
        conn.execute("INSERT INTO orders VALUES (2)")
        publish(conn, dropped)
        publish(conn, dropped_batch)
        1 / 0  # noqa: B018 - the application fails after publishing
    assert [r[0] for r in rows(outbox_url)] == [kept.id]
    assert rows(outbox_url, "SELECT id FROM orders") == [(1,)]


def test_publish_never_commits_the_callers_rollback_removes_the_rows(conn: psycopg.Connection[Any], outbox_url: str) -> None:
    publish(conn, ev())  # non-autocommit: psycopg begins implicitly; only the caller ends it
    publish(conn, [ev("x"), ev("y")])
    assert conn.info.transaction_status == TransactionStatus.INTRANS
    assert rows(outbox_url) == []  # not visible to others: not committed
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM outbox.events")
        assert cur.fetchone() == (3,)
    conn.rollback()
    assert rows(outbox_url) == []
    with psycopg.connect(outbox_url) as fresh:  # and nothing is pending anywhere
        assert fresh.execute("SELECT count(*) FROM outbox.events").fetchone() == (0,)


def test_publish_inside_a_savepoint_follows_the_savepoint(conn: psycopg.Connection[Any], outbox_url: str) -> None:
    outer, inner = ev("o"), ev("i")
    with conn.transaction():
        publish(conn, outer)
        with pytest.raises(RuntimeError), conn.transaction():
            publish(conn, inner)
            raise RuntimeError("inner unit of work fails")
    assert [r[0] for r in rows(outbox_url)] == [outer.id]


def test_autocommit_connection_outside_a_transaction_is_refused(outbox_url: str) -> None:
    with psycopg.connect(outbox_url, autocommit=True) as conn:
        with pytest.raises(TransactionStateError, match=r"with conn.transaction\(\)"):
            publish(conn, ev())
        with conn.transaction():  # the Kafka-style usage works on the same connection
            publish(conn, ev())
    assert len(rows(outbox_url)) == 1


def test_failed_transaction_is_refused_with_the_remedy(conn: psycopg.Connection[Any], outbox_url: str) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    assert conn.info.transaction_status == TransactionStatus.INERROR
    with pytest.raises(TransactionStateError, match="roll it back"):
        publish(conn, ev())
    conn.rollback()
    publish(conn, ev())
    conn.commit()
    assert len(rows(outbox_url)) == 1


def test_publish_through_a_cursor_and_an_empty_batch(conn: psycopg.Connection[Any], outbox_url: str) -> None:
    with conn.cursor() as cur:
        publish(cur, [])
        assert conn.info.transaction_status == TransactionStatus.IDLE  # nothing was sent
        publish(cur, ev())
        publish(cur, (e for e in [ev("g1"), ev("g2")]))
    conn.commit()
    assert [r[2] for r in rows(outbox_url)] == ["k1", "g1", "g2"]


def test_missing_table_says_how_to_create_it(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with pytest.raises(SchemaError, match="outbox db migrate") as info:
            publish(conn, ev())
        assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)


class OrderPayload(BaseModel):
    order_id: int
    placed_at: datetime
    note: str


class OrderPlaced(Event):
    topic: Literal["orders"] = "orders"
    type: Literal["order.placed"] = "order.placed"
    payload: OrderPayload


def test_a_row_holds_what_the_relay_sends(conn: psycopg.Connection[Any], outbox_url: str) -> None:
    placed = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    typed = OrderPlaced(key="order-7", payload=OrderPayload(order_id=7, placed_at=placed, note="ü ✓ \"q\""), headers={"trace": "abc"})
    plain = Event(topic="audit.log", type="seen", payload=[1, 2.5, None, {"ü": "\u2028"}], created_at=placed)
    with conn.transaction():
        publish(conn, [typed, plain])
    got = rows(outbox_url, "SELECT event_id, topic, key, type, payload, headers, created_at, key_hash, bucket FROM outbox.events ORDER BY id")
    assert got[0][:4] == (typed.id, "orders", "order-7", "order.placed")
    assert got[0][4] == typed.payload.model_dump_json().encode()  # exact bytes, ready to send
    assert json.loads(got[0][4]) == {"order_id": 7, "placed_at": "2025-01-02T03:04:05.123456Z", "note": "ü ✓ \"q\""}
    assert got[0][5] == {"trace": "abc"}
    assert got[0][6] == typed.created_at
    assert got[1][:4] == (plain.id, "audit.log", None, "seen")
    assert json.loads(got[1][4]) == [1, 2.5, None, {"ü": "\u2028"}]
    assert got[1][5] == {}
    assert got[1][6] == placed
    buckets = read_settings(conn).buckets
    assert buckets == 64
    # The bucket is key_hash mod buckets; a keyed event's hash is the documented one, and the SQL
    # function computes the same value (so SQL writers agree with publish()).
    assert got[0][7] == key_hash("orders", "order-7")
    assert got[1][7] == key_hash("audit.log", str(plain.id))
    for row in got:
        assert row[8] == row[7] % buckets
    sql_hashes = rows(outbox_url, "SELECT outbox.events_key_hash(topic, COALESCE(key, event_id::text)) FROM outbox.events ORDER BY id")
    assert [h for (h,) in sql_hashes] == [got[0][7], got[1][7]]


@pytest.mark.parametrize(
    ("topic", "key"),
    [("t", ""), ("t", "a\\b\\\\c"), ("t", "ü✓😀"), ("x" * 249, "k" * 1000), ("a.b_c-D9", "line\nbreak\ttab")],
)
def test_python_and_sql_key_hash_agree(conn: psycopg.Connection[Any], topic: str, key: str) -> None:
    got = conn.execute("SELECT outbox.events_key_hash(%s, %s)", (topic, key)).fetchone()
    assert got == (key_hash(topic, key),)

