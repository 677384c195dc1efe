"""Helpers of the consumer SDK's tests: put events in the log in the relay's record format, read effects."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from outbox import Event

__all__ = [
    "EFFECTS_DDL",
    "create_topic",
    "effects",
    "make_events",
    "produce",
    "producer",
    "relay_record",
]

#: The table test handlers write their effects to: one row per application of an event.
EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS effects (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL,
    key text,
    n integer,
    member text,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)


def relay_record(event: Event) -> dict[str, Any]:
    """The record the relay writes for ``event`` (keyword arguments of ``KafkaProducer.send``)."""
    headers = [
        ("event-id", str(event.id).encode()),
        ("event-type", event.type.encode()),
        ("content-type", b"application/json"),
        *((k, v.encode()) for k, v in event.headers.items()),
    ]
    return {
        "key": None if event.key is None else event.key.encode(),
        "value": event.payload_json(),
        "headers": headers,
        "timestamp_ms": int(event.created_at.timestamp() * 1000),
    }


def produce(bootstrap: str, topic: str, events: Iterable[Event], *, partition: int | None = None) -> list[Any]:
    """Send ``events`` in order with acks=all; return their record metadata (partition, offset)."""
    p = producer(bootstrap)
    try:
        futures = [p.send(topic, partition=partition, **relay_record(e)) for e in events]
        p.flush()
        return [f.get(timeout=30) for f in futures]
    finally:
        p.close()


def make_events(topic: str, keys: Sequence[str], per_key: int, *, type: str = "thing.happened") -> list[Event]:
    """``per_key`` events for each key, interleaved, payload ``{"key": k, "n": i}`` (i = 0.. per key)."""
    out = []
    for n in range(per_key):
        for key in keys:
            out.append(Event(topic=topic, key=key, type=type, payload={"key": key, "n": n}))
    return out


def effects(url: str) -> list[tuple[uuid.UUID, str | None, int | None]]:
    """Every effect row, in the order they were applied."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT event_id, key, n FROM effects ORDER BY seq").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]
