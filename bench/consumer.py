"""Consumer SDK throughput and latency: exactly-once bookkeeping against the same handler without it.

One consumer process (this one), a handler that inserts one row per event, 1 KiB events in the
relay's record format on the built-in store (``--fsync always``), PostgreSQL with
``synchronous_commit=on``. Two handlers (``--handler``):

* ``row``    ``@consumer.handler``: ``conn.execute(INSERT ...)`` per event (psycopg, pipelined);
* ``batch``  ``@consumer.batch_handler``: one ``INSERT ... SELECT FROM unnest(...)`` per list of events.

Figures:

* ``exactly-once``   ``consumers.Consumer``: per batch of a partition one transaction with the dedupe
                     lookup, the handlers (pipelined), the processed ids and the offset compare-and-set;
* ``at-least-once``  a plain consumer loop (same client) running the same handler per polled
                     partition batch, one transaction each (same pipelining), broker offsets
                     committed after it;
* ``latency``        events at a paced ``--rate`` per second while the exactly-once consumer (row
                     handler) runs. By default they are written by a writer process into the outbox
                     (``publish()`` + COMMIT) and the relay (its own process, default options)
                     publishes them: time from the writer's COMMIT returning to the commit of the
                     consumer's transaction that applied the event (p50/p99). ``--no-relay``
                     produces records straight to the store instead (time from the record's
                     creation).

Prints figures; asserts nothing about time. A throw-away PostgreSQL cluster and store are started.

    python bench/consumer.py [--events 20000] [--partitions 4] [--rate 500] [--seconds 10]
                             [--clients kafka-python,confluent] [--handler row,batch]
                             [--only throughput,latency] [--no-relay]

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
from collections.abc import Iterator
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
INSERT_MANY = "INSERT INTO sink (event_id, k, n) SELECT * FROM unnest(%b::uuid[], %b::text[], %b::int[])"


def insert_many(conn: Any, evs: list[Any]) -> Any:
    """The batch handler's one statement (returns the cursor, or the coroutine for an AsyncConnection)."""
    return conn.execute(INSERT_MANY, ([e.id for e in evs], [e.key for e in evs], [e.payload["n"] for e in evs]))


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


def run_exactly_once(bootstrap: str, dsn: str, topic: str, count: int, client: str, handler: str) -> tuple[float, float]:
    """Events/s and this process's CPU microseconds per event (all its threads: robust to a busy machine)."""
    c = Consumer(group=f"eo-{client}-{handler}-{topic}", topics=[topic], bootstrap_servers=bootstrap,
                 database_url=dsn, heartbeat_interval_ms=1000, client=client)  # fmt: skip

    if handler == "batch":

        @c.batch_handler("bench.event")
        def handle_many(evs: list[ConsumedEvent], conn: psycopg.Connection[Any]) -> None:
            insert_many(conn, evs)

    else:

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


def run_at_least_once(bootstrap: str, dsn: str, topic: str, count: int, client: str, handler: str) -> tuple[float, float]:
    """The same handler, one transaction per polled partition batch, no bookkeeping."""
    from consumers._records import decode_record

    group = f"alo-{client}-{handler}-{topic}"
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
                    decoded = [decode_record(*r) for r in records]
                    if handler == "batch":
                        insert_many(conn, decoded)
                    else:
                        for e in decoded:
                            conn.execute(INSERT, (e.id, e.key, e.payload["n"]))
                done += len(records)
                if not started:
                    started, cpu, first = time.perf_counter(), time.process_time(), done
            if batches:
                commit()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    close()
    return (count - first) / elapsed, cpu / (count - first) * 1e6


