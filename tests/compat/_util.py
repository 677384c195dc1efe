"""Client helpers shared by the compat tests: create topics, produce and read back with confluent-kafka.

Everything here talks to a real broker; consumers use ``assign()`` with explicit offsets and never
commit (the store has no consumer-group APIs yet).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30.0
"""Generous upper bound for anything that waits on a broker (only there to avoid hangs)."""


@dataclass(frozen=True)
class Rec:
    """What a consumer observed for one record."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


@dataclass(frozen=True)
class Delivery:
    """What a delivery report said for one produced record."""

    partition: int
    offset: int
    error: str | None
    timestamp: int


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create ``name`` and wait until Metadata shows a leader for every partition."""
    client = admin(bootstrap)
    client.create_topics([NewTopic(name, partitions, 1)], operation_timeout=TIMEOUT)[name].result(TIMEOUT)
    wait_for_leaders(client, name, partitions)


def wait_for_leaders(client: AdminClient, name: str, partitions: int) -> None:
    # Kafka creates topics asynchronously: CreateTopics returns before every broker knows the
    # leader. Polling metadata here (not a timing assertion) keeps the tests deterministic.
    deadline = time.monotonic() + TIMEOUT
    while True:
        md = client.list_topics(topic=name, timeout=TIMEOUT).topics.get(name)
        if (
            md is not None
            and md.error is None
            and len(md.partitions) == partitions
            and all(p.leader >= 0 for p in md.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {name} has no leaders after {TIMEOUT} s: {md}")
        time.sleep(0.1)


def producer(bootstrap: str, **config: Any) -> Producer:
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    conf.update({k.replace("_", "."): v for k, v in config.items()})
    return Producer(conf)


def produce_all(p: Producer, topic: str, records: list[dict[str, Any]], *, flush_each: bool = False) -> list[Delivery]:
    """Produce ``records`` (kwargs for ``Producer.produce``) in order; return their delivery reports."""
    reports: list[Delivery | None] = [None] * len(records)

    def on_delivery(index: int) -> Any:
        def cb(err: KafkaError | None, msg: Message) -> None:
            reports[index] = Delivery(
                partition=msg.partition(),
                offset=msg.offset(),
                error=None if err is None else err.name(),
                timestamp=msg.timestamp()[1],
            )

        return cb

    for index, kwargs in enumerate(records):
        p.produce(topic, on_delivery=on_delivery(index), **kwargs)
        if flush_each:
            assert p.flush(TIMEOUT) == 0
    assert p.flush(TIMEOUT) == 0, "messages still undelivered"
    assert all(r is not None for r in reports)
    return [r for r in reports if r is not None]


def consumer(bootstrap: str, **config: Any) -> Consumer:
    conf: dict[str, Any] = {
        # librdkafka requires a group.id even for assign(); nothing group-related is ever sent
        # because nothing subscribes, commits or fetches committed offsets.
        "group.id": "compat-assign-only",
        "bootstrap.servers": bootstrap,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
    }
    conf.update({k.replace("_", "."): v for k, v in config.items()})
    return Consumer(conf)


def to_rec(msg: Message) -> Rec:
    return Rec(
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=tuple(msg.headers() or ()),
        timestamp=msg.timestamp()[1],
    )


def consume(c: Consumer, count: int, timeout: float = TIMEOUT) -> list[Rec]:
    """Poll until ``count`` records arrived (raising on any consumer error)."""
    out: list[Rec] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {len(out)} of {count} records arrived within {timeout} s: {out}")
        msg = c.poll(min(remaining, 1.0))
        if msg is None:
            continue
        if msg.error() is not None:
            raise KafkaException(msg.error())
        out.append(to_rec(msg))
    return out


def read_partitions(bootstrap: str, topic: str, counts: dict[int, int], **config: Any) -> list[Rec]:
    """Read ``counts[p]`` records from the beginning of each partition ``p``; sorted by (partition, offset)."""
    c = consumer(bootstrap, **config)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in counts])
        recs = consume(c, sum(counts.values()))
        # Nothing beyond what was produced: one more poll must not deliver anything new.
        extra = c.poll(0.5)
        assert extra is None, f"unexpected extra record or error: {extra.error() or to_rec(extra)}"
    finally:
        c.close()
    return sorted(recs, key=lambda r: (r.partition, r.offset))


@dataclass(frozen=True)
class BatchHeader:
    """The RecordBatch v2 header fields of one batch as the broker stored it on disk."""

    base_offset: int
    magic: int
    codec: int  # 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int


CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def stored_batches(log_dir: Path, topic: str, partition: int) -> list[BatchHeader]:
    """Parse the batch headers of every segment of ``topic``-``partition`` (Kafka's on-disk layout).

    Kafka and the store both keep ``<topic>-<partition>/<20-digit base offset>.log`` files holding
    record batches exactly as produced (only BaseOffset and the leader epoch patched), which is what
    lets a test see the compression and producer id a client really used.
    """
    out: list[BatchHeader] = []
    for segment in sorted((log_dir / f"{topic}-{partition}").glob("*.log")):
        data = segment.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base_offset, length = struct.unpack_from(">qi", data, pos)
            if length <= 0:
                break  # preallocated zeros, if any
            magic = data[pos + 16]
            (attributes, last_delta, base_ts, max_ts, pid, epoch, base_seq, count) = struct.unpack_from(
                ">hiqqqhii", data, pos + 21
            )
            out.append(
                BatchHeader(base_offset, magic, attributes & 7, last_delta, base_ts, max_ts, pid, epoch, base_seq, count)
            )
            pos += 12 + length
    return out
