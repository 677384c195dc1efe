"""Event rules that need no database: the hash, serialisation and the size bound."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from outbox import DEFAULT_MAX_MESSAGE_BYTES, Event, InvalidEventError, check_event, key_hash
from outbox.events import record_size


def test_key_hash_is_the_documented_function() -> None:
    # Changing it would move keys between buckets and locks of running deployments.
    assert key_hash("t", "k") == 2439338328740992691
    digest = hashlib.sha256("orders:ü".encode()).digest()
    assert key_hash("orders", "ü") == int.from_bytes(digest[:8], "big", signed=True)


class Money(BaseModel):
    amount: Decimal
    at: datetime


class Paid(Event):
    topic: Literal["payments"] = "payments"
    type: Literal["payment.received"] = "payment.received"
    payload: Money


def test_a_subclass_fixes_topic_and_type() -> None:
    paid = Paid(key="p1", payload=Money(amount=Decimal("1.10"), at=datetime(2025, 1, 1, tzinfo=UTC)))
    assert (paid.topic, paid.type) == ("payments", "payment.received")
    assert paid.payload_json() == b'{"amount":"1.10","at":"2025-01-01T00:00:00Z"}'
    with pytest.raises(ValidationError):
        Paid(topic="other", payload=paid.payload)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Paid(payload={"amount": "x"})  # type: ignore[arg-type]


def test_events_are_frozen_and_get_ids_and_times() -> None:
    a, b = Event(topic="t", type="t"), Event(topic="t", type="t")
    assert a.id != b.id and a.created_at.tzinfo is not None
    with pytest.raises(ValidationError):
        a.topic = "u"


def test_prepared_event_is_compact_json() -> None:
    prepared = check_event(Event(topic="t", key="k", type="t", payload={"a": [1, "ü"]}, headers={"h": "v"}))
    assert prepared.payload == '{"a":[1,"ü"]}'.encode()
    assert prepared.headers == '{"h":"v"}'
    assert prepared.lock_key == prepared.key_hash == key_hash("t", "k")
    keyless = check_event(Event(topic="t", type="t"))
    assert keyless.lock_key is None and keyless.key_hash == key_hash("t", str(keyless.event_id))


def test_size_limit_is_exact_enough() -> None:
    """An event exactly at the bound passes, one byte more fails (the bound is our estimate)."""
    base = Event(topic="t", key="k", type="t", payload="")
    overhead = record_size(b"k", b'""', {}, "t")
    fits = base.model_copy(update={"payload": "x" * (DEFAULT_MAX_MESSAGE_BYTES - overhead)})
    check_event(fits)
    too_big = base.model_copy(update={"payload": "x" * (DEFAULT_MAX_MESSAGE_BYTES - overhead + 1)})
    with pytest.raises(InvalidEventError, match="too large"):
        check_event(too_big)
    # The bound covers Kafka's record batch framing and the relay's own headers.
    assert overhead > 61 + len("event-id") + 36 + len("content-type") + len("application/json")
