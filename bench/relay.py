"""The relay end to end: real PostgreSQL, the real store, the relay as its own process.

Prints four tables:

1. Drain: a backlog of ``--backlog`` events (350-byte payloads, 1,000 keys) inserted while no
   relay runs; then one relay starts: events/s until the outbox is empty (from its first publish).
2. Keeping up: W writer processes (4 and 16) commit transactions of 1 or 100 events each for
   ``--seconds`` while one relay runs: commits/s, events/s from commit to acknowledged in the log
   (all events / time until the outbox is empty), and the largest age of the oldest waiting event
   sampled every 100 ms (the backlog in seconds).
3. Latency at a paced ``--rate`` events/s (one event per transaction): from the writer's COMMIT
   returning to the record arriving at a consumer tailing the topic (librdkafka, fetch.wait.max.ms
   10): p50/p90/p99/max. This includes the consumer's own fetch latency, so it over-estimates.
4. Write-path cost of ``publish``: the same writers running ``BEGIN; INSERT a business row; COMMIT``
   with and without ``publish()`` of one event, relay running (the doorbell as in production).

    python bench/relay.py [--backlog 1000000] [--seconds 10] [--rate 500] [--producer auto] [--quick]

Targets (issue 4, this 2-core machine): drain >= 100,000 events/s; 16 single-event writers with a
backlog under 1 s; p50 <= 3 ms, p99 <= 10 ms at 500/s; publish costs <= 15% of the transaction rate.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench._util import log, percentile
from outbox import Event, migrate, publish
from tests.support._proc import free_port
from tests.support.postgres import PostgresServer
from tests.support.relay import RelayProcess
from tests.support.store import StoreProcess

PAYLOAD = {"order_id": "x" * 16, "customer": "c" * 24, "items": [{"sku": "s" * 12, "qty": 3}] * 6, "note": "n" * 80}


def _published(metrics_port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith("outbox_relay_published_total "):
            return float(line.split()[1])
    return 0.0


def _histogram(metrics_port: int, name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of a Prometheus histogram."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    out = []
    for line in body.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    return out


def _quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """Quantile of the observations made between two histogram snapshots (linear within a bucket)."""
    counts = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in counts:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return prev_le


def _backlog(dsn: str) -> tuple[int, float]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox.events"
        ).fetchone()
        assert row is not None
        return int(row[0]), float(row[1])


def fill_backlog(dsn: str, n: int) -> None:
    """Insert ``n`` events with SQL (what publish() writes, without its per-call overhead)."""
    payload = Event(topic="t", type="t", payload=PAYLOAD).payload_json()
    with psycopg.connect(dsn) as conn:
        done = 0
        while done < n:
            step = min(100_000, n - done)
            conn.execute(
                """INSERT INTO outbox.events (event_id, topic, key, key_hash, type, payload, headers, created_at)
                   SELECT gen_random_uuid(), 'drain', 'key-' || (g %% 1000), outbox.events_key_hash('drain', 'key-' || (g %% 1000)),
                          'order.placed', %s, '{}', clock_timestamp()
                   FROM generate_series(%s, %s) g""",
                (payload, done, done + step - 1),
            )
            conn.commit()
            done += step
            log(f"backlog: {done:,} of {n:,} events inserted")
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE outbox.events")


def writer(dsn: str, per_txn: int, with_outbox: bool, seconds: float, go: Any, out: Any, topic: str) -> None:
    # autocommit: each `conn.transaction()` below is then a real transaction (on a non-autocommit
    # connection, the SET would open one that never ends, and the blocks would be savepoints).
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        go.wait()
        commits = events = 0
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            with conn.transaction():
                conn.execute("INSERT INTO business (v) VALUES (%s)", (n,))
                if with_outbox:
                    publish(
                        conn,
                        [
                            Event(topic=topic, key=f"k{(os.getpid() * 7 + n + i) % 1000}", type="t", payload=PAYLOAD)
                            for i in range(per_txn)
                        ],
                    )
            n += 1
            commits += 1
            events += per_txn if with_outbox else 0
        out.put((commits, events))


def run_writers(
    dsn: str, writers: int, per_txn: int, with_outbox: bool, seconds: float, topic: str
) -> dict[str, float]:
    ctx = mp.get_context("fork")
    go = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=writer, args=(dsn, per_txn, with_outbox, seconds, go, out, topic)) for _ in range(writers)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)
    max_age = 0.0
    t0 = time.monotonic()
    go.set()
    stop = threading.Event()

    def sample() -> None:
        nonlocal max_age
        while not stop.is_set():
            max_age = max(max_age, _backlog(dsn)[1])
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    if with_outbox:
        sampler.start()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.monotonic() - t0
    commits = sum(c for c, _ in results)
    events = sum(e for _, e in results)
    if with_outbox:
        while _backlog(dsn)[0] > 0 and time.monotonic() - t0 < seconds + 300:
            time.sleep(0.02)
        stop.set()
        sampler.join()
    drained = time.monotonic() - t0
    return {
        "tps": commits / elapsed,
        "events": events,
        "events_per_s": events / drained if events else 0.0,
        "max_age": max_age,
        "drain_after": drained - elapsed,
    }


def latency(dsn: str, bootstrap: str, rate: float, seconds: float) -> list[float]:
    from confluent_kafka import Consumer

    topic = f"lat-{uuid.uuid4().hex[:6]}"
    commit_at: dict[str, float] = {}
    got: dict[str, float] = {}
    with psycopg.connect(dsn) as conn, conn.transaction():  # create the topic first
        publish(conn, Event(topic=topic, key="warm", type="t", payload={}))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lat-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            now = time.monotonic()
            for k, v in msg.headers() or []:
                if k == "event-id":
                    got.setdefault(v.decode(), now)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(3)  # join the group, get the partition
    interval = 1.0 / rate
    with psycopg.connect(dsn) as conn:
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            target = start + n * interval
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = Event(topic=topic, key=f"k{n % 100}", type="t", payload=PAYLOAD)
            with conn.transaction():
                publish(conn, event)
            commit_at[str(event.id)] = time.monotonic()
            n += 1
    deadline = time.monotonic() + 30
    while len(set(commit_at) & set(got)) < len(commit_at) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    t.join()
    consumer.close()
    return sorted(got[i] - commit_at[i] for i in commit_at if i in got)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--producer", default="auto")
    parser.add_argument("--relay-arg", action="append", default=[], help="extra relay flag (repeatable, e.g. --relay-arg=--producer-option=linger.ms=0)")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PostgreSQL setting for the bench's server (repeatable, e.g. --pg-setting shared_buffers=2GB)",
    )
    parser.add_argument("--writers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--quick", action="store_true", help="100k backlog, 4 s phases")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["drain", "keepup", "latency", "cost"],
        default=["drain", "keepup", "latency", "cost"],
    )
    args = parser.parse_args()
    if args.quick:
        args.backlog, args.seconds = 100_000, 4.0
    pg_settings = dict(item.split("=", 1) for item in args.pg_setting)
    if pg_settings:
        log("PostgreSQL settings: " + ", ".join(f"{k}={v}" for k, v in pg_settings.items()))
    with PostgresServer(use_env=False, settings=pg_settings) as pg, StoreProcess(extra_args=["--default-partitions", "8"]) as store:
        dsn = pg.create_database("bench_relay")
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
            conn.execute("CREATE TABLE business (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v bigint)")
            conn.execute("ALTER SYSTEM SET max_connections = 100")
        metrics_port = free_port()
        relay = RelayProcess(
            dsn,
            store.bootstrap,
            name="bench",
            extra_args=[
                "--metrics-port",
                str(metrics_port),
                "--metrics-host",
                "127.0.0.1",
                "--producer",
                args.producer,
                *args.relay_arg,
                "--log-level",
                "INFO",
            ],
        )
        lines: list[str] = []
        try:
            if "drain" in args.only:
                fill_backlog(dsn, args.backlog)
                relay.start(wait=False)
                while not _port_open(metrics_port) or _published(metrics_port) == 0:
                    time.sleep(0.005)
                t0 = time.monotonic()
                first = _published(metrics_port)
                cpu0 = _cpu_seconds(relay.pid)
                last_t, last_n = t0, first
                while (done := _published(metrics_port)) < args.backlog:
                    now = time.monotonic()
                    if now - last_t >= 2.0:
                        log(f"drain: {done:,.0f} published, {(done - last_n) / (now - last_t):,.0f} events/s lately")
                        last_t, last_n = now, done
                    time.sleep(0.2)  # each scrape costs the relay CPU: not too often
                elapsed = time.monotonic() - t0
                rate = (args.backlog - first) / elapsed
                cpu_us = (_cpu_seconds(relay.pid) - cpu0) / (args.backlog - first) * 1e6
                lines.append(
                    f"drain      {args.backlog:>9,} events  {rate:>10,.0f} events/s  ({elapsed:.1f} s; relay process "
                    f"{cpu_us:.1f} us CPU per event, all its threads)   target >= 100,000"
                )
                log(lines[-1])
            else:
                relay.start()
            if "keepup" in args.only:
                for writers in args.writers:
                    for per_txn in (1, 100):
                        r = run_writers(dsn, writers, per_txn, True, args.seconds, "keepup")
                        lines.append(
                            f"keep-up    {writers:>2} writers x {per_txn:>3}/txn  {r['tps']:>8,.0f} commits/s  "
                            f"{r['events_per_s']:>9,.0f} events/s committed->acked  oldest waiting max {r['max_age'] * 1000:,.0f} ms  "
                            f"drained {r['drain_after']:.2f} s after the writers stopped"
                        )
                        log(lines[-1])
            if "latency" in args.only:
                hist_name = "outbox_relay_event_latency_seconds"
                before = _histogram(metrics_port, hist_name)
                lat = latency(dsn, store.bootstrap, args.rate, args.seconds)
                after = _histogram(metrics_port, hist_name)
                lines.append(
                    f"latency    {args.rate:.0f}/s  event created -> acknowledged (relay histogram, includes the writer's "
                    f"own commit): p50 {_quantile(before, after, 0.5) * 1000:.2f} ms  p99 {_quantile(before, after, 0.99) * 1000:.2f} ms"
                )
                log(lines[-1])
                ms = [x * 1000 for x in lat]
                lines.append(
                    f"latency    {args.rate:.0f}/s  COMMIT returned -> record at a consumer: n={len(ms)}  p50 {percentile(ms, 50):.2f} ms  p90 {percentile(ms, 90):.2f}  "
                    f"p99 {percentile(ms, 99):.2f}  max {ms[-1] if ms else float('nan'):.2f}   target p50<=3 p99<=10"
                )
                log(lines[-1])
            if "cost" in args.only:
                for writers in args.writers:
                    plain = run_writers(dsn, writers, 1, False, args.seconds, "cost")["tps"]
                    with_outbox = run_writers(dsn, writers, 1, True, args.seconds, "cost")["tps"]
                    lines.append(
                        f"cost       {writers:>2} writers  plain {plain:>7,.0f} tps  +publish {with_outbox:>7,.0f} tps  "
                        f"{(with_outbox / plain - 1) * 100:+.0f}%   target >= -15%"
                    )
                    log(lines[-1])
        finally:
            relay.cleanup()
    print("\n".join(lines))
    return 0


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process, all threads (a figure that a busy machine distorts less than a rate)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _port_open(port: int) -> bool:
    try:
        _published(port)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