def run_latency(
    bootstrap: str, dsn: str, topic: str, rate: int, seconds: float, pad: int, client: str, relay: bool
) -> list[float]:
    """Per event: the consumer's commit time minus the writer's commit time (relay) or the record's creation."""
    committed: dict[str, float] = {}
    pending: list[str] = []

    class Timed(Consumer):
        def _after_commit(self, state: PartitionState, next_offset: int) -> None:
            super()._after_commit(state, next_offset)
            now = time.time()
            for event_id in pending:
                committed[event_id] = now
            pending.clear()

    c = Timed(group=f"lat-{client}-{topic}", topics=[topic], bootstrap_servers=bootstrap, database_url=dsn,
              start_from="latest", heartbeat_interval_ms=1000, client=client)  # fmt: skip

    @c.handler("bench.event")
    def handle(event: ConsumedEvent, conn: psycopg.Connection[Any]) -> None:
        conn.execute(INSERT, (event.id, event.key, event.payload["n"]))
        pending.append(str(event.id) if relay else f"{event.payload['t']!r}")

    thread = threading.Thread(target=c.run)
    thread.start()
    while not c.metrics().lag:
        time.sleep(0.05)
    time.sleep(0.5)
    # The paced writer runs in its own process (as an application would): in this one it would
    # share the GIL with the consumer under test and its waits would count as the consumer's latency.
    ctx = mp.get_context("spawn")
    target = write_paced if relay else produce_paced

    def paced(total: int) -> dict[str, float]:
        results = ctx.Queue()
        proc = ctx.Process(target=target, args=(dsn if relay else bootstrap, topic, rate, total, pad, results), daemon=True)
        proc.start()
        started: dict[str, float] = results.get(timeout=total / rate + 60)
        proc.join(10)
        goal = c.metrics().processed + total
        deadline = time.monotonic() + 30
        while c.metrics().processed < goal and time.monotonic() < deadline:
            time.sleep(0.05)
        return started

    # Warm-up, not measured: the first records of a new topic wait for the producers' metadata
    # (the relay's client learns of the topic once), a one-off ~0.5 s that is not steady state.
    paced(max(rate // 2, 10))
    total = int(rate * seconds)
    started = paced(total)
    c.stop()
    thread.join()
    return [committed[k] - t for k, t in started.items() if k in committed]


def paced_range(rate: int, total: int) -> Iterator[int]:
    """0 .. total-1, the i-th yielded at i / rate seconds from the start (no drift)."""
    t0 = time.perf_counter()
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield i


def produce_paced(bootstrap: str, topic: str, rate: int, total: int, pad: int, results: Any) -> None:
    """``total`` records at ``rate`` per second straight to the store, each carrying its creation time."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    p.partitions_for(topic)  # metadata and connections before the clock starts
    filler = "x" * pad
    started: dict[str, float] = {}
    for i in paced_range(rate, total):
        now = time.time()
        e = Event(topic=topic, key=f"key-{i % 100}", type="bench.event", payload={"n": i, "t": now, "pad": filler})
        p.send(topic, **relay_record(e))
        started[repr(now)] = now
    p.flush()
    p.close()
    results.put(started)


def write_paced(dsn: str, topic: str, rate: int, total: int, pad: int, results: Any) -> None:
    """``total`` outbox events at ``rate`` per second, one per transaction; the time each COMMIT returned."""
    from outbox import publish

    filler = "x" * pad
    started: dict[str, float] = {}
    with psycopg.connect(dsn) as conn:
        for i in paced_range(rate, total):
            e = Event(topic=topic, key=f"key-{i % 100}", type="bench.event", payload={"n": i, "pad": filler})
            with conn.transaction():
                publish(conn, e)
            started[str(e.id)] = time.time()
    results.put(started)


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
    parser.add_argument("--handler", default="row,batch", help="comma-separated: row (per event), batch (per list)")
    parser.add_argument("--only", default="throughput,latency", help="comma-separated: throughput, latency")
    parser.add_argument("--no-relay", action="store_true", help="latency: produce straight to the store, no outbox")
    args = parser.parse_args()
    clients = [c for c in args.clients.split(",") if c]
    handlers = [h for h in args.handler.split(",") if h]
    only = set(args.only.split(","))

    from tests.support.postgres import PostgresServer
    from tests.support.relay import RelayProcess
    from tests.support.store import StoreProcess

    pg = PostgresServer(use_env=False)
    store = StoreProcess(None)
    relay: RelayProcess | None = None
    try:
        pg.start()
        store.start()
        dsn = pg.create_database("bench_consumer")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE)
        sample = events("t", 1, 0)[0]
        pad = max(1024 - len(sample.payload_json()) - 14, 0)
        print(f"1 KiB events: value {len(events('t', 1, pad)[0].payload_json())} bytes, {args.partitions} partitions")
        runs = [(c, h) for h in handlers for c in clients]
        eo: dict[tuple[str, str], list[tuple[float, float]]] = {r: [] for r in runs}
        alo: dict[tuple[str, str], list[tuple[float, float]]] = {r: [] for r in runs}
        for r in range(args.rounds if "throughput" in only else 0):
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            create_topic(store.bootstrap, topic, args.partitions)
            produce(store.bootstrap, topic, events(topic, args.events, pad))
            for client, handler in runs:  # back to back on the same records, each in its own groups
                eo[client, handler].append(run_exactly_once(store.bootstrap, dsn, topic, args.events, client, handler))
                alo[client, handler].append(run_at_least_once(store.bootstrap, dsn, topic, args.events, client, handler))
                (e_rate, e_cpu), (a_rate, a_cpu) = eo[client, handler][-1], alo[client, handler][-1]
                print(f"round {r + 1} {client:>12} {handler:>5}: exactly-once {e_rate:,.0f} events/s ({e_cpu:.0f} us "
                      f"CPU/event), at-least-once {a_rate:,.0f} events/s ({a_cpu:.0f} us CPU/event)", flush=True)  # fmt: skip
        for client, handler in runs if "throughput" in only else []:
            e_runs, a_runs = eo[client, handler], alo[client, handler]
            m_eo, m_alo = statistics.median(r for r, _ in e_runs), statistics.median(r for r, _ in a_runs)
            c_eo, c_alo = statistics.median(c for _, c in e_runs), statistics.median(c for _, c in a_runs)
            print(f"{client:>12} {handler:>5}: exactly-once {m_eo:>8,.0f} events/s, at-least-once {m_alo:>8,.0f} "
                  f"events/s (median of {args.rounds}); bookkeeping costs {100 * (1 - m_eo / m_alo):.1f}%; consumer "
                  f"CPU {c_eo:.0f} vs {c_alo:.0f} us/event (1e6 / that = one core's ceiling)")  # fmt: skip
        if "latency" in only and not args.no_relay:
            from outbox import migrate

            with psycopg.connect(dsn) as conn:
                migrate(conn)
            relay = RelayProcess(dsn, store.bootstrap, name="bench-relay")
            relay.start()
        what = "outbox COMMIT" if relay is not None else "record created"
        for client in clients if "latency" in only else []:
            topic = f"lat-{uuid.uuid4().hex[:8]}"
            create_topic(store.bootstrap, topic, args.partitions)
            lat = run_latency(store.bootstrap, dsn, topic, args.rate, args.seconds, pad, client, relay is not None)
            if lat:
                print(
                    f"{client:>12}: latency at {args.rate}/s, {what} -> handler's transaction committed: "
                    f"p50 {pct(lat, 0.5) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms, "
                    f"max {max(lat) * 1000:.1f} ms ({len(lat)} events)",
                    flush=True,
                )
    finally:
        if relay is not None:
            relay.stop()
        store.cleanup()
        pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
