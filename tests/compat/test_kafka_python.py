"""kafka-python 3.x (the project's own client): idempotent acks=all producer and a group-less consumer."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2

from tests.compat._util import TIMEOUT, create_topic, read_partitions, stored_batches
from tests.compat.conftest import Target

BASE_TS = 1_720_000_000_000


def _poll_records(kc: KafkaConsumer, count: int) -> list[tuple[int, int, bytes | None, bytes | None, list, int]]:
    out: list[tuple[int, int, bytes | None, bytes | None, list, int]] = []
    deadline = time.monotonic() + TIMEOUT
    while len(out) < count:
        assert time.monotonic() < deadline, f"only {len(out)} of {count} records: {out}"
        for batch in kc.poll(timeout_ms=500).values():
            out.extend((m.partition, m.offset, m.key, m.value, list(m.headers), m.timestamp) for m in batch)
    return out


def _value(i: int) -> bytes:
    return f"value-{i}:".encode() + b"." * 500  # compressible: clients skip codecs that do not shrink


def test_producer_acks_all_with_keys_and_headers(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", compression_type="gzip", linger_ms=0)
    try:
        sent = []
        for i in range(12):
            key = f"user-{i % 5}".encode()
            md = kp.send(topic, key=key, value=_value(i), headers=[("i", str(i).encode())],
                         timestamp_ms=BASE_TS + i).get(timeout=TIMEOUT)
            sent.append((key, md))
    finally:
        kp.close()
    next_offset = {0: 0, 1: 0}
    for i, (key, md) in enumerate(sent):
        part = (murmur2(key) & 0x7FFFFFFF) % 2
        assert (md.topic, md.partition, md.offset, md.timestamp) == (topic, part, next_offset[part], BASE_TS + i)
        next_offset[part] += 1
    recs = read_partitions(broker.bootstrap, topic, next_offset)
    by_value = {r.value: r for r in recs}
    for i, (key, md) in enumerate(sent):
        r = by_value[_value(i)]
        assert (r.partition, r.offset, r.key, r.headers, r.timestamp) == (
            md.partition, md.offset, key, (("i", str(i).encode()),), BASE_TS + i
        )
    # Idempotence is on by default in kafka-python 3: one producer id, sequences from 0.
    for part, count in next_offset.items():
        batches = stored_batches(broker.log_dir, topic, part)
        assert sum(b.record_count for b in batches) == count
        assert {b.codec for b in batches} == {1}
        assert len({b.producer_id for b in batches}) == 1 and batches[0].producer_id >= 0
        assert [b.base_sequence for b in batches] == [b.base_offset for b in batches]


def test_consumer_assign_seek_and_offset_lookups(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        for i in range(6):
            kp.send(topic, partition=i % 2, key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"x")],
                    timestamp_ms=BASE_TS + i * 10)
        kp.flush(timeout=TIMEOUT)
    finally:
        kp.close()
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                       auto_offset_reset="none", consumer_timeout_ms=1000)
    try:
        kc.assign([tp0, tp1])
        kc.seek_to_beginning()
        got = sorted(_poll_records(kc, 6))
        assert got == [
            (0, 0, b"k0", b"v0", [("h", b"x")], BASE_TS),
            (0, 1, b"k2", b"v2", [("h", b"x")], BASE_TS + 20),
            (0, 2, b"k4", b"v4", [("h", b"x")], BASE_TS + 40),
            (1, 0, b"k1", b"v1", [("h", b"x")], BASE_TS + 10),
            (1, 1, b"k3", b"v3", [("h", b"x")], BASE_TS + 30),
            (1, 2, b"k5", b"v5", [("h", b"x")], BASE_TS + 50),
        ]
        assert (kc.position(tp0), kc.position(tp1)) == (3, 3)
        kc.seek(tp0, 1)
        kc.seek(tp1, 2)
        assert sorted(_poll_records(kc, 3)) == [
            (0, 1, b"k2", b"v2", [("h", b"x")], BASE_TS + 20),
            (0, 2, b"k4", b"v4", [("h", b"x")], BASE_TS + 40),
            (1, 2, b"k5", b"v5", [("h", b"x")], BASE_TS + 50),
        ]
        assert kc.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
        assert kc.end_offsets([tp0, tp1]) == {tp0: 3, tp1: 3}
        found = kc.offsets_for_times({tp0: BASE_TS + 15, tp1: BASE_TS + 51})
        assert (found[tp0].offset, found[tp0].timestamp) == (1, BASE_TS + 20)
        assert found[tp1] is None
    finally:
        kc.close()
