"""G4 under kill -9: acknowledged records survive a crash of the store, exactly where they were acked.

Several real producers write concurrently with acks=all — two confluent-kafka (librdkafka)
idempotent producers with a small linger and two kafka-python producers (one idempotent, one
not) — with keys spread over every partition, while a real consumer tails the log. In every
round the store is SIGKILLed mid-traffic, restarted on the same data dir and port, and the whole
log is read back with an assign()-style consumer (no consumer groups, nothing committed).

Checked after every restart (Jepsen-style history checks, see research/reliability.md):

* every acknowledged record is at its acknowledged (partition, offset) with identical
  key/value/headers (no lost write);
* every record a consumer saw before the crash is still there, identical (visibility implies
  durability: the store never lets a consumer read past what is fsynced);
* no offset ever maps to two different records, over all rounds (no inconsistent offset);
* offsets are contiguous from 0, and the segment files hold only whole, CRC-valid batches;
* a record that is present but was not acknowledged is one a producer really sent, whole;
* records of idempotent producers are never duplicated;
* after a restart, the next produce to a partition gets exactly the next offset.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaProducer

from tests.e2e._support import Rec, read_all_kafka_python, validate_log_files, wait_until
from tests.e2e._wire import NONE, WireClient, build_batch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOPIC = "crash"
PARTITIONS = 4
ROUNDS = 6
ACKS_PER_ROUND = 400
MIN_ACKS_EACH = 30
KEYS = 23


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


def _record(producer: str, rnd: int, seq: int, rng: random.Random) -> Rec:
    key = f"key-{rng.randrange(KEYS)}".encode()
    value = f"{producer}|r{rnd}|{seq}|".encode() + rng.randbytes(rng.randrange(0, 300))
    headers: tuple[tuple[str, bytes], ...] = ()
    if seq % 3:
        headers = (("producer", producer.encode()), ("seq", str(seq).encode()))
    return Rec(key, value, headers)


def _confluent_producer(
    name: str, bootstrap: str, rnd: int, stop: threading.Event, history: History, compression: str
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
            rec = _record(name, rnd, seq, rng)
            history.attempt(name, rec)
            seq += 1
            try:
                producer.produce(
                    TOPIC,
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
        # Called only after the store was killed: in-flight and queued messages are given up,
        # so no acknowledgement can arrive from a later incarnation of the store.
        producer.purge(in_queue=True, in_flight=True)
        producer.poll(0)
        producer.flush(5)


def _kafka_python_producer(
    name: str, bootstrap: str, rnd: int, stop: threading.Event, history: History, idempotent: bool, compression
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
            rec = _record(name, rnd, seq, rng)
            history.attempt(name, rec)
            seq += 1
            try:
                future = producer.send(TOPIC, key=rec.key, value=rec.value, headers=list(rec.headers))
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
        # The store is dead: abandon what is in flight, so nothing from this round reaches the next
        # incarnation. kafka-python 3.0.12's close(timeout=0) raises in flush() before it gets to
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


def _tail(bootstrap: str, starts: dict[int, int], stop: threading.Event, history: History) -> None:
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
        consumer.assign([CTopicPartition(TOPIC, p, off) for p, off in starts.items()])
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


def _next_offset_probe(bootstrap: str, rnd: int, ends: dict[int, int], history: History) -> None:
    """After a restart, one produce per partition must land exactly at the log end."""
    with WireClient(bootstrap) as client:
        for p, end in sorted(ends.items()):
            rec = Rec(b"probe", f"probe|r{rnd}|p{p}".encode(), (("probe", b"1"),))
            history.attempt("probe", rec)
            error, base = client.produce(
                TOPIC, p, build_batch([(rec.key, rec.value, rec.headers)], timestamp=int(time.time() * 1000))
            )
            assert error == NONE, f"round {rnd}: produce to partition {p} after restart failed with error {error}"
            assert base == end, (
                f"round {rnd}: after restart partition {p} ends at offset {end}, but the next produce got "
                f"offset {base} ({'a gap' if base > end else 'a reused offset'})"
            )
            history.ack(p, base, rec, "probe")


def _check(rnd: int, bootstrap: str, data_dir, history: History, ever: dict[tuple[int, int], Rec]) -> dict[int, int]:
    """Read the whole log back and check the history; returns each partition's end offset."""
    log = read_all_kafka_python(bootstrap, TOPIC, range(PARTITIONS))
    present: dict[tuple[int, int], Rec] = {}
    idempotent_values: Counter[bytes] = Counter()
    for p, records in log.items():
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records))), (
            f"round {rnd}: partition {p} offsets are not contiguous from 0: "
            f"{[o for i, o in enumerate(offsets) if o != i][:10]} out of place"
        )
        on_disk = validate_log_files(data_dir, TOPIC, p)  # whole, CRC-valid, contiguous batches
        disk_end = on_disk[-1].last_offset + 1 if on_disk else 0
        assert disk_end == len(records), (
            f"round {rnd}: partition {p} has {disk_end} offsets on disk, {len(records)} readable"
        )
        for r in records:
            rec = Rec(r.key, r.value, r.headers)
            present[(p, r.offset)] = rec
            earlier = ever.setdefault((p, r.offset), rec)
            assert earlier == rec, (
                f"round {rnd}: offset {p}/{r.offset} now holds {rec}, but held {earlier} in an earlier round"
            )
            sent = history.attempted.get(r.value or b"")
            assert sent is not None, f"round {rnd}: {p}/{r.offset} holds a record no producer sent: {rec}"
            assert sent[1] == rec, f"round {rnd}: {p}/{r.offset} holds {rec}, but the producer sent {sent[1]}"
            if sent[0] != "kp-plain":  # the one non-idempotent producer may legitimately duplicate
                idempotent_values[r.value or b""] += 1
    duplicates = [v for v, n in idempotent_values.items() if n > 1]
    assert not duplicates, f"round {rnd}: idempotent producers' records duplicated: {duplicates[:5]}"
    lost = [(p, o, rec, who) for p, o, rec, who in history.acked if present.get((p, o)) != rec]
    assert not lost, (
        f"round {rnd}: {len(lost)} of {len(history.acked)} acknowledged records are missing or changed, e.g. "
        + "; ".join(f"{who} acked {p}/{o} {rec} -> now {present.get((p, o))}" for p, o, rec, who in lost[:5])
    )
    unseen = [(p, o, rec) for p, o, rec in history.seen if present.get((p, o)) != rec]
    assert not unseen, (
        f"round {rnd}: {len(unseen)} records a consumer read before the crash are gone or changed, e.g. {unseen[:3]}"
    )
    return {p: len(records) for p, records in log.items()}


