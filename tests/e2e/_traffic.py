"""Concurrent real-client traffic with a history of what was attempted, acknowledged and read.

``Traffic`` runs, in threads, two confluent-kafka (librdkafka) idempotent producers with a small
linger, two kafka-python producers (one idempotent, one not; all acks=all, various compression
codecs) with keys spread over the partitions, and a librdkafka consumer tailing the log. The
``History`` they fill is what the durability checks compare the log against.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaProducer

from tests.e2e._support import Rec

__all__ = ["NON_IDEMPOTENT", "PRODUCERS", "History", "Traffic", "make_record"]

KEYS = 23
PRODUCERS = ("rk-1", "rk-2", "kp-idem", "kp-plain")
NON_IDEMPOTENT = "kp-plain"
"""The one producer that may legitimately write a record twice (retries without idempotence)."""


@dataclass
class History:
    """What producers attempted and what the store acknowledged, over every round."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempted: dict[bytes, tuple[str, Rec]] = field(default_factory=dict)  # value -> (producer, record)
    acked: list[tuple[int, int, Rec, str]] = field(default_factory=list)  # (partition, offset, record, producer)
    seen: list[tuple[int, int, Rec]] = field(default_factory=list)  # what the tailing consumer read
    errors: list[str] = field(default_factory=list)

    def attempt(self, producer: str, rec: Rec) -> None:
        assert rec.value is not None
        with self.lock:
            assert rec.value not in self.attempted
            self.attempted[rec.value] = (producer, rec)

    def ack(self, partition: int, offset: int, rec: Rec, producer: str) -> None:
        with self.lock:
            self.acked.append((partition, offset, rec, producer))

    def acked_by(self, since: int) -> Counter[str]:
        """Acknowledgements per producer from index ``since`` of ``acked`` on."""
        with self.lock:
            return Counter(who for _, _, _, who in self.acked[since:])

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)


def make_record(producer: str, rnd: int, seq: int, rng: random.Random) -> Rec:
    key = f"key-{rng.randrange(KEYS)}".encode()
    value = f"{producer}|r{rnd}|{seq}|".encode() + rng.randbytes(rng.randrange(0, 300))
    headers: tuple[tuple[str, bytes], ...] = ()
    if seq % 3:
        headers = (("producer", producer.encode()), ("seq", str(seq).encode()))
    return Rec(key, value, headers)


def confluent_producer(
    topic: str, name: str, bootstrap: str, rnd: int, stop: threading.Event, history: History, compression: str
) -> None:
    rng = random.Random(f"{name}-{rnd}")
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": name,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": compression,
            "partitioner": "murmur2_random",
            "message.timeout.ms": 60_000,
            "reconnect.backoff.max.ms": 200,
            "log_level": 2,
        }
    )

    def on_delivery(rec: Rec, err, msg) -> None:
        if err is None:
            # librdkafka's delivery report carries key and value but not reliably the headers
            if (msg.key(), msg.value()) != (rec.key, rec.value):
                history.errors.append(f"{name}: delivery report for another message: {msg.value()!r}")
            history.ack(msg.partition(), msg.offset(), rec, name)

    seq = 0
    try:
        while not stop.is_set():
            if len(producer) > 500:
                producer.poll(0.01)
                continue
            rec = make_record(name, rnd, seq, rng)
            history.attempt(name, rec)
            seq += 1
            try:
                producer.produce(
                    topic,
                    key=rec.key,
                    value=rec.value,
                    headers=list(rec.headers) or None,
                    on_delivery=functools.partial(on_delivery, rec),
                )
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
            if seq % 20 == 0:
                time.sleep(0.002)
    except Exception as exc:  # reported by the test, never swallowed
        history.errors.append(f"{name}: {exc!r}")
    finally:
        # Called only after the store died or stopped: in-flight and queued messages are given
        # up, so no acknowledgement can arrive from a later incarnation of the store.
        producer.purge(in_queue=True, in_flight=True)
        producer.poll(0)
        producer.flush(5)


