"""confluent-kafka load generators (each runs in its own process, see ``_util.run_workers``).

Same client settings for the store and for Apache Kafka, so the figures compare brokers, not
clients: 1 KiB incompressible values, acks=all, idempotent producers, compression none.
"""

from __future__ import annotations

import os
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench._util import MSG_SIZE, ReadyFn

__all__ = [
    "BATCHED",
    "BATCHED_IDEMPOTENT",
    "LATENCY",
    "SINGLE",
    "create_topics",
    "fetch",
    "produce",
    "produce_latency",
]

_COMMON: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "none",
    "max.in.flight.requests.per.connection": 5,
    "message.timeout.ms": 120_000,
    "socket.nagle.disable": True,
}

# A producer configured for throughput: wait up to 5 ms to fill batches of up to ~1 MB. Not
# idempotent by default: librdkafka 2.16's idempotent producer costs the client about 3x the CPU
# (measured: 131k msg/s at 145% client CPU idempotent, 428k msg/s at 96% without, against the same
# store), and on this 2-core box the client then starves the broker under test. `--idempotent`
# (bench/streams.py) measures with it on.
BATCHED: dict[str, Any] = {
    **_COMMON,
    "enable.idempotence": False,
    "linger.ms": 5,
    "batch.size": 1_000_000,
    "batch.num.messages": 100_000,
    # ~50 MB of local queue: plenty of full batches in flight, and a short drain after a time cap
    "queue.buffering.max.messages": 50_000,
    "queue.buffering.max.kbytes": 64 * 1024,
}
BATCHED_IDEMPOTENT: dict[str, Any] = {**BATCHED, "enable.idempotence": True}

# One record per Produce request (a client that does not batch); up to 5 requests in flight.
# Not idempotent: librdkafka 2.16's idempotent producer busy-waits while one-record requests are
# in flight (measured ~0.5 ms of CPU per record, 75% of a core at ~1.3k msg/s, vs 42 us and 14%
# without idempotence), which on this 2-core box starves the broker under test.
SINGLE: dict[str, Any] = {
    **_COMMON,
    "enable.idempotence": False,
    "linger.ms": 0,
    "batch.num.messages": 1,
    # a short local queue: enough to keep 5 requests in flight, small enough that the drain after
    # the time cap is short even against a broker doing a few hundred fsyncs/s
    "queue.buffering.max.messages": 50,
}

# Latency at a modest fixed rate: no linger (it would add up to linger.ms to every message);
# not idempotent for the same reason as SINGLE.
LATENCY: dict[str, Any] = {**_COMMON, "enable.idempotence": False, "linger.ms": 0}

CONSUMER: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
    "fetch.wait.max.ms": 100,
    "queued.max.messages.kbytes": 256 * 1024,
    "socket.nagle.disable": True,
}


