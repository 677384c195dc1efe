"""Bad events raise InvalidEventError before anything reaches the database; the caller's
transaction stays usable and keeps its earlier work."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from outbox import DEFAULT_MAX_MESSAGE_BYTES, Event, InvalidEventError, publish, publish_async
from tests.integration.outbox._support import rows


def good(**kw: Any) -> Event:
    return Event(topic="orders", key="k", type="t", payload={"ok": True}, **kw)


def bad_events() -> list[tuple[str, Any, str]]:
    """(id, what is passed to publish, a regex the error must match). Built with model_construct
    or mutable payloads, as pydantic validation at construction would stop most of them."""
    c = Event.model_construct
    base: dict[str, Any] = {"id": uuid4(), "key": "k", "type": "t", "payload": {}, "headers": {}, "created_at": datetime.now().astimezone()}
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return [
        ("empty-topic", c(**{**base, "topic": ""}), "topic is empty"),
        ("dot-topic", c(**{**base, "topic": ".."}), r"'\.\.' is not allowed"),
        ("long-topic", c(**{**base, "topic": "t" * 250}), "250 characters long; Kafka allows at most 249"),
        ("slash-topic", c(**{**base, "topic": "a/b c"}), r"contains '[ /]+'"),
        ("non-str-topic", c(**{**base, "topic": 5}), "topic must be a str, not int"),
        ("nul-key", c(**{**base, "topic": "t", "key": "a\x00b"}), "key contains a NUL"),
        ("surrogate-key", c(**{**base, "topic": "t", "key": "\ud800"}), "key is not valid Unicode"),
        ("bytes-key", c(**{**base, "topic": "t", "key": b"k"}), "key must be a str, not bytes"),
        ("empty-type", c(**{**base, "topic": "t", "type": ""}), "type is empty"),
        ("header-int", c(**{**base, "topic": "t", "headers": {"h": 1}}), "value of header 'h' must be a str, not int"),
        ("header-bytes-name", c(**{**base, "topic": "t", "headers": {b"h": "v"}}), "header name must be a str"),
        ("header-reserved", c(**{**base, "topic": "t", "headers": {"Event-Id": "x"}}), "header 'Event-Id' is reserved"),
        ("header-nul", c(**{**base, "topic": "t", "headers": {"h": "\x00"}}), "contains a NUL"),
        ("naive-time", c(**{**base, "topic": "t", "created_at": datetime.now()}), "timezone-aware"),
        ("payload-set", c(**{**base, "topic": "t", "payload": {1, 2}}), "type set is not JSON-serialisable"),
        ("payload-datetime", c(**{**base, "topic": "t", "payload": {"at": datetime.now()}}), r"datetime .*isoformat"),
        ("payload-nan", c(**{**base, "topic": "t", "payload": [math.nan]}), "not JSON-serialisable: it contains NaN or Infinity"),
        ("payload-circular", c(**{**base, "topic": "t", "payload": loop}), "not JSON-serialisable.*[Cc]ircular"),
        ("payload-surrogate", c(**{**base, "topic": "t", "payload": "\udc80"}), "payload contains a string that is not valid Unicode"),
        ("not-an-event", {"topic": "t"}, "expected an outbox.Event .* got dict"),
        ("not-an-event-in-list", [good(), "event"], "expected an outbox.Event .* got str"),
        (
            "too-large",
            Event(topic="t", type="t", payload="x" * (DEFAULT_MAX_MESSAGE_BYTES - 100)),
            r"event is too large: \d+ bytes .* at most 1048588 \(max.message.bytes\)",
        ),
    ]


@pytest.mark.parametrize(("bad", "message"), [pytest.param(b, m, id=i) for i, b, m in bad_events()])
def test_bad_event_raises_before_anything_is_sent(conn: psycopg.Connection[Any], outbox_url: str, bad: Any, message: str) -> None:
    # A fresh non-autocommit connection: if publish() sent anything, psycopg would have begun a
    # transaction. It must still be idle, and a batch containing the bad event writes nothing.
    assert conn.info.transaction_status == TransactionStatus.IDLE
    with pytest.raises(InvalidEventError, match=message):
        publish(conn, bad)
    assert conn.info.transaction_status == TransactionStatus.IDLE
    first = good()
    with conn.transaction():
        publish(conn, first)
        with pytest.raises(InvalidEventError, match=message):
            publish(conn, [good(), *(bad if isinstance(bad, list) else [bad])])
        # still usable: its earlier work is intact and it can publish more
        assert conn.execute("SELECT count(*) FROM outbox.events").fetchone() == (1,)
        second = good()
        publish(conn, second)
    assert [r[0] for r in rows(outbox_url)] == [first.id, second.id]


def test_bad_event_async_raises_before_anything_is_sent(outbox_url: str) -> None:
    import asyncio

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(outbox_url) as aconn:
            bad = Event.model_construct(id=uuid4(), topic="bad topic", key=None, type="t", payload=None, headers={})
            with pytest.raises(InvalidEventError, match="contains ' '"):
                await publish_async(aconn, [good(), bad])
            assert aconn.info.transaction_status == TransactionStatus.IDLE

    asyncio.run(main())
    assert rows(outbox_url) == []


def test_the_size_limit_is_a_parameter(conn: psycopg.Connection[Any], outbox_url: str) -> None:
    event = Event(topic="t", type="t", payload="x" * 2000)
    with pytest.raises(InvalidEventError, match="at most 1000"):
        publish(conn, event, max_message_bytes=1000)
    with conn.transaction():
        publish(conn, event, max_message_bytes=3000)
    assert len(rows(outbox_url)) == 1


def test_pydantic_validates_at_construction_too() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Kafka allows only"):
        Event(topic="no spaces", type="t")
    with pytest.raises(ValidationError, match="reserved"):
        Event(topic="t", type="t", headers={"content-type": "text/plain"})
    with pytest.raises(ValidationError):
        Event(topic="t", type="t", headers={"h": 1})  # type: ignore[dict-item]
    with pytest.raises(ValidationError):
        Event(topic="t", type="t", created_at=datetime(2025, 1, 1))