def kafka_python_producer(
    topic: str,
    name: str,
    bootstrap: str,
    rnd: int,
    stop: threading.Event,
    history: History,
    idempotent: bool,
    compression,
) -> None:
    rng = random.Random(f"{name}-{rnd}")
    outstanding = Counter[str]()
    try:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=name,
            acks="all",
            linger_ms=5,
            enable_idempotence=idempotent,
            compression_type=None if compression == "none" else compression,
            max_block_ms=2000,
            request_timeout_ms=10_000,
            reconnect_backoff_max_ms=200,
        )
    except Exception as exc:
        history.errors.append(f"{name}: {exc!r}")
        return

    seq = 0
    try:
        while not stop.is_set():
            if outstanding["n"] > 500:
                time.sleep(0.005)
                continue
            rec = make_record(name, rnd, seq, rng)
            history.attempt(name, rec)
            seq += 1
            try:
                future = producer.send(topic, key=rec.key, value=rec.value, headers=list(rec.headers))
            except Exception:  # the store is gone (metadata/buffer timeout): keep trying until stopped
                time.sleep(0.05)
                continue
            outstanding["n"] += 1

            def ok(md, rec=rec) -> None:
                outstanding["n"] -= 1
                history.ack(md.partition, md.offset, rec, name)

            def failed(exc) -> None:
                outstanding["n"] -= 1

            future.add_callback(ok)
            future.add_errback(failed)
            if seq % 20 == 0:
                time.sleep(0.002)
    except Exception as exc:
        history.errors.append(f"{name}: {exc!r}")
    finally:
        # The store is gone: abandon what is in flight, so nothing from this round reaches the
        # next incarnation. kafka-python 3.0.12's close(timeout=0) raises in flush() before it gets to
        # force_close(), leaving the sender thread retrying, hence the explicit force close.
        sender = producer._sender
        sender.force_close()
        sender.join(10)
        if sender.is_alive():
            history.errors.append(f"{name}: the producer's sender thread did not stop")
        try:
            producer.close(timeout=0)
        except Exception:
            pass


def tail(topic: str, bootstrap: str, starts: dict[int, int], stop: threading.Event, history: History) -> None:
    """A real consumer reading new records as they become visible, until the store dies."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "e2e-tail-unused",  # required by librdkafka; nothing is ever committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "check.crcs": True,
            "fetch.wait.max.ms": 50,
            "log_level": 2,
        }
    )
    try:
        consumer.assign([CTopicPartition(topic, p, off) for p, off in starts.items()])
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            rec = Rec(msg.key(), msg.value(), tuple((k, bytes(v or b"")) for k, v in (msg.headers() or ())))
            with history.lock:
                history.seen.append((msg.partition(), msg.offset(), rec))
    except Exception as exc:
        history.errors.append(f"tail consumer: {exc!r}")
    finally:
        consumer.close()


class Traffic:
    """The producers and the tailing consumer of one round; ``stop()`` after the store went away."""

    def __init__(
        self, bootstrap: str, topic: str, rnd: int, history: History, starts: dict[int, int], rng: random.Random
    ) -> None:
        compressions = ["none", "zstd", "lz4", "gzip"]
        rng.shuffle(compressions)
        self.history = history
        self._stop = threading.Event()
        self._stop_tail = threading.Event()
        self._threads = [
            threading.Thread(target=tail, args=(topic, bootstrap, starts, self._stop_tail, history)),
            threading.Thread(
                target=confluent_producer, args=(topic, "rk-1", bootstrap, rnd, self._stop, history, compressions[0])
            ),
            threading.Thread(
                target=confluent_producer, args=(topic, "rk-2", bootstrap, rnd, self._stop, history, compressions[1])
            ),
            threading.Thread(
                target=kafka_python_producer,
                args=(topic, "kp-idem", bootstrap, rnd, self._stop, history, True, compressions[2]),
            ),
            threading.Thread(
                target=kafka_python_producer,
                args=(topic, NON_IDEMPOTENT, bootstrap, rnd, self._stop, history, False, None),
            ),
        ]
        self._before = history.acked_count()

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def enough(self, total: int, each: int) -> bool:
        """At least ``total`` acks this round and ``each`` for every producer (or an error)."""
        by = self.history.acked_by(self._before)
        return bool(self.history.errors) or (
            sum(by.values()) >= total and len(by) >= len(PRODUCERS) and min(by.values()) >= each
        )

    def status(self) -> str:
        return f"acknowledgements so far this round: {dict(self.history.acked_by(self._before))}"

    def stop(self) -> None:
        self._stop_tail.set()
        self._stop.set()
        for t in self._threads:
            t.join(30)
        assert not any(t.is_alive() for t in self._threads), "a client thread hung after the store went away"
        assert not self.history.errors, self.history.errors