def _round_done(history: History, before: int) -> bool:
    by = history.acked_by(before)
    return bool(history.errors) or (
        sum(by.values()) >= ACKS_PER_ROUND and len(by) >= 4 and min(by.values()) >= MIN_ACKS_EACH
    )


def _round_status(history: History, before: int, rnd: int, store) -> str:
    return (
        f"round {rnd}: {ACKS_PER_ROUND} acknowledgements, at least {MIN_ACKS_EACH} for each of the 4 producers "
        f"(so far {dict(history.acked_by(before))}; store log: {store.log_path})"
    )


def test_acknowledged_records_survive_kill_9_under_concurrent_acks_all_traffic(store_factory, rng) -> None:
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic(TOPIC, PARTITIONS) == NONE
    history = History()
    ever: dict[tuple[int, int], Rec] = {}
    ends = dict.fromkeys(range(PARTITIONS), 0)
    for rnd in range(ROUNDS):
        if rnd:
            _next_offset_probe(store.bootstrap, rnd, ends, history)
            ends = {p: end + 1 for p, end in ends.items()}
        stop = threading.Event()
        stop_tail = threading.Event()
        compressions = ["none", "zstd", "lz4", "gzip"]
        rng.shuffle(compressions)
        threads = [
            threading.Thread(target=_tail, args=(store.bootstrap, ends, stop_tail, history)),
            threading.Thread(
                target=_confluent_producer, args=("rk-1", store.bootstrap, rnd, stop, history, compressions[0])
            ),
            threading.Thread(
                target=_confluent_producer, args=("rk-2", store.bootstrap, rnd, stop, history, compressions[1])
            ),
            threading.Thread(
                target=_kafka_python_producer,
                args=("kp-idem", store.bootstrap, rnd, stop, history, True, compressions[2]),
            ),
            threading.Thread(
                target=_kafka_python_producer,
                args=("kp-plain", store.bootstrap, rnd, stop, history, False, None),
            ),
        ]
        before = history.acked_count()
        for t in threads:
            t.start()
        try:
            wait_until(
                functools.partial(_round_done, history, before),
                60,
                functools.partial(_round_status, history, before, rnd, store),
            )
            assert not history.errors, history.errors
            time.sleep(rng.uniform(0, 0.2))  # kill at a random moment of the traffic
            assert store.is_running(), f"the store died on its own in round {rnd}: {store.returncode}"
            store.kill()
        finally:
            stop_tail.set()
            stop.set()
            store.kill()
            for t in threads:
                t.join(30)
        assert not any(t.is_alive() for t in threads), "a client thread hung after the store was killed"
        assert not history.errors, history.errors
        store.start()
        ends = _check(rnd, store.bootstrap, store.data_dir, history, ever)
    assert len(history.acked) >= ROUNDS * ACKS_PER_ROUND
    assert {who for _, _, _, who in history.acked} >= {"rk-1", "rk-2", "kp-idem", "kp-plain", "probe"}
    assert history.seen, "the tailing consumer never saw a record: the visibility check checked nothing"