def create_topics(bootstrap: str, topics: list[str]) -> None:
    """Create single-partition topics (already existing ones are fine)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics])
    for topic, fut in futures.items():
        try:
            fut.result(30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise RuntimeError(f"creating topic {topic!r} failed: {exc}") from exc


def _warm_up(producer: Producer, topic: str, value: bytes) -> None:
    """InitProducerId, metadata and one acknowledged record before the clock starts."""
    errors: list[str] = []
    producer.produce(topic, value, on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
    if producer.flush(60) != 0 or errors:
        raise RuntimeError(f"warm-up record was not acknowledged: {errors or 'timeout'}")


def produce(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    """Produce ``messages`` records (or until ``max_seconds``) through ``instances`` producers, round robin.

    Only failed deliveries call back (``delivery.report.only.error``), so the Python side does
    nothing per record but ``produce()``.
    """
    topic: str = args["topic"]
    value = os.urandom(MSG_SIZE)
    errors: list[str] = []

    def on_error(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    conf = {
        **args["conf"],
        "bootstrap.servers": args["bootstrap"],
        "delivery.report.only.error": True,
        "on_delivery": on_error,
    }
    producers = [Producer(conf) for _ in range(args.get("instances", 1))]
    for p in producers:
        _warm_up(p, topic, value)
    n_target: int = args["messages"]
    ready()
    t0 = time.monotonic()
    deadline = t0 + args["max_seconds"]
    sent = 0
    k = len(producers)
    produce_fns = [p.produce for p in producers]
    while sent < n_target:
        try:
            produce_fns[sent % k](topic, value)
        except BufferError:
            producers[sent % k].poll(0.001)
            continue
        sent += 1
        if sent & 63 == 0:
            for p in producers:
                p.poll(0)
            counter.value = sent
            if time.monotonic() > deadline:
                break
    not_delivered = sum(p.flush(args["max_seconds"] + 60) for p in producers)
    t1 = time.monotonic()
    counter.value = sent
    return {
        "count": sent - len(errors) - not_delivered,
        "errors": len(errors) + not_delivered,
        "first_error": errors[0] if errors else ("flush timed out" if not_delivered else ""),
        "t0": t0,
        "t1": t1,
    }


def fetch(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    """Catch-up read of partition 0 from the beginning with assign() (no group APIs used)."""
    conf: dict[str, Any] = {**CONSUMER, "bootstrap.servers": args["bootstrap"]}
    if args.get("group_id"):
        conf["group.id"] = args["group_id"]
    consumer = Consumer(conf)
    tp = TopicPartition(args["topic"], 0)
    low, high = consumer.get_watermark_offsets(tp, timeout=30)
    expected = min(high - low, args["messages"])
    consumer.assign([TopicPartition(args["topic"], 0, OFFSET_BEGINNING)])
    ready()
    go = time.monotonic()
    deadline = go + args["max_seconds"]
    t0 = 0.0
    first_batch = 0
    count = 0
    nbytes = 0
    errors = 0
    first_error = ""
    last_offset = -1
    consume = consumer.consume
    while count < expected and time.monotonic() < deadline:
        # never ask for more than is left: consume() waits its whole timeout for a short batch
        msgs = consume(min(10_000, expected - count), 1.0)
        if not msgs:
            continue
        if not t0:
            # The clock starts when the first batch is in: connecting, metadata and the offset
            # lookup (~0.5 s with librdkafka) are start-up, reported apart, not catch-up speed.
            t0 = time.monotonic()
            first_batch = len(msgs)
        bad = 0
        for m in msgs:
            if m.error() is not None:
                bad += 1
                first_error = first_error or str(m.error())
        errors += bad
        good = len(msgs) - bad
        count += good
        nbytes += good * MSG_SIZE
        last_offset = msgs[-1].offset() or 0
        counter.value = count
    t1 = time.monotonic()
    consumer.close()
    if count >= expected and last_offset != low + expected - 1:
        first_error = first_error or f"read {count} records but the last offset is {last_offset}, expected {low + expected - 1}"
    return {
        "count": count - first_batch,
        "nbytes": nbytes - first_batch * MSG_SIZE,
        "errors": errors,
        "first_error": first_error,
        "t0": t0 or t1,
        "t1": t1,
        "expected": expected,
        "read": count,
        "startup": (t0 or t1) - go,
    }


def produce_latency(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    """Open-loop produce at ``rate`` msg/s for ``seconds``; latency = produce() call to its delivery report."""
    topic: str = args["topic"]
    value = os.urandom(MSG_SIZE)
    producer = Producer({**args["conf"], "bootstrap.servers": args["bootstrap"]})
    _warm_up(producer, topic, value)
    rate: float = args["rate"]
    total = int(rate * args["seconds"])
    lat: list[float] = []
    errors: list[str] = []
    perf = time.perf_counter

    def make_cb(start: float) -> Any:
        def cb(err: Any, _msg: Any) -> None:
            if err is None:
                lat.append(perf() - start)
            else:
                errors.append(str(err))

        return cb

    ready()
    t0 = time.monotonic()
    start = perf()
    sent = 0
    while sent < total:
        due = min(total, int((perf() - start) * rate) + 1)
        while sent < due:
            producer.produce(topic, value, on_delivery=make_cb(perf()))
            sent += 1
        producer.poll(0.001)  # librdkafka polls in whole ms
        if sent % 256 == 0:
            counter.value = sent
    not_delivered = producer.flush(60)
    t1 = time.monotonic()
    counter.value = sent
    return {
        "count": len(lat),
        "errors": len(errors) + not_delivered,
        "first_error": errors[0] if errors else ("flush timed out" if not_delivered else ""),
        "lat": lat,
        "t0": t0,
        "t1": t1,
    }
