"""confluent-kafka 2.16 (librdkafka 2.16): idempotent compressed producers, AdminClient, assign()-only consumers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic
from kafka.partitioner.default import murmur2

from tests.compat._util import (
    CODECS,
    TIMEOUT,
    Rec,
    admin,
    consume,
    consumer,
    create_topic,
    produce_all,
    producer,
    read_partitions,
    stored_batches,
)
from tests.compat.conftest import Target, unique_topic

BASE_TS = 1_710_000_000_000


def java_partition(key: bytes, partitions: int) -> int:
    """The Java client's (and kafka-python's) murmur2 partitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_idempotent_producer_with_compression(broker: Target, topic: str, codec: str) -> None:
    partitions = 3
    create_topic(broker.bootstrap, topic, partitions)
    p = producer(broker.bootstrap, compression_type=codec, partitioner="murmur2_random", acks="all", linger_ms=50)
    keys = [f"customer-{i % 7}".encode() for i in range(40)]
    records: list[dict[str, Any]] = [
        {
            "key": key,
            "value": (f"event {i} " + "payload " * 40).encode(),
            "headers": [("seq", str(i).encode()), ("codec", codec.encode())],
            "timestamp": BASE_TS + i,
        }
        for i, key in enumerate(keys)
    ]
    reports = produce_all(p, topic, records)

    # Keys land where the Java client would put them, and offsets count up per partition in order.
    expected_offsets: dict[int, int] = {}
    expected: list[Rec] = []
    for record, report in zip(records, reports, strict=True):
        part = java_partition(record["key"], partitions)
        offset = expected_offsets.get(part, 0)
        expected_offsets[part] = offset + 1
        assert (report.error, report.partition, report.offset, report.timestamp) == (
            None, part, offset, record["timestamp"]
        )
        expected.append(Rec(part, offset, record["key"], record["value"], tuple(record["headers"]), record["timestamp"]))
    assert len(expected_offsets) > 1, "the keys should spread over several partitions"

    got = read_partitions(broker.bootstrap, topic, expected_offsets)
    assert got == sorted(expected, key=lambda r: (r.partition, r.offset))

    # The batches were stored as the producer compressed them, with its producer id and sequences.
    for part, count in expected_offsets.items():
        batches = stored_batches(broker.log_dir, topic, part)
        assert sum(b.record_count for b in batches) == count
        assert {b.codec for b in batches} == {CODECS[codec]}
        assert len({b.producer_id for b in batches}) == 1 and batches[0].producer_id >= 0
        sequence = 0
        for b in batches:
            assert b.base_sequence == sequence and b.base_offset == sequence and b.last_offset_delta == b.record_count - 1
            sequence += b.record_count


def test_admin_create_list_delete(broker: Target) -> None:
    a = admin(broker.bootstrap)
    one, four = unique_topic("admin-one"), unique_topic("admin-four")
    futures = a.create_topics([NewTopic(one, 1, 1), NewTopic(four, 4, 1)], operation_timeout=TIMEOUT)
    for f in futures.values():
        assert f.result(TIMEOUT) is None
    deadline = time.monotonic() + TIMEOUT
    while True:
        md = a.list_topics(timeout=TIMEOUT)
        if all(t in md.topics and all(p.leader == 1 for p in md.topics[t].partitions.values()) for t in (one, four)):
            break
        assert time.monotonic() < deadline, "created topics never got leaders"
        time.sleep(0.1)
    host, port = broker.bootstrap.rsplit(":", 1)
    assert {b.id: (b.host, b.port) for b in md.brokers.values()} == {1: (host, int(port))}
    assert md.controller_id == 1
    assert md.cluster_id
    for name, count in ((one, 1), (four, 4)):
        tm = md.topics[name]
        assert tm.error is None
        assert sorted(tm.partitions) == list(range(count))
        for pm in tm.partitions.values():
            assert (pm.leader, pm.replicas, pm.isrs, pm.error) == (1, [1], [1], None)

    produce_all(producer(broker.bootstrap), four, [{"partition": 2, "value": b"gone soon"}])
    assert a.delete_topics([four], operation_timeout=TIMEOUT)[four].result(TIMEOUT) is None
    # Kafka deletes asynchronously: wait (bounded) until Metadata no longer lists it.
    deadline = time.monotonic() + TIMEOUT
    while four in a.list_topics(timeout=TIMEOUT).topics:
        assert time.monotonic() < deadline, f"{four} still listed after delete"
        time.sleep(0.1)
    assert one in a.list_topics(timeout=TIMEOUT).topics

    # Re-creating the deleted topic starts an empty log (Kafka may briefly say it still exists).
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            a.create_topics([NewTopic(four, 2, 1)])[four].result(TIMEOUT)
            break
        except KafkaException as exc:
            assert exc.args[0].name() == "TOPIC_ALREADY_EXISTS" and time.monotonic() < deadline, exc
            time.sleep(0.2)
    c = consumer(broker.bootstrap)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                marks = c.get_watermark_offsets(TopicPartition(four, 1), timeout=TIMEOUT)
                break
            except KafkaException:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert marks == (0, 0)
    finally:
        c.close()


def test_assign_consumer_from_beginning_end_and_timestamp(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, 1)
    p = producer(broker.bootstrap, compression_type="lz4")
    produce_all(p, topic, [{"partition": 0, "key": b"k%d" % i, "value": b"v%d" % i, "timestamp": BASE_TS + i * 100}
                           for i in range(10)], flush_each=True)
    tp = TopicPartition(topic, 0)
    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(tp, timeout=TIMEOUT) == (0, 10)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert [(r.offset, r.key, r.timestamp) for r in consume(c, 10)] == [
            (i, b"k%d" % i, BASE_TS + i * 100) for i in range(10)
        ]
        # By timestamp: offsets_for_times then assign at that offset.
        (found,) = c.offsets_for_times([TopicPartition(topic, 0, BASE_TS + 450)], timeout=TIMEOUT)
        assert (found.offset, found.error) == (5, None)
        c.assign([found])
        assert [(r.offset, r.value) for r in consume(c, 5)] == [(i, b"v%d" % i) for i in range(5, 10)]
        (past,) = c.offsets_for_times([TopicPartition(topic, 0, BASE_TS + 10**6)], timeout=TIMEOUT)
        assert past.offset == OFFSET_END  # -1: no record at or after that timestamp
        # From the end: only records produced after the consumer resolved "end". When that
        # happens is up to the client, so keep producing until one arrives; it must be one of them.
        c.assign([TopicPartition(topic, 0, OFFSET_END)])
        produced: dict[int, bytes] = {}
        deadline = time.monotonic() + TIMEOUT
        msg = None
        while msg is None:
            assert time.monotonic() < deadline, "nothing arrived from OFFSET_END"
            value = b"late-%d" % len(produced)
            (report,) = produce_all(p, topic, [{"partition": 0, "value": value}])
            produced[report.offset] = value
            msg = c.poll(0.5)
        assert msg.error() is None
        assert msg.offset() >= 10 and produced[msg.offset()] == msg.value()
        assert c.get_watermark_offsets(tp, timeout=TIMEOUT) == (0, 10 + len(produced))
    finally:
        c.close()
