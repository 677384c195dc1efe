"""The doorbell (migration 0002): an INSERT notifies only while a relay sleeps holding the doorbell
lock, the notification arrives only on commit, and a relay cannot fall asleep while a writer's
transaction is open (so it never sleeps through an event)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from outbox import Event, doorbell, publish, read_settings
from outbox._table import OutboxTable
from outbox.doorbell import try_arm

TARGET = OutboxTable()


@pytest.fixture
def relay(outbox_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The relay's LISTEN connection (autocommit), listening but not asleep."""
    with psycopg.connect(outbox_url, autocommit=True) as conn:
        settings = read_settings(conn)
        assert settings.channel == TARGET.channel and settings.doorbell_lock == TARGET.doorbell_lock
        conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(settings.channel)))
        yield conn


def arm(relay: psycopg.Connection[Any]) -> bool:
    return try_arm(relay, TARGET.doorbell_lock)


def disarm(relay: psycopg.Connection[Any]) -> None:
    doorbell.disarm(relay, TARGET.doorbell_lock)


def rings(relay: psycopg.Connection[Any], timeout: float = 0.5) -> list[str]:
    return [n.channel for n in relay.notifies(timeout=timeout)]


def ev(key: str | None = "k") -> Event:
    return Event(topic="t", key=key, type="t")


def test_no_notify_while_no_relay_sleeps(conn: psycopg.Connection[Any], relay: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        publish(conn, ev())
    with conn.transaction():
        publish(conn, [ev("a"), ev(None)])
    assert rings(relay) == []


def test_a_sleeping_relay_is_woken_by_a_commit_only(conn: psycopg.Connection[Any], relay: psycopg.Connection[Any]) -> None:
    assert arm(relay)
    with pytest.raises(RuntimeError), conn.transaction():
        publish(conn, ev())
        raise RuntimeError("rolled back")
    assert rings(relay) == []
    with conn.transaction():
        publish(conn, ev())
        publish(conn, [ev("b"), ev("c")])  # one transaction, one notification (folded)
    assert rings(relay) == [TARGET.channel]
    disarm(relay)
    with conn.transaction():
        publish(conn, ev())
    assert rings(relay) == []


def test_a_relay_cannot_fall_asleep_while_a_writer_is_open(conn: psycopg.Connection[Any], relay: psycopg.Connection[Any], outbox_url: str) -> None:
    """The race the protocol closes: the relay scans (sees nothing: the writer has not committed)
    and wants to sleep. Arming fails while the writer's transaction is open; once it committed,
    arming succeeds and the post-arm scan sees the event."""
    publish(conn, ev())  # inserted, not committed
    assert arm(relay) is False
    with psycopg.connect(outbox_url, autocommit=True) as scan:
        assert scan.execute("SELECT count(*) FROM outbox.events").fetchone() == (0,)
        conn.commit()
        assert arm(relay) is True
        assert scan.execute("SELECT count(*) FROM outbox.events").fetchone() == (1,)
    disarm(relay)
    assert rings(relay, 0.2) == []


def test_sql_writers_ring_the_doorbell_too(outbox_url: str, relay: psycopg.Connection[Any]) -> None:
    assert arm(relay)
    with psycopg.connect(outbox_url) as other:
        other.execute(
            "INSERT INTO outbox.events (event_id, topic, key, key_hash, type, payload, created_at) "
            "VALUES (gen_random_uuid(), 't', 'k', outbox.events_key_hash('t', 'k'), 't', '{}', now())"
        )
    assert rings(relay) == [TARGET.channel]
