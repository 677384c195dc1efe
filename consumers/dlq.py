"""Dead-letter topics: read them and replay chosen records to their original topic.

A dead-letter record is the original record (key, value, headers) plus the headers ``dlq-error``,
``dlq-attempts``, ``dlq-topic``, ``dlq-partition``, ``dlq-offset``, ``dlq-group`` and ``dlq-at``.
Replaying re-publishes key, value and the original headers to ``dlq-topic``; the event keeps its
``event-id`` (a record that had none gets its identity, :func:`consumers.identity_id`, as one), so a
group that already applied it skips it, and replaying twice applies it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers._core import DLQ_HEADERS
from consumers._records import identity_id
from consumers.errors import ConsumerError

__all__ = ["DeadLetter", "list_dead_letters", "replay_dead_letters"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter topic."""

    partition: int  # in the dead-letter topic
    offset: int  # in the dead-letter topic
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]  # the original record's headers, without the dlq-* ones
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    group: str | None
    error: str | None
    attempts: int | None
    dead_lettered_at: str | None

    @property
    def id(self) -> str:
        """``PARTITION:OFFSET`` in the dead-letter topic (what ``outbox dlq replay --record`` takes)."""
        return f"{self.partition}:{self.offset}"

    @property
    def event_id(self) -> str | None:
        for name, value in self.headers:
            if name == "event-id":
                return value.decode(errors="replace")
        return None

    @property
    def event_type(self) -> str | None:
        for name, value in self.headers:
            if name == "event-type":
                return value.decode(errors="replace")
        return None


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _dead_letter(record: Any) -> DeadLetter:
    dlq: dict[str, str] = {}
    original: list[tuple[str, bytes]] = []
    for name, value in record.headers or ():
        if name in DLQ_HEADERS:
            dlq[name] = (value or b"").decode(errors="replace")
        else:
            original.append((name, value or b""))
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        headers=tuple(original),
        original_topic=dlq.get("dlq-topic"),
        original_partition=_int(dlq.get("dlq-partition")),
        original_offset=_int(dlq.get("dlq-offset")),
        group=dlq.get("dlq-group"),
        error=dlq.get("dlq-error"),
        attempts=_int(dlq.get("dlq-attempts")),
        dead_lettered_at=dlq.get("dlq-at"),
    )


def list_dead_letters(
    bootstrap_servers: str | Sequence[str], topic: str, *, timeout: float = 30.0
) -> list[DeadLetter]:
    """Every record now in the dead-letter topic ``topic``, by partition and offset (no consumer group).

    :raises ConsumerError: the brokers cannot be reached or reading did not finish within ``timeout``.
    """
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,
        )
    except Exception as exc:
        raise ConsumerError(f"cannot connect to the brokers at {bootstrap_servers!r}: {exc}") from exc
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        out: list[DeadLetter] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise ConsumerError(f"reading the dead-letter topic {topic} did not finish within {timeout:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(_dead_letter(r) for r in records if r.offset < ends[TopicPartition(topic, r.partition)])
        out.sort(key=lambda d: (d.partition, d.offset))
        return out
    finally:
        consumer.close(autocommit=False)


def replay_dead_letters(
    bootstrap_servers: str | Sequence[str],
    topic: str,
    *,
    select: Callable[[DeadLetter], bool] | None = None,
    records: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> list[DeadLetter]:
    """Re-publish dead letters of ``topic`` to their original topics; return the ones replayed.

    Choose with ``records`` (ids ``"PARTITION:OFFSET"`` in the dead-letter topic), ``select`` (a
    predicate) or neither (all). Each is sent with acks=all and the call returns after every send
    was acknowledged. The dead-letter topic itself is not changed.

    :raises ConsumerError: an id names no record of the topic, a record lacks its ``dlq-topic``
        header, or a send failed.
    """
    letters = list_dead_letters(bootstrap_servers, topic, timeout=timeout)
    if records is not None:
        by_id = {d.id: d for d in letters}
        unknown = [r for r in records if r not in by_id]
        if unknown:
            raise ConsumerError(
                f"no record {', '.join(unknown)} in {topic} (ids are PARTITION:OFFSET, see `outbox dlq list`)"
            )
        letters = [by_id[r] for r in records]
    if select is not None:
        letters = [d for d in letters if select(d)]
    if not letters:
        return []
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", retries=5)
    try:
        futures = []
        for letter in letters:
            if not letter.original_topic:
                raise ConsumerError(f"{topic} {letter.id} has no dlq-topic header: it was not written by the SDK")
            headers = list(letter.headers)
            if letter.event_id is None and letter.original_partition is not None and letter.original_offset is not None:
                identity = identity_id(letter.original_topic, letter.original_partition, letter.original_offset)
                headers.append(("event-id", str(identity).encode()))
            futures.append(
                (letter, producer.send(letter.original_topic, key=letter.key, value=letter.value, headers=headers))
            )
        for letter, future in futures:
            try:
                future.get(timeout=timeout)
            except Exception as exc:
                raise ConsumerError(f"replaying {topic} {letter.id} to {letter.original_topic} failed: {exc}") from exc
            logger.info("replayed %s %s to %s", topic, letter.id, letter.original_topic)
    finally:
        producer.close(timeout=5)
    return letters
