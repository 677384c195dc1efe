"""Write-path cost of the outbox and of its doorbell: transactions per second with 4 and 16 writers.

Every writer is its own process running ``BEGIN; INSERT a business row; <variant>; COMMIT`` in a
loop (``synchronous_commit=on``, fsync on). Variants:

* ``plain``            no outbox (the baseline)
* ``outbox``           + ``publish()`` of one 346-byte event into a table *without* a doorbell trigger
* ``notify-in-txn``    + the same, with a trigger that NOTIFYs on every insert (the classic design)
* ``notify-post``      + the plain outbox, then after COMMIT a separate ``pg_notify`` with
                         ``synchronous_commit=off`` (performance.md 3.2's post-commit option)
* ``doorbell-busy``    + ``publish()`` with the library's doorbell; no relay asleep (a busy relay)
* ``doorbell-idle``    + the same while a relay is asleep the whole run (holds the doorbell lock
                         and never wakes: the worst case, every commit notifies)
* ``doorbell-relay``   + the same with a simulated relay that claims and deletes rows, lingers
                         ``--linger-ms`` when idle, then arms the doorbell and sleeps until NOTIFY;
                         also prints how many notifications it received and its commit-to-claim lag

Two engines drive the writers:

* ``pgbench``: pgbench clients send exactly the SQL ``publish()`` sends (its ``insert_one`` query,
  lock CTE included, with a random key hash); the client costs almost nothing, so the figures
  show what the database pays (as in performance.md 3.2);
* ``python``: one process per writer running the real ``publish()`` (pydantic event, validation,
  serialisation, psycopg); on a 2-CPU box the Python clients compete with the server for CPU.

Each cell is the median of ``--rounds`` runs of ``--seconds`` (CHECKPOINT and TRUNCATE before each).
A throw-away PostgreSQL cluster is started unless ``--database-url`` is given.

    python bench/outbox_write.py [--engine pgbench python] [--writers 4 16] [--seconds 4] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from outbox import Event, migrate, publish
from outbox._table import OutboxTable
from relay.claimer import id_array

SCHEMA = "bench"
PAYLOAD = {
    "order_id": 123456789,
    "customer_id": "c-0042-7731",
    "status": "placed",
    "currency": "EUR",
    "total": "149.90",
    "items": [
        {"sku": "SKU-000123", "qty": 2, "price": "39.95"},
        {"sku": "SKU-004711", "qty": 1, "price": "70.00"},
    ],
    "shipping": {"method": "standard", "country": "DE", "postcode": "10115"},
    "placed_at": "2025-01-01T12:00:00Z",
    "note": "leave at the door",
}
VARIANTS = ["plain", "outbox", "notify-in-txn", "notify-post", "doorbell-busy", "doorbell-idle", "doorbell-relay"]
TABLE_OF = {
    "outbox": "plain_outbox",
    "notify-in-txn": "notify_outbox",
    "notify-post": "plain_outbox",
    "doorbell-busy": "events",
    "doorbell-idle": "events",
    "doorbell-relay": "events",
}


def setup(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(f"CREATE TABLE {SCHEMA}.orders (id bigserial PRIMARY KEY, body jsonb NOT NULL)")
        for table in ("events", "plain_outbox", "notify_outbox"):
            migrate(conn, schema=SCHEMA, table=table)
        conn.execute(f"DROP TRIGGER plain_outbox_doorbell ON {SCHEMA}.plain_outbox")
        conn.execute(
            f"""CREATE OR REPLACE FUNCTION {SCHEMA}.notify_outbox_doorbell() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN PERFORM pg_notify('bench.notify_outbox', ''); RETURN NULL; END $$"""
        )


def writer(dsn: str, variant: str, go: Any, deadline_box: Any, results: Any, seed: int) -> None:
    body = Jsonb(PAYLOAD)
    table = TABLE_OF.get(variant)
    n = 0
    with psycopg.connect(dsn) as conn, psycopg.connect(dsn, autocommit=True) as side:
        conn.execute("SELECT 1")
        conn.commit()
        go.wait()
        deadline = deadline_box.value
        while time.monotonic() < deadline:
            with conn.transaction():
                conn.execute(f"INSERT INTO {SCHEMA}.orders (body) VALUES (%s)", (body,))
                if table is not None:
                    event = Event(
                        topic="orders",
                        key=f"order-{seed}-{n % 1000}",
                        type="order.placed",
                        payload=PAYLOAD,
                        created_at=datetime.now(UTC),
                    )
                    publish(conn, event, schema=SCHEMA, table=table)
            if variant == "notify-post":
                side.execute("SELECT set_config('synchronous_commit', 'off', false), pg_notify('bench.post', '')")
            n += 1
    results.put(n)


def simulated_relay(dsn: str, linger_ms: float, stop: Any, results: Any) -> None:
    """The relay's side of the doorbell protocol (migration 0002), with real claims and deletes."""
    target = OutboxTable(SCHEMA, "events")
    lock = target.doorbell_lock
    notifies = claimed = 0
    lags: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as listen, psycopg.connect(dsn) as work:
        listen.execute(f'LISTEN "{target.channel}"')
        idle_since: float | None = None
        while not stop.is_set():
            with work.transaction():
                rows = work.execute(target.query("claim"), {"buckets": list(range(64)), "limit": 1000}).fetchall()
                if rows:
                    lags.append(time.time() - rows[-1][4] / 1000)  # the claim's timestamp_ms: event time
                    work.execute(target.query("delete"), {"ids": id_array([r[0] for r in rows])})
            if rows:
                claimed += len(rows)
                idle_since = None
                continue
            if idle_since is None:
                idle_since = time.monotonic()
            if time.monotonic() - idle_since < linger_ms / 1000:
                time.sleep(0.001)
                continue
            armed = listen.execute(target.query("arm_doorbell"), {"doorbell_lock": lock}).fetchone()
            if not (armed and armed[0]):
                time.sleep(0.001)  # a writer's transaction is open: work is coming
                continue
            if work.execute("SELECT EXISTS (SELECT FROM bench.events)").fetchone() == (True,):
                work.rollback()
            else:
                work.rollback()
                for _ in listen.notifies(timeout=1.0, stop_after=1):
                    notifies += 1
            listen.execute(target.query("disarm_doorbell"), {"doorbell_lock": lock})
            idle_since = None
    lags.sort()
    results.put((notifies, claimed, lags[len(lags) // 2] if lags else float("nan")))


def sleeping_relay(dsn: str, stop: Any, ready: Any, channel: str, lock: int) -> None:
    """Holds the doorbell the whole run and drains its notifications (the worst case)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'LISTEN "{channel}"')
        conn.execute("SELECT pg_advisory_lock(%s)", (lock,))
        ready.set()
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                pass


def pgbench_script(variant: str) -> str:
    body = json.dumps(PAYLOAD).replace("'", "''")
    lines = [
        r"\set kh random(-4611686018427387903, 4611686018427387903)",
        "BEGIN;",
        f"INSERT INTO {SCHEMA}.orders (body) VALUES ('{body}');",
    ]
    table = TABLE_OF.get(variant)
    if table is not None:
        insert = OutboxTable(SCHEMA, table).query("insert_one").decode()
        values = {
            "lock_key": ":kh",
            "event_id": "gen_random_uuid()",
            "topic": "'orders'",
            "key": "'order-' || :kh",
            "key_hash": ":kh",
            "type": "'order.placed'",
            "payload": "'\\x" + json.dumps(PAYLOAD).encode().hex() + "'",
            "headers": "'{}'",
            "created_at": "now()",
        }
        insert = re.sub(r"%\((\w+)\)s", lambda m: values[m.group(1)], insert)
        lines.append(" ".join(insert.split()) + ";")
    lines.append("COMMIT;")
    if variant == "notify-post":
        lines.append("SELECT set_config('synchronous_commit', 'off', true), pg_notify('bench.post', '');")
    return "\n".join(lines) + "\n"


def pgbench_tps(dsn: str, variant: str, writers: int, seconds: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(pgbench_script(variant))
    try:
        out = subprocess.run(
            [shutil.which("pgbench") or "pgbench", "-n", "-M", "prepared", "-c", str(writers), "-j", "2",
             "-T", str(max(1, round(seconds))), "-f", f.name, dsn],
            capture_output=True, text=True, check=False,
        )
    finally:
        os.unlink(f.name)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"pgbench failed: {out.stdout}\n{out.stderr}")
    return float(match.group(1))


def run_once(dsn: str, variant: str, writers: int, seconds: float, linger_ms: float, engine: str = "python") -> tuple[float, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {SCHEMA}.orders, {SCHEMA}.events, {SCHEMA}.plain_outbox, {SCHEMA}.notify_outbox")
        conn.execute("CHECKPOINT")
    ctx = mp.get_context("spawn")
    go, stop, ready = ctx.Event(), ctx.Event(), ctx.Event()
    deadline = ctx.Value("d", 0.0)
    results: Any = ctx.Queue()
    helpers: list[Any] = []
    relay_results: Any = ctx.Queue()
    if variant == "doorbell-idle":
        target = OutboxTable(SCHEMA, "events")
        helpers.append(ctx.Process(target=sleeping_relay, args=(dsn, stop, ready, target.channel, target.doorbell_lock)))
    elif variant == "doorbell-relay":
        helpers.append(ctx.Process(target=simulated_relay, args=(dsn, linger_ms, stop, relay_results)))
        ready.set()
    else:
        ready.set()
    for h in helpers:
        h.start()
    if engine == "pgbench":
        ready.wait(30)
        tps = pgbench_tps(dsn, variant, writers, seconds)
        stop.set()
        extra = ""
        if variant == "doorbell-relay":
            notifies, claimed, lag = relay_results.get(timeout=30)
            extra = f"relay woke by NOTIFY {notifies}x, claimed {claimed}, median claim lag {lag * 1000:.1f} ms"
        for h in helpers:
            h.join(10)
        return tps, extra
    procs = [ctx.Process(target=writer, args=(dsn, variant, go, deadline, results, i)) for i in range(writers)]
    for p in procs:
        p.start()
    ready.wait(30)
    time.sleep(1.0 + 0.1 * writers)  # let the writers connect
    deadline.value = time.monotonic() + seconds
    go.set()
    total = sum(results.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    stop.set()
    extra = ""
    if variant == "doorbell-relay":
        notifies, claimed, lag = relay_results.get(timeout=30)
        extra = f"relay woke by NOTIFY {notifies}x, claimed {claimed}, median claim lag {lag * 1000:.1f} ms"
    for h in helpers:
        h.join(10)
    return total / seconds, extra


def report(dsn: str, engine: str, args: argparse.Namespace) -> None:
    table: dict[tuple[str, int], list[float]] = {}
    notes: dict[tuple[str, int], str] = {}
    for round_no in range(args.rounds):
        for writers in args.writers:
            for variant in args.variants:
                tps, extra = run_once(dsn, variant, writers, args.seconds, args.linger_ms, engine)
                table.setdefault((variant, writers), []).append(tps)
                if extra:
                    notes[(variant, writers)] = extra
                print(f"  {engine} round {round_no + 1}: {variant:15s} {writers:2d} writers {tps:9.0f} TPS {extra}", file=sys.stderr)
    print(f"\n{engine}: TPS (median of {args.rounds}) and change against plain")
    print("variant".ljust(16) + "".join(f"{w:>10d} writers      " for w in args.writers))
    for variant in args.variants:
        line = variant.ljust(16)
        for writers in args.writers:
            med = statistics.median(table[(variant, writers)])
            base = statistics.median(table[("plain", writers)]) if ("plain", writers) in table else med
            line += f"{med:13.0f} {100 * (med / base - 1):+7.1f}%  "
        print(line)
    for (variant, writers), note in sorted(notes.items()):
        print(f"  {variant} @ {writers} writers (last round): {note}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("OUTBOX_BENCH_DATABASE_URL"))
    parser.add_argument("--writers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--linger-ms", type=float, default=20.0)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--engine", nargs="+", default=["pgbench", "python"], choices=["pgbench", "python"])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2.0
    server = None
    dsn = args.database_url
    if dsn is None:
        from tests.support.postgres import PostgresServer

        server = PostgresServer(use_env=False)
        server.start()
        dsn = server.dsn
    try:
        setup(dsn)
        with psycopg.connect(dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'}, {os.cpu_count()} CPUs, {args.seconds:g} s x {args.rounds} rounds")
        for engine in args.engine:
            report(dsn, engine, args)
    finally:
        if server is not None:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
