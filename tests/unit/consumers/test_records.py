"""Decoding the relay's record format, foreign records, handler inspection, option checks, metrics text."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from consumers import ConsumedEvent, Consumer, ConsumerError, HandlerError, identity_id
from consumers._metrics import ConsumerMetrics, prometheus_text
from consumers._records import decode_record, handler_spec
from outbox import Event


def _relay_headers(event: Event) -> list[tuple[str, bytes]]:
    return [
        ("event-id", str(event.id).encode()),
        ("event-type", event.type.encode()),
        ("content-type", b"application/json"),
        *((k, v.encode()) for k, v in event.headers.items()),
    ]


def test_a_relay_record_decodes_to_the_event() -> None:
    event = Event(topic="orders", key="order-1", type="order.placed", payload={"total": 9}, headers={"trace": "t1"})
    ms = int(event.created_at.timestamp() * 1000)
    got = decode_record("orders", 2, 17, ms, b"order-1", event.payload_json(), _relay_headers(event))
    assert (got.id, got.key, got.type, got.payload, dict(got.headers)) == (
        event.id, "order-1", "order.placed", {"total": 9}, {"trace": "t1"},
    )  # fmt: skip
    assert (got.topic, got.partition, got.offset, got.has_event_id, got.problem) == ("orders", 2, 17, True, None)
    assert int(got.timestamp.timestamp() * 1000) == ms
    again = got.as_event(Event)
    assert (again.id, again.headers, again.payload) == (event.id, {"trace": "t1"}, {"total": 9})


def test_a_foreign_record_gets_its_position_as_identity() -> None:
    got = decode_record("t", 0, 5, 0, None, b"plain text", None)
    assert got.id == identity_id("t", 0, 5) and not got.has_event_id
    assert (got.key, got.type, got.payload, got.problem) == (None, None, b"plain text", None)
    assert decode_record("t", 0, 6, 0, b"k", None, []).payload is None
    # a non-UUID event-id from some other producer still gives a stable id
    a = decode_record("t", 0, 1, 0, None, b"{}", [("event-id", b"order-17")])
    b = decode_record("t", 0, 9, 0, None, b"{}", [("event-id", b"order-17")])
    assert a.id == b.id and a.has_event_id


def test_undecodable_records_fail_only_when_handled() -> None:
    got = decode_record("t", 0, 1, 0, b"\xff", b"{nope", [("content-type", b"application/json")])
    assert got.problem is not None and "not valid UTF-8" in got.problem and "not the JSON" in got.problem
    spec = handler_spec(lambda event, conn: None, want_async=False)
    with pytest.raises(HandlerError, match="not valid UTF-8"):
        spec.argument(got)


class Placed(Event):
    pass


def test_handler_inspection_and_registration_errors() -> None:
    c = Consumer(group="g", topics=["t"], bootstrap_servers="h:1", database_url="postgresql://x")

    def typed(event: Placed, conn: Any) -> None: ...

    assert handler_spec(typed, want_async=False).model is Placed

    class Local(Event):
        pass

    def local(event: Local, conn: Any) -> None: ...

    with pytest.raises(ConsumerError, match="define the event model at module level"):
        handler_spec(local, want_async=False)
    with pytest.raises(ConsumerError, match="use AsyncConsumer"):

        @c.handler("x")
        async def coro(event: ConsumedEvent, conn: Any) -> None: ...

    with pytest.raises(ConsumerError, match=r"two arguments, \(event, conn\)"):
        c.handler("x")(lambda event: None)
    c.handler("x")(lambda event, conn: None)
    with pytest.raises(ConsumerError, match="already registered"):
        c.handler("x")(lambda event, conn: None)
    with pytest.raises(ConsumerError, match="no handlers registered"):
        Consumer(group="g", topics=["t"], bootstrap_servers="h:1", database_url="postgresql://x").run()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topics": "orders"}, "not a str: use topics=\\['orders'\\]"),
        ({"group": ""}, "group must be a non-empty str"),
        ({"start_from": "beginning"}, "'earliest' or 'latest'"),
        ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
        ({"dead_letter_topic": "dead"}, "must contain '\\{topic\\}'"),
        ({"kafka_config": {"enable_auto_commit": True}}, "kafka_config may not set"),
        ({"client": "aiokafka"}, "client must be one of 'kafka-python', 'confluent'"),
        ({"client": "confluent", "kafka_config": {"group.id": "x"}}, "kafka_config may not set \\['group.id'\\]"),
        ({"client": "confluent", "kafka_config": {"partition.assignment.strategy": "cooperative-sticky"}}, "eager"),
    ],
)
def test_options_are_checked_with_actionable_messages(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"group": "g", "topics": ["t"], "bootstrap_servers": "h:1", "database_url": "postgresql://x"}
    with pytest.raises(ConsumerError, match=message):
        Consumer(**{**base, **kwargs})


def test_confluent_records_decode_like_kafka_python_ones() -> None:
    """The confluent backend hands decode_record its arguments as a tuple; headers may be a list of tuples."""
    from consumers._clients import confluent_config

    event = Event(topic="orders", key="k", type="order.placed", payload={"n": 1})
    raw = ("orders", 0, 3, 1000, b"k", event.payload_json(), _relay_headers(event))
    got = decode_record(*raw)
    assert (got.id, got.type, got.payload, got.offset) == (event.id, "order.placed", {"n": 1}, 3)
    config = confluent_config(bootstrap_servers=("a:1", "b:2"), group="g", session_timeout_ms=6000,
                              heartbeat_interval_ms=500, max_poll_interval_ms=60000, client_id=None,
                              extra={"security.protocol": "ssl"})  # fmt: skip
    assert config["bootstrap.servers"] == "a:1,b:2" and config["enable.auto.commit"] is False
    assert config["security.protocol"] == "ssl"


def test_prometheus_text() -> None:
    m = ConsumerMetrics('b"g')
    m.processed = 3
    m.observe_handler(0.002)
    m.set_lag({"orders/1": 7})
    text = prometheus_text(m.snapshot())
    assert 'outbox_consumer_processed_total{group="b\\"g"} 3' in text
    assert 'outbox_consumer_lag{group="b\\"g",topic="orders",partition="1"} 7' in text
    assert 'outbox_consumer_handler_seconds_bucket{group="b\\"g",le="0.001"} 0' in text
    assert 'outbox_consumer_handler_seconds_bucket{group="b\\"g",le="0.0025"} 1' in text
    assert m.snapshot().handler_seconds_quantile(0.5) == 0.0025


def test_identity_is_stable() -> None:
    assert identity_id("t", 1, 2) == identity_id("t", 1, 2) != identity_id("t", 1, 3)
    assert isinstance(identity_id("t", 0, 0), uuid.UUID)
