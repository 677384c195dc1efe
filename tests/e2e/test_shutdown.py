"""Clean shutdown under load, and the ``--fsync interval:MS`` mode.

SIGTERM/SIGINT while producers are in flight: the store answers what it owes, syncs, writes its
recovery checkpoint and exits 0; every acknowledged record is there after a restart, and that
restart has nothing to repair (no torn tail, nothing offline). ``--fsync interval:MS`` trades
durability on power loss for latency (README); here it only has to work end to end.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.e2e._support import (
    DROPPED_RE,
    Rec,
    checkpoint,
    read_all_kafka_python,
    store_log_since,
    validate_log_files,
    wait_until,
)
from tests.e2e._traffic import PRODUCERS, History, Traffic
from tests.e2e._wire import NONE, WireClient, build_batch
from tests.support.store import StoreError

pytestmark = pytest.mark.timeout(180)

PARTITIONS = 3


def _signal_under_load(store, topic: str, rnd: int, history: History, rng, sig: signal.Signals) -> int:
    """Run the traffic, send ``sig`` mid-flight, wait for the exit; returns the exit code."""
    traffic = Traffic(store.bootstrap, topic, rnd, history, {p: OFFSET_BEGINNING for p in range(PARTITIONS)}, rng)
    traffic.start()
    try:
        wait_until(functools.partial(traffic.enough, 300, 20), 60, traffic.status)
        assert store.pid is not None
        os.kill(store.pid, sig)
        wait_until(lambda: not store.is_running(), 20, f"the store to exit after {sig.name}")
    finally:
        if store.is_running():
            store.kill()
        traffic.stop()
    code = store.returncode
    assert code is not None
    return code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_producers_in_flight_keeps_acked_records_and_leaves_nothing_to_repair(
    store_factory, rng, sig
) -> None:
    topic = "graceful"
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic(topic, PARTITIONS) == NONE
    history = History()
    for rnd in range(2):
        _signal_under_load(store, topic, rnd, history, rng, sig)
        store.start()
        restart_log = store_log_since(store, store.starts)
        assert not DROPPED_RE.search(restart_log), f"the start after a {sig.name} truncated data:\n{restart_log}"
        assert "offline" not in restart_log, restart_log
        log = read_all_kafka_python(store.bootstrap, topic, range(PARTITIONS))
        present = {(p, r.offset): Rec(r.key, r.value, r.headers) for p, recs in log.items() for r in recs}
        lost = [(p, o, who) for p, o, rec, who in history.acked if present.get((p, o)) != rec]
        assert not lost, f"{len(lost)} acknowledged records missing or changed after {sig.name}: {lost[:5]}"
        for p, recs in log.items():
            assert [r.offset for r in recs] == list(range(len(recs))), f"partition {p}: offsets not contiguous"
        by = {who for _, _, _, who in history.acked}
        assert by >= set(PRODUCERS), by
    assert history.seen, "the tailing consumer saw nothing"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_producers_in_flight_exits_0_after_syncing_and_checkpointing(store_factory, rng, sig) -> None:
    topic = "graceful"
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic(topic, PARTITIONS) == NONE
    # The signal can land while a group-commit fsync runs or between two: try several times.
    for attempt in range(4):
        if attempt:
            store.start()
        code = _signal_under_load(store, topic, attempt, History(), rng, sig)
        shutdown_log = store_log_since(store, store.starts)
        assert code == 0, f"attempt {attempt}: exit code {code} after {sig.name}:\n{shutdown_log[-3000:]}"
        assert "stopped cleanly" in shutdown_log
        assert "CRITICAL" not in shutdown_log
        # Everything appended was synced and checkpointed: the recovery point is the log end.
        points = checkpoint(store.data_dir)
        for p in range(PARTITIONS):
            on_disk = validate_log_files(store.data_dir, topic, p)
            end = on_disk[-1].last_offset + 1 if on_disk else 0
            assert points[(topic, p)] == end, f"partition {p}: checkpoint {points[(topic, p)]}, log end {end}"


def test_sigterm_when_idle_exits_0_and_checkpoints_everything(store_factory, rng) -> None:
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("idle", 2) == NONE
        for p in range(2):
            for i in range(5):
                batch = build_batch([(b"k", b"v%d" % i, [])], timestamp=1_700_000_000_000 + i)
                assert client.produce("idle", p, batch) == (NONE, i)
    assert store.stop() == 0
    assert "stopped cleanly" in store.log_text()
    points = checkpoint(store.data_dir)
    assert (points[("idle", 0)], points[("idle", 1)]) == (5, 5), points
    store.start()
    assert not DROPPED_RE.search(store_log_since(store, store.starts))


def test_fsync_interval_mode_round_trip_with_real_clients(store_factory) -> None:
    topic = "relaxed"
    store = store_factory(["--fsync", "interval:50"])
    assert "fsync interval:50" in store.log_text()
    values = [b"interval-%d" % i for i in range(200)]
    producer = KafkaProducer(bootstrap_servers=store.bootstrap, acks="all", linger_ms=2)
    try:
        metas = [
            producer.send(topic, key=b"k%d" % (i % 7), value=v, headers=[("i", b"%d" % i)]).get(timeout=30)
            for i, v in enumerate(values)
        ]
    finally:
        producer.close(timeout=10)
    delivered: list = []
    rk = Producer({"bootstrap.servers": store.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(100):
        rk.produce(topic, key=b"rk", value=b"rk-%d" % i, on_delivery=lambda err, msg: delivered.append((err, msg)))
    assert rk.flush(30) == 0
    assert all(err is None for err, _ in delivered) and len(delivered) == 100
    expected = {(m.partition, m.offset): v for m, v in zip(metas, values, strict=True)}
    expected |= {(msg.partition(), msg.offset()): msg.value() for _, msg in delivered}

    # A consumer sees everything once the interval flusher made it durable (it never sees more).
    consumer = KafkaConsumer(
        bootstrap_servers=store.bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=10_000
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        got = {}
        for m in consumer:
            got[(m.partition, m.offset)] = m.value
            if len(got) == len(expected):
                break
    finally:
        consumer.close()
    assert got == expected

    # A clean stop syncs and checkpoints in this mode too; a restart repairs nothing and loses nothing.
    assert store.stop() == 0
    store.start()
    assert not DROPPED_RE.search(store_log_since(store, store.starts))
    reader = Consumer({"bootstrap.servers": store.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        reader.assign([CTopicPartition(topic, 0, OFFSET_BEGINNING)])
        again = {}
        deadline = time.monotonic() + 30
        while len(again) < len(expected) and time.monotonic() < deadline:
            msg = reader.poll(0.1)
            if msg is not None and msg.error() is None:
                again[(msg.partition(), msg.offset())] = msg.value()
    finally:
        reader.close()
    assert again == expected


@pytest.mark.parametrize("policy", ["interval:0", "interval:-5", "interval:", "sometimes", "interval:1.5"])
def test_bad_fsync_policy_is_refused_at_start(store_factory, policy) -> None:
    store = store_factory(["--fsync", policy], start=False)
    store.start_timeout = 10
    with pytest.raises(StoreError) as failure:
        store.start()
    assert store.returncode == 2, store.log_text()
    assert "fsync" in str(failure.value)


def test_kill_9_in_interval_mode_loses_nothing_a_consumer_saw(store_factory) -> None:
    """Even when acks run ahead of fsync, consumers only see synced data (README), and a process
    crash loses no acknowledged write (the kernel still has it; only power loss could)."""
    topic = "relaxed-crash"
    store = store_factory(["--fsync", "interval:200"])
    rng = random.Random(7)
    history = History()
    traffic = Traffic(store.bootstrap, topic, 0, history, {0: OFFSET_BEGINNING}, rng)
    with WireClient(store.bootstrap) as client:
        assert client.create_topic(topic, 1) == NONE
    traffic.start()
    try:
        wait_until(functools.partial(traffic.enough, 300, 20), 60, traffic.status)
    finally:
        store.kill()
        traffic.stop()
    store.start()
    log = read_all_kafka_python(store.bootstrap, topic, [0])[0]
    present = {r.offset: Rec(r.key, r.value, r.headers) for r in log}
    unseen = [(o, rec) for _, o, rec in history.seen if present.get(o) != rec]
    assert not unseen, f"{len(unseen)} records a consumer read are gone after kill -9: {unseen[:3]}"
    lost = [(o, who) for _, o, rec, who in history.acked if present.get(o) != rec]
    assert not lost, f"a process crash lost {len(lost)} acknowledged records in interval mode: {lost[:5]}"


def test_interval_mode_never_shows_consumers_unsynced_records(store_factory) -> None:
    """G4's second half, observable without a power cut: with a long fsync interval, produce is
    acknowledged after the write to the OS, but no fetch or ListOffsets reveals those records until
    they are synced (here: by the clean shutdown, long before the first interval tick)."""
    store = store_factory(["--fsync", "interval:600000"])
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("unsynced", 1) == NONE
        for i in range(5):
            batch = build_batch([(b"k", b"unsynced-%d" % i, [])], timestamp=1_700_000_000_000 + i)
            assert client.produce("unsynced", 0, batch, acks=-1) == (NONE, i), "acks must not wait in interval mode"
        assert client.fetch("unsynced", 0, 0) == (NONE, 0, b""), "a consumer saw records that are not fsynced"
        assert client.list_offset("unsynced", 0, -1)[:2] == (NONE, 0), "the high watermark ran ahead of fsync"
    consumer = KafkaConsumer(
        bootstrap_servers=store.bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=1500
    )
    try:
        consumer.assign([TopicPartition("unsynced", 0)])
        assert [m.value for m in consumer] == [], "a real consumer saw records that are not fsynced"
    finally:
        consumer.close()
    assert store.stop() == 0  # a clean stop syncs everything
    store.start()
    with WireClient(store.bootstrap) as client:
        hw, batches = client.fetch_all("unsynced", 0)
    assert hw == 5 and len(batches) == 5
