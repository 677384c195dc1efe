"""Consumer SDK throughput and latency: exactly-once bookkeeping against the same handler without it.

One consumer process (this one), a handler that inserts one row, 1 KiB events in the relay's record
format on the built-in store (``--fsync always``), PostgreSQL with ``synchronous_commit=on``:

* ``exactly-once``   ``consumers.Consumer``: per batch of a partition one transaction with the dedupe
                     lookup, the handlers (pipelined), the processed ids and the offset compare-and-set;
* ``at-least-once``  a plain ``KafkaConsumer`` loop running the same handler per record, one
                     transaction per polled batch (same pipelining), broker offsets committed after it;
* ``latency``        events produced at a paced ``--rate`` per second while the exactly-once consumer
                     runs: time from the record's creation (its timestamp) to the commit of the
                     transaction that applied it (p50/p99); the producer runs in its own
                     process, as the relay would. The relay is not in this path (it is
                     measured by the relay's own bench); add its commit-to-publish lag for end to end.

Prints figures; asserts nothing about time. A throw-away PostgreSQL cluster and store are started.

    python bench/consumer.py [--events 20000] [--partitions 4] [--rate 500] [--seconds 10]
                             [--clients kafka-python,confluent]

Each figure is measured for each Kafka client of the SDK (``client=``), back to back.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from kafka import KafkaConsumer, KafkaProducer

from consumers import ConsumedEvent, Consumer
from consumers._core import PartitionState
from outbox import Event
from tests.integration.consumers._support import create_topic, relay_record

TABLE = "CREATE TABLE IF NOT EXISTS sink (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id uuid, k text, n int)"
INSERT = "INSERT INTO sink (event_id, k, n) VALUES (%s, %s, %s)"


def events(topic: str, count: int, pad: int) -> list[Event]:
    filler = "x" * pad
    return [
        Event(topic=topic, key=f"key-{i % 1000}", type="bench.event", payload={"n": i, "pad": filler})
        for i in range(count)
    ]


def produce(bootstrap: str, topic: str, evs: list[Event]) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=256 * 1024)
    for e in evs:
        p.send(topic, **relay_record(e))
    p.flush()
    p.close()


def run_exactly_once(bootstrap: str, dsn: str, topic: str, count: int, client: str) -> tuple[float, float]:
    """Events/s and this process's CPU microseconds per event (all its threads: robust to a busy machine)."""
    c = Consumer(group=f"eo-{client}-{topic}", topics=[topic], bootstrap_servers=bootstrap, database_url=dsn,
                 heartbeat_interval_ms=1000, client=client)  # fmt: skip

    @c.handler("bench.event")
    def handle(event: ConsumedEvent, conn: psycopg.Connection[Any]) -> None:
        conn.execute(INSERT, (event.id, event.key, event.payload["n"]))

    thread = threading.Thread(target=c.run)
    thread.start()
    while c.metrics().processed == 0:
        time.sleep(0.005)
    started, cpu = time.perf_counter(), time.process_time()
    first = c.metrics().processed
    while c.metrics().processed < count:
        time.sleep(0.005)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    c.stop()
    thread.join()
    return (count - first) / elapsed, cpu / (count - first) * 1e6


def run_at_least_once(bootstrap: str, dsn: str, topic: str, count: int, client: str) -> tuple[float, float]:
    """The same handler per record, one transaction per polled partition batch, no bookkeeping."""
    from consumers._records import decode_record

    group = f"alo-{client}-{topic}"
    if client == "confluent":
        from confluent_kafka import Consumer as CKConsumer

        ck = CKConsumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})  # fmt: skip
        ck.subscribe([topic])

        def poll() -> dict[Any, list[tuple[Any, ...]]]:
            first = ck.poll(0.5)
            if first is None:
                return {}
            out: dict[Any, list[tuple[Any, ...]]] = {}
            for m in [first, *ck.consume(499, 0)]:
                if m.error() is None:
                    out.setdefault(m.partition(), []).append(
                        (m.topic(), m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers())
                    )
            return out

        def commit() -> None:
            ck.commit(asynchronous=False)

        close = ck.close
    else:
        kc = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                           auto_offset_reset="earliest", max_poll_records=500)  # fmt: skip

        def poll() -> dict[Any, list[tuple[Any, ...]]]:
            return {
                tp: [(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers) for r in records]
                for tp, records in kc.poll(timeout_ms=500).items()
            }

        commit = kc.commit
        close = kc.close
    done = 0
    started = cpu = 0.0
    first = 0
    with psycopg.connect(dsn) as conn:
        while done < count:
            batches = poll()
            for records in batches.values():
                with conn.pipeline(), conn.transaction():
                    for r in records:
                        e = decode_record(*r)
                        conn.execute(INSERT, (e.id, e.key, e.payload["n"]))
                done += len(records)
                if not started:
                    started, cpu, first = time.perf_counter(), time.process_time(), done
            if batches:
                commit()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    close()
    return (count - first) / elapsed, cpu / (count - first) * 1e6


