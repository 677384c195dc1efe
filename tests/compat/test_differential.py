"""Differential tests: one scenario against Apache Kafka and against the store, same observations.

Every test runs twice (``broker`` is parametrised over ``kafka`` and ``store``) and asserts exact
values that both must produce, so a difference shows up as a failure of the store's run with the
Kafka run proving the expectation. Where the store legitimately differs, the comment says why.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic, ResourceType
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, OffsetOutOfRangeError

from tests.compat._util import (
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

BASE_TS = 1_700_000_000_000  # explicit CreateTime timestamps: the broker must keep them verbatim


def test_offsets_keys_headers_and_timestamps_round_trip(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    p = producer(broker.bootstrap, compression_type="none")
    singles: list[dict[str, Any]] = [
        {
            "partition": i % 2,
            "key": f"k{i}".encode(),
            "value": f"v{i}".encode(),
            "headers": [("h", str(i).encode()), ("dup", b"a"), ("dup", b"b")],
            "timestamp": BASE_TS + i * 1000,
        }
        for i in range(5)
    ]
    # One batch per record (flush after each): offsets are assigned per batch on arrival.
    first = produce_all(p, topic, singles, flush_each=True)
    assert [(d.partition, d.offset, d.error) for d in first] == [
        (0, 0, None),
        (1, 0, None),
        (0, 1, None),
        (1, 1, None),
        (0, 2, None),
    ]
    # Then several records in one batch, including a tombstone, an empty value and a null header.
    multi: list[dict[str, Any]] = [
        {"partition": 1, "key": b"tomb", "value": None, "timestamp": BASE_TS + 10_000},
        {"partition": 1, "key": None, "value": b"", "timestamp": BASE_TS + 10_001},
        {"partition": 1, "key": b"\x00\xff", "value": b"\x01" * 3000, "headers": [("n", None)], "timestamp": BASE_TS},
    ]
    second = produce_all(p, topic, multi)
    assert [(d.partition, d.offset, d.error) for d in second] == [(1, 2, None), (1, 3, None), (1, 4, None)]
    assert [d.timestamp for d in first + second] == [r["timestamp"] for r in singles + multi]

    got = read_partitions(broker.bootstrap, topic, {0: 3, 1: 5})
    expected = [
        Rec(0, 0, b"k0", b"v0", (("h", b"0"), ("dup", b"a"), ("dup", b"b")), BASE_TS),
        Rec(0, 1, b"k2", b"v2", (("h", b"2"), ("dup", b"a"), ("dup", b"b")), BASE_TS + 2000),
        Rec(0, 2, b"k4", b"v4", (("h", b"4"), ("dup", b"a"), ("dup", b"b")), BASE_TS + 4000),
        Rec(1, 0, b"k1", b"v1", (("h", b"1"), ("dup", b"a"), ("dup", b"b")), BASE_TS + 1000),
        Rec(1, 1, b"k3", b"v3", (("h", b"3"), ("dup", b"a"), ("dup", b"b")), BASE_TS + 3000),
        Rec(1, 2, b"tomb", None, (), BASE_TS + 10_000),
        Rec(1, 3, None, b"", (), BASE_TS + 10_001),
        Rec(1, 4, b"\x00\xff", b"\x01" * 3000, (("n", None),), BASE_TS),
    ]
    assert got == expected


def test_watermarks_and_list_offsets(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    c = consumer(broker.bootstrap)
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, request_timeout_ms=30_000)
    try:
        tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
        assert c.get_watermark_offsets(tp0, timeout=TIMEOUT) == (0, 0)
        produce_all(producer(broker.bootstrap), topic, [{"partition": 0, "value": b"x"} for _ in range(4)])
        produce_all(producer(broker.bootstrap), topic, [{"partition": 1, "value": b"y"}])
        assert c.get_watermark_offsets(tp0, timeout=TIMEOUT) == (0, 4)
        assert c.get_watermark_offsets(tp1, timeout=TIMEOUT) == (0, 1)
        k0, k1 = KTopicPartition(topic, 0), KTopicPartition(topic, 1)
        assert kc.beginning_offsets([k0, k1]) == {k0: 0, k1: 0}
        assert kc.end_offsets([k0, k1]) == {k0: 4, k1: 1}
    finally:
        c.close()
        kc.close()


def test_offsets_for_times(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=1)
    plain = producer(broker.bootstrap, compression_type="none")
    gzip = producer(broker.bootstrap, compression_type="gzip")
    # offsets 0-2: one batch each; 3-5: one uncompressed batch; 6-8: one gzip batch.
    produce_all(plain, topic, [{"partition": 0, "value": b"a", "timestamp": BASE_TS + i * 1000} for i in range(3)],
                flush_each=True)
    produce_all(plain, topic, [{"partition": 0, "value": b"b", "timestamp": BASE_TS + 3000 + i * 10} for i in range(3)])
    produce_all(gzip, topic, [{"partition": 0, "value": b"c", "timestamp": BASE_TS + 4000 + i * 10} for i in range(3)])
    queries = {
        BASE_TS - 1: (0, BASE_TS),
        BASE_TS: (0, BASE_TS),
        BASE_TS + 1: (1, BASE_TS + 1000),
        BASE_TS + 2000: (2, BASE_TS + 2000),
        BASE_TS + 3005: (4, BASE_TS + 3010),  # inside a batch: the exact record, not the batch start
        BASE_TS + 3020: (5, BASE_TS + 3020),
        BASE_TS + 4015: (8, BASE_TS + 4020),  # inside a compressed batch
        BASE_TS + 10**6: None,  # past every record
    }
    c = consumer(broker.bootstrap)
    try:
        for ts, want in queries.items():
            (found,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=TIMEOUT)
            assert found.error is None
            # librdkafka reports "no such record" as offset -1 (OFFSET_END).
            assert found.offset == (-1 if want is None else want[0]), f"timestamp {ts}"
    finally:
        c.close()
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        tp = KTopicPartition(topic, 0)
        for ts, want in queries.items():
            result = kc.offsets_for_times({tp: ts})[tp]
            got = None if result is None else (result.offset, result.timestamp)
            assert got == want, f"timestamp {ts}"
    finally:
        kc.close()


def test_offsets_for_times_with_out_of_order_timestamps(broker: Target, topic: str) -> None:
    # Kafka's rule: the first record (in offset order) whose timestamp is >= the target; CreateTime
    # timestamps need not grow with offsets.
    create_topic(broker.bootstrap, topic, partitions=1)
    stamps = [BASE_TS + 5000, BASE_TS + 1000, BASE_TS + 3000, BASE_TS + 2000]
    produce_all(producer(broker.bootstrap), topic, [{"partition": 0, "value": b"v", "timestamp": t} for t in stamps],
                flush_each=True)
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    try:
        tp = KTopicPartition(topic, 0)
        observed = {}
        for ts in (BASE_TS, BASE_TS + 2500, BASE_TS + 5000, BASE_TS + 5001):
            r = kc.offsets_for_times({tp: ts})[tp]
            observed[ts] = None if r is None else (r.offset, r.timestamp)
    finally:
        kc.close()
    assert observed == {
        BASE_TS: (0, BASE_TS + 5000),
        BASE_TS + 2500: (0, BASE_TS + 5000),
        BASE_TS + 5000: (0, BASE_TS + 5000),
        BASE_TS + 5001: None,
    }


def _produce_three(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=1)
    produce_all(producer(broker.bootstrap), topic, [{"partition": 0, "value": f"v{i}".encode()} for i in range(3)])


def test_fetch_out_of_range_with_reset_error(broker: Target, topic: str) -> None:
    _produce_three(broker, topic)
    c = consumer(broker.bootstrap, auto_offset_reset="error")
    try:
        c.assign([TopicPartition(topic, 0, 10)])
        deadline = time.monotonic() + TIMEOUT
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = c.poll(1.0)
        assert msg is not None and msg.error() is not None, "expected an offset-out-of-range error"
        assert msg.error().code() == KafkaError._AUTO_OFFSET_RESET
        assert "Offset out of range" in msg.error().str()
    finally:
        c.close()


def test_fetch_out_of_range_resets_to_earliest(broker: Target, topic: str) -> None:
    _produce_three(broker, topic)
    c = consumer(broker.bootstrap, auto_offset_reset="earliest")
    try:
        c.assign([TopicPartition(topic, 0, 10)])
        assert [(r.offset, r.value) for r in consume(c, 3)] == [(0, b"v0"), (1, b"v1"), (2, b"v2")]
    finally:
        c.close()


def test_fetch_at_high_watermark_waits_for_new_data(broker: Target, topic: str) -> None:
    _produce_three(broker, topic)
    c = consumer(broker.bootstrap, auto_offset_reset="error", fetch_wait_max_ms=100)
    try:
        c.assign([TopicPartition(topic, 0, 3)])
        assert c.poll(1.0) is None  # the high watermark itself is in range: no error, no data
        produce_all(producer(broker.bootstrap), topic, [{"partition": 0, "value": b"v3"}])
        assert [(r.offset, r.value) for r in consume(c, 1)] == [(3, b"v3")]
    finally:
        c.close()


@pytest.mark.parametrize("reset", ["none", "earliest"])
def test_kafka_python_out_of_range(broker: Target, topic: str, reset: str) -> None:
    _produce_three(broker, topic)
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, auto_offset_reset=reset,
                       enable_auto_commit=False)
    try:
        tp = KTopicPartition(topic, 0)
        kc.assign([tp])
        kc.seek(tp, 7)
        if reset == "none":
            with pytest.raises(OffsetOutOfRangeError):
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    kc.poll(timeout_ms=500)
        else:
            got: list[tuple[int, bytes]] = []
            deadline = time.monotonic() + TIMEOUT
            while len(got) < 3 and time.monotonic() < deadline:
                for batch in kc.poll(timeout_ms=500).values():
                    got.extend((m.offset, m.value) for m in batch)
            assert got == [(0, b"v0"), (1, b"v1"), (2, b"v2")]
    finally:
        kc.close()


# -- errors -----------------------------------------------------------------------------------


def _admin_error(futures: dict[str, Any], name: str) -> tuple[int, str] | None:
    try:
        futures[name].result(TIMEOUT)
    except KafkaException as exc:
        err = exc.args[0]
        return err.code(), err.name()
    return None


def test_create_existing_topic(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=1)
    a = admin(broker.bootstrap)
    assert _admin_error(a.create_topics([NewTopic(topic, 1, 1)]), topic) == (36, "TOPIC_ALREADY_EXISTS")
    assert _admin_error(a.create_topics([NewTopic(topic, 3, 1)]), topic) == (36, "TOPIC_ALREADY_EXISTS")
    md = a.list_topics(topic=topic, timeout=TIMEOUT).topics[topic]
    assert len(md.partitions) == 1  # the failed create changed nothing


@pytest.mark.parametrize(
    "name",
    ["bad/name", "sp ace", ".", "..", "a" * 250, "ümlaut", "semi;colon"],
    ids=["slash", "space", "dot", "dotdot", "too-long", "non-ascii", "semicolon"],
)
def test_create_invalid_topic_name(broker: Target, name: str) -> None:
    a = admin(broker.bootstrap)
    assert _admin_error(a.create_topics([NewTopic(name, 1, 1)]), name) == (17, "TOPIC_EXCEPTION")


def test_create_longest_valid_topic_name(broker: Target) -> None:
    name = unique_topic("x")[:14] + "a" * 235  # 249 characters: Kafka's limit
    assert len(name) == 249
    a = admin(broker.bootstrap)
    assert _admin_error(a.create_topics([NewTopic(name, 1, 1)]), name) is None
    assert name in a.list_topics(timeout=TIMEOUT).topics


def test_create_topic_colliding_on_dot_and_underscore(broker: Target) -> None:
    # Kafka refuses a topic whose name differs from an existing one only by '.' versus '_' (both
    # map to the same metric names): "Topic 'a.b' collides with existing topic: a_b".
    stem = unique_topic("collide")
    a = admin(broker.bootstrap)
    assert _admin_error(a.create_topics([NewTopic(f"{stem}_x", 1, 1)]), f"{stem}_x") is None
    assert _admin_error(a.create_topics([NewTopic(f"{stem}.x", 1, 1)]), f"{stem}.x") == (17, "TOPIC_EXCEPTION")


@pytest.mark.parametrize(
    ("partitions", "replication", "error"),
    [
        (0, 1, (37, "INVALID_PARTITIONS")),
        (1, 3, (38, "INVALID_REPLICATION_FACTOR")),
        (1, 0, (38, "INVALID_REPLICATION_FACTOR")),
    ],
)
def test_create_topic_invalid_counts(
    broker: Target, topic: str, partitions: int, replication: int, error: tuple[int, str]
) -> None:
    a = admin(broker.bootstrap)
    assert _admin_error(a.create_topics([NewTopic(topic, partitions, replication)]), topic) == error
    assert topic not in a.list_topics(timeout=TIMEOUT).topics


def test_delete_unknown_topic(broker: Target, topic: str) -> None:
    a = admin(broker.bootstrap)
    assert _admin_error(a.delete_topics([topic]), topic) == (3, "UNKNOWN_TOPIC_OR_PART")


def test_record_larger_than_max_message_bytes(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=1)
    # The producer allows 5 MB, the broker's (default) max.message.bytes is 1048588.
    p = producer(broker.bootstrap, message_max_bytes=5_000_000, compression_type="none")
    (big,) = produce_all(p, topic, [{"partition": 0, "value": b"x" * 2_000_000}])
    assert big.error == "MSG_SIZE_TOO_LARGE"
    (ok,) = produce_all(p, topic, [{"partition": 0, "value": b"fits"}])
    assert (ok.error, ok.offset) == (None, 0)  # the refused record took no offset

    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", max_request_size=5_000_000)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            kp.send(topic, value=b"y" * 2_000_000, partition=0).get(timeout=TIMEOUT)
    finally:
        kp.close()  # kafka-python's idempotent producer treats this error as fatal: start another
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        assert kp.send(topic, value=b"fits too", partition=0).get(timeout=TIMEOUT).offset == 1
    finally:
        kp.close()
    assert [r.value for r in read_partitions(broker.bootstrap, topic, {0: 2})] == [b"fits", b"fits too"]


def test_metadata_auto_creates_unknown_topic(broker: Target, topic: str) -> None:
    # A producer's Metadata request may create the topic (auto.create.topics.enable, the default),
    # with the default partition count (1 on both).
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        meta = kp.send(topic, key=b"k", value=b"v").get(timeout=TIMEOUT)
        assert (meta.partition, meta.offset) == (0, 0)
    finally:
        kp.close()
    md = admin(broker.bootstrap).list_topics(topic=topic, timeout=TIMEOUT).topics[topic]
    assert md.error is None and sorted(md.partitions) == [0]


def test_unknown_topic_without_auto_create(broker_no_auto_create: Target) -> None:
    bootstrap = broker_no_auto_create.bootstrap
    name = unique_topic("nope")
    # Metadata: the topic is reported with UNKNOWN_TOPIC_OR_PARTITION and no partitions.
    md = admin(bootstrap).list_topics(topic=name, timeout=TIMEOUT).topics[name]
    assert md.error is not None and md.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert md.partitions == {}
    # librdkafka fails the message with the broker's error once the topic stays unknown.
    p = producer(bootstrap, message_timeout_ms=10_000, topic_metadata_propagation_max_ms=1000)
    (report,) = produce_all(p, name, [{"value": b"v"}])
    assert report.error == "UNKNOWN_TOPIC_OR_PART"
    # kafka-python blocks for metadata and gives up after max_block_ms.
    kp = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_block_ms=2000)
    try:
        with pytest.raises(KafkaTimeoutError):
            kp.send(name, value=b"v").get(timeout=TIMEOUT)
    finally:
        kp.close()
    # ... and nothing created it on the way.
    assert name not in admin(bootstrap).list_topics(timeout=TIMEOUT).topics


# -- fetch edges ------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_fetch_from_inside_a_batch(broker: Target, topic: str, codec: str) -> None:
    # The broker returns the whole batch holding the offset; the client must then skip the
    # records before it. A broker that returns the *next* batch loses records 1-4 here.
    create_topic(broker.bootstrap, topic, partitions=1)
    p = producer(broker.bootstrap, compression_type=codec, linger_ms=100)
    reports = produce_all(p, topic, [{"partition": 0, "value": b"r%d" % i + b"." * 100} for i in range(5)])
    assert [r.offset for r in reports] == [0, 1, 2, 3, 4]
    assert len(stored_batches(broker.log_dir, topic, 0)) == 1, "the five records should form one batch"
    for start in (1, 4):
        c = consumer(broker.bootstrap)
        try:
            c.assign([TopicPartition(topic, 0, start)])
            got = consume(c, 5 - start)
            assert [(r.offset, r.value[:2]) for r in got] == [(i, b"r%d" % i) for i in range(start, 5)]
        finally:
            c.close()
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = KTopicPartition(topic, 0)
        kc.assign([tp])
        kc.seek(tp, 3)
        got2: list[int] = []
        deadline = time.monotonic() + TIMEOUT
        while len(got2) < 2 and time.monotonic() < deadline:
            for batch in kc.poll(timeout_ms=500).values():
                got2.extend(m.offset for m in batch)
        assert got2 == [3, 4]
    finally:
        kc.close()


def test_record_larger_than_fetch_limits_is_still_delivered(broker: Target, topic: str) -> None:
    # KIP-74: the first batch is returned even if it exceeds fetch.max.bytes / max.partition.fetch.bytes.
    create_topic(broker.bootstrap, topic, partitions=1)
    values = [b"a" * 50_000, b"b" * 10, b"c" * 70_000]
    produce_all(producer(broker.bootstrap, compression_type="none"), topic,
                [{"partition": 0, "value": v} for v in values], flush_each=True)
    got = read_partitions(broker.bootstrap, topic, {0: 3}, fetch_max_bytes=1024, max_partition_fetch_bytes=1024,
                          message_max_bytes=1000)
    assert [(r.offset, r.value) for r in got] == list(enumerate(values))


def test_many_batches_read_in_small_fetches(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    p = producer(broker.bootstrap, compression_type="zstd", linger_ms=1, batch_num_messages=37)
    records: list[dict[str, Any]] = [
        {"partition": i % 2, "key": b"%d" % i, "value": b"%06d" % i * 20} for i in range(3000)
    ]
    reports = produce_all(p, topic, records)
    assert [r.offset for r in reports] == [i // 2 for i in range(3000)]
    got = read_partitions(broker.bootstrap, topic, {0: 1500, 1: 1500}, fetch_max_bytes=4096,
                          max_partition_fetch_bytes=2048, message_max_bytes=1000)
    assert [(r.partition, r.offset, r.key) for r in got] == sorted(
        (i % 2, i // 2, b"%d" % i) for i in range(3000)
    )
    assert all(r.value == b"%06d" % int(r.key or b"") * 20 for r in got)


# -- topic configs ----------------------------------------------------------------------------


def test_topic_max_message_bytes_config(broker: Target, topic: str) -> None:
    a = admin(broker.bootstrap)
    a.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "3000000"})])[topic].result(TIMEOUT)
    small = unique_topic("small-max")
    a.create_topics([NewTopic(small, 1, 1, config={"max.message.bytes": "1000"})])[small].result(TIMEOUT)
    p = producer(broker.bootstrap, message_max_bytes=5_000_000, compression_type="none")
    (big,) = produce_all(p, topic, [{"partition": 0, "value": b"x" * 2_000_000}])
    assert (big.error, big.offset) == (None, 0)
    (refused,) = produce_all(p, small, [{"partition": 0, "value": b"y" * 2000}])
    assert refused.error == "MSG_SIZE_TOO_LARGE"
    (fits,) = produce_all(p, small, [{"partition": 0, "value": b"y" * 100}])
    assert (fits.error, fits.offset) == (None, 0)
    assert [len(r.value or b"") for r in read_partitions(broker.bootstrap, topic, {0: 1})] == [2_000_000]


@pytest.mark.parametrize(
    "config",
    [{"max.message.bytes": "abc"}, {"max.message.bytes": "-5"}, {"no.such.config": "1"}],
    ids=["not-a-number", "negative", "unknown-name"],
)
def test_create_topic_invalid_config(broker: Target, topic: str, config: dict[str, str]) -> None:
    a = admin(broker.bootstrap)
    assert _admin_error(a.create_topics([NewTopic(topic, 1, 1, config=config)]), topic) == (40, "INVALID_CONFIG")
    assert topic not in a.list_topics(timeout=TIMEOUT).topics


@pytest.mark.parametrize(
    "config",
    [{"message.timestamp.type": "LogAppendTime"}, {"cleanup.policy": "compact"}, {"compression.type": "gzip"}],
    ids=["log-append-time", "compaction", "broker-compression"],
)
def test_topic_configs_the_store_refuses(broker: Target, topic: str, config: dict[str, str]) -> None:
    # Legitimate difference: Kafka supports these; the store stores producer batches byte for
    # byte and never rewrites them (no broker-side timestamps, recompression or compaction), so
    # it refuses them with INVALID_CONFIG rather than accepting a config it would not honour.
    a = admin(broker.bootstrap)
    error = _admin_error(a.create_topics([NewTopic(topic, 1, 1, config=config)]), topic)
    assert error == ((40, "INVALID_CONFIG") if broker.is_store else None)


def test_create_topic_validate_only(broker: Target, topic: str) -> None:
    a = admin(broker.bootstrap)
    assert a.create_topics([NewTopic(topic, 2, 1)], validate_only=True)[topic].result(TIMEOUT) is None
    assert topic not in a.list_topics(timeout=TIMEOUT).topics
    bad = a.create_topics([NewTopic(topic, 2, 1, config={"no.such.config": "1"})], validate_only=True)
    assert _admin_error(bad, topic) == (40, "INVALID_CONFIG")


# -- admin APIs beyond create/delete ----------------------------------------------------------


def test_create_partitions_and_delete_records(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=1)
    produce_all(producer(broker.bootstrap), topic, [{"partition": 0, "value": b"%d" % i} for i in range(5)])
    a = admin(broker.bootstrap)
    assert a.create_partitions([NewPartitions(topic, 3)])[topic].result(TIMEOUT) is None
    deadline = time.monotonic() + TIMEOUT
    while len(a.list_topics(topic=topic, timeout=TIMEOUT).topics[topic].partitions) != 3:
        assert time.monotonic() < deadline, "the new partitions never showed up"
        time.sleep(0.1)
    assert _admin_error(a.create_partitions([NewPartitions(topic, 2)]), topic) == (37, "INVALID_PARTITIONS")
    (report,) = produce_all(producer(broker.bootstrap), topic, [{"partition": 2, "value": b"new"}])
    assert (report.error, report.offset) == (None, 0)

    (deleted,) = a.delete_records([TopicPartition(topic, 0, 3)]).values()
    assert deleted.result(TIMEOUT).low_watermark == 3
    c = consumer(broker.bootstrap, auto_offset_reset="earliest")
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT) == (3, 5)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        assert [(r.offset, r.value) for r in consume(c, 2)] == [(3, b"3"), (4, b"4")]
    finally:
        c.close()
    (beyond,) = a.delete_records([TopicPartition(topic, 0, 99)]).values()
    with pytest.raises(KafkaException) as info:
        beyond.result(TIMEOUT)
    assert info.value.args[0].name() == "OFFSET_OUT_OF_RANGE"


def test_describe_and_alter_topic_configs(broker: Target, topic: str) -> None:
    a = admin(broker.bootstrap)
    a.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "3600000"})])[topic].result(TIMEOUT)
    resource = ConfigResource(ResourceType.TOPIC, topic)

    def describe() -> dict[str, str | None]:
        entries = a.describe_configs([resource])[resource].result(TIMEOUT)
        return {name: entry.value for name, entry in entries.items()}

    configs = describe()
    # Kafka's documented topic defaults, which the store shares (README: the store's flags).
    assert configs["retention.ms"] == "3600000"
    assert configs["max.message.bytes"] == "1048588"
    assert configs["segment.bytes"] == "1073741824"
    assert configs["retention.bytes"] == "-1"
    assert configs["cleanup.policy"] == "delete"
    assert configs["message.timestamp.type"] == "CreateTime"
    change = ConfigResource(
        ResourceType.TOPIC, topic,
        incremental_configs=[ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)],
    )
    assert a.incremental_alter_configs([change])[change].result(TIMEOUT) is None
    assert describe()["retention.ms"] == "7200000"
    bad = ConfigResource(
        ResourceType.TOPIC, topic,
        incremental_configs=[ConfigEntry("max.message.bytes", "abc", incremental_operation=AlterConfigOpType.SET)],
    )
    with pytest.raises(KafkaException) as info:
        a.incremental_alter_configs([bad])[bad].result(TIMEOUT)
    assert info.value.args[0].name() == "INVALID_CONFIG"