def run_latency(bootstrap: str, dsn: str, topic: str, rate: int, seconds: float, pad: int, client: str) -> list[float]:
    latencies: list[float] = []
    pending: list[float] = []

    class Timed(Consumer):
        def _after_commit(self, state: PartitionState, next_offset: int) -> None:
            super()._after_commit(state, next_offset)
            now = time.time()
            latencies.extend(now - created for created in pending)
            pending.clear()

    c = Timed(group=f"lat-{client}-{topic}", topics=[topic], bootstrap_servers=bootstrap, database_url=dsn,
              start_from="latest", heartbeat_interval_ms=1000, client=client)  # fmt: skip

    @c.handler("bench.event")
    def handle(event: ConsumedEvent, conn: psycopg.Connection[Any]) -> None:
        conn.execute(INSERT, (event.id, event.key, event.payload["n"]))
        pending.append(event.payload["t"])

    thread = threading.Thread(target=c.run)
    thread.start()
    while not c.metrics().lag:
        time.sleep(0.05)
    time.sleep(0.5)
    total = int(rate * seconds)
    # The paced producer runs in its own process (like the relay would): in this one it would share
    # the GIL with the consumer under test and its waits would be counted as the consumer's latency.
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=produce_paced, args=(bootstrap, topic, rate, total, pad), daemon=True)
    proc.start()
    proc.join(seconds + 60)
    deadline = time.monotonic() + 30
    while c.metrics().processed < total and time.monotonic() < deadline:
        time.sleep(0.05)
    c.stop()
    thread.join()
    return latencies


def produce_paced(bootstrap: str, topic: str, rate: int, total: int, pad: int) -> None:
    """``total`` events at ``rate`` per second, each carrying its creation time (``payload.t``)."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    p.partitions_for(topic)  # metadata and connections before the clock starts
    filler = "x" * pad
    t0 = time.perf_counter()
    for i in range(total):
        target = t0 + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        e = Event(topic=topic, key=f"key-{i % 100}", type="bench.event", payload={"n": i, "t": time.time(), "pad": filler})
        p.send(topic, **relay_record(e))
    p.flush()
    p.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default="kafka-python,confluent", help="comma-separated: kafka-python, confluent")
    args = parser.parse_args()
    clients = [c for c in args.clients.split(",") if c]

    from tests.support.postgres import PostgresServer
    from tests.support.store import StoreProcess

    pg = PostgresServer(use_env=False)
    store = StoreProcess(None)
    try:
        pg.start()
        store.start()
        dsn = pg.create_database("bench_consumer")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE)
        sample = events("t", 1, 0)[0]
        pad = max(1024 - len(sample.payload_json()) - 14, 0)
        print(f"1 KiB events: value {len(events('t', 1, pad)[0].payload_json())} bytes, {args.partitions} partitions")
        eo: dict[str, list[tuple[float, float]]] = {c: [] for c in clients}
        alo: dict[str, list[tuple[float, float]]] = {c: [] for c in clients}
        for r in range(args.rounds):
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            create_topic(store.bootstrap, topic, args.partitions)
            produce(store.bootstrap, topic, events(topic, args.events, pad))
            for client in clients:  # back to back on the same records, each in its own groups
                eo[client].append(run_exactly_once(store.bootstrap, dsn, topic, args.events, client))
                alo[client].append(run_at_least_once(store.bootstrap, dsn, topic, args.events, client))
                (e_rate, e_cpu), (a_rate, a_cpu) = eo[client][-1], alo[client][-1]
                print(f"round {r + 1} {client:>12}: exactly-once {e_rate:,.0f} events/s ({e_cpu:.0f} us CPU/event), "
                      f"at-least-once {a_rate:,.0f} events/s ({a_cpu:.0f} us CPU/event)", flush=True)  # fmt: skip
        for client in clients:
            m_eo, m_alo = (statistics.median(r for r, _ in eo[client]), statistics.median(r for r, _ in alo[client]))
            c_eo, c_alo = (statistics.median(c for _, c in eo[client]), statistics.median(c for _, c in alo[client]))
            print(f"{client:>12}: exactly-once {m_eo:>8,.0f} events/s, at-least-once {m_alo:>8,.0f} events/s "
                  f"(median of {args.rounds}); bookkeeping costs {100 * (1 - m_eo / m_alo):.1f}%; consumer CPU "
                  f"{c_eo:.0f} vs {c_alo:.0f} us/event (1e6 / that = one core's ceiling)")  # fmt: skip
        for client in clients:
            topic = f"lat-{uuid.uuid4().hex[:8]}"
            create_topic(store.bootstrap, topic, args.partitions)
            lat = run_latency(store.bootstrap, dsn, topic, args.rate, args.seconds, pad, client)
            if lat:
                print(
                    f"{client:>12}: latency at {args.rate}/s, record created -> handler's transaction committed: "
                    f"p50 {pct(lat, 0.5) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms, "
                    f"max {max(lat) * 1000:.1f} ms ({len(lat)} events)",
                    flush=True,
                )
    finally:
        store.cleanup()
        pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
