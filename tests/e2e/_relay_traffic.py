"""Traffic and checks for the relay's end-to-end fault tests (real relay processes, real faults).

Writers commit events whose payload is ``{"key": k, "seq": n, "id": event id}``. The sequence
number comes from a counter row updated in the same transaction (``UPDATE ... RETURNING``), so two
transactions of one key are serialised by the row lock and their ``seq`` follow commit order; a
transaction that rolls back (or dies with its connection) gives its number back. The committed
truth is therefore the counter table itself: per key, exactly the events ``1..n`` committed,
whatever the writers saw (a commit cut by a PostgreSQL restart has an unknown outcome on the
client; the counter knows). Events of rolled-back transactions are remembered by id.

:func:`check_delivery` then checks G1-G3 on what a real consumer reads back.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from outbox import Event, migrate, publish
from tests.support.topics import LogRecord, first_occurrences, read_topic
from tests.support.waiting import wait_until

__all__ = [
    "Delivery",
    "Writers",
    "check_delivery",
    "ids_in_outbox",
    "outbox_ids",
    "outbox_rows",
    "prepare_database",
    "seq_counts",
    "wait_drained",
]

SEQ_TABLE = "e2e_seq"
EVENT_TYPE = "e2e.seq"


def prepare_database(dsn: str, keys: Sequence[str]) -> None:
    """Migrate the outbox and create the per-key sequence counters."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            sql.SQL("CREATE TABLE {} (key text PRIMARY KEY, n integer NOT NULL)").format(sql.Identifier(SEQ_TABLE))
        )
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} (key, n) VALUES (%s, 0)").format(sql.Identifier(SEQ_TABLE)),
                [(k,) for k in keys],
            )


def seq_counts(dsn: str) -> dict[str, int]:
    """Per key, how many of its events committed (``1..n``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("SELECT key, n FROM {}").format(sql.Identifier(SEQ_TABLE))).fetchall()
    return {k: int(n) for k, n in rows}


def outbox_rows(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM outbox.events").fetchone()
    assert row is not None
    return int(row[0])


def outbox_ids(dsn: str) -> set[str]:
    """The event ids of every row in the outbox table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT event_id::text FROM outbox.events").fetchall()}


def ids_in_outbox(dsn: str, ids: set[str]) -> set[str]:
    """Which of ``ids`` are still rows of the outbox table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT event_id::text FROM outbox.events WHERE event_id = ANY(%s::uuid[])", (sorted(ids),)
        ).fetchall()
    return {r[0] for r in rows}


def wait_drained(dsn: str, timeout: float, what: str) -> None:
    """Wait until the relay deleted every outbox row (each one only after the broker's ack)."""
    last = [-1]

    def drained() -> bool:
        try:
            last[0] = outbox_rows(dsn)
        except psycopg.OperationalError:
            return False
        return last[0] == 0

    wait_until(drained, lambda: f"the outbox to drain ({what}); {last[0]} row(s) left", timeout=timeout, interval=0.2)


@dataclass
class Commit:
    began: float  # time.monotonic() before the transaction started
    event_ids: list[str]


@dataclass
class Writers:
    """Threads committing (and sometimes rolling back) events on shared keys until :meth:`stop`."""

    dsn: str
    topic: str
    keys: Sequence[str]
    threads: int = 3
    rollback_ratio: float = 0.1
    pause: float = 0.002
    seed: int = 0
    commits: list[Commit] = field(default_factory=list)
    rolled_back: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)  # the commit itself failed: outcome unknown
    errors: list[str] = field(default_factory=list)  # connection problems seen (expected in PG faults)
    crashed: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._update = sql.SQL("UPDATE {} SET n = n + 1 WHERE key = %s RETURNING n").format(sql.Identifier(SEQ_TABLE))

    def start(self) -> Writers:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(random.Random(self.seed * 1000 + i),), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
            assert not t.is_alive(), "a writer thread did not stop"
        assert not self.crashed, f"a writer thread crashed: {self.crashed[0]!r}"

    @property
    def committed(self) -> int:
        with self._lock:
            return sum(len(c.event_ids) for c in self.commits)

    def committed_ids(self, *, began_after: float = 0.0) -> set[str]:
        with self._lock:
            return {e for c in self.commits if c.began >= began_after for e in c.event_ids}

    def wait_committed(self, n: int, timeout: float = 30.0) -> None:
        wait_until(lambda: self.committed >= n, lambda: f"{n} committed events (have {self.committed})", timeout)

    def _run(self, rng: random.Random) -> None:
        try:
            self._loop(rng)
        except BaseException as exc:
            with self._lock:
                self.crashed.append(exc)
            raise

    def _loop(self, rng: random.Random) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                self._one(conn, rng)
            except (psycopg.Error, psycopg.Rollback) as exc:
                # Rollback escapes the transaction block when the rollback itself failed (connection lost).
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(0.1)
            if self.pause:
                self._stop.wait(rng.uniform(0, 2 * self.pause))
        if conn is not None:
            conn.close()

    def backlog(self, per_key: int) -> None:
        """Commit ``per_key`` events for every key in one transaction (a backlog for the relay)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.transaction():
            events = []
            for k in sorted(self.keys):
                row = conn.execute(
                    sql.SQL("UPDATE {} SET n = n + %s WHERE key = %s RETURNING n").format(sql.Identifier(SEQ_TABLE)),
                    (per_key, k),
                ).fetchone()
                assert row is not None
                for seq in range(row[0] - per_key + 1, row[0] + 1):
                    eid = uuid.uuid4()
                    payload = {"key": k, "seq": seq, "id": str(eid)}
                    events.append(Event(id=eid, topic=self.topic, key=k, type=EVENT_TYPE, payload=payload))
            publish(conn, events)
            began = time.monotonic()
        with self._lock:
            self.commits.append(Commit(began, [str(e.id) for e in events]))

    def _one(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        keys = sorted(rng.sample(list(self.keys), rng.choice((1, 1, 1, 2, 3))))  # sorted: no deadlocks
        rollback = rng.random() < self.rollback_ratio
        began = time.monotonic()
        ids: list[str] = []
        body_done = False
        try:
            with conn.transaction():
                events = []
                for k in keys:
                    row = conn.execute(self._update, (k,)).fetchone()
                    assert row is not None
                    eid = uuid.uuid4()
                    ids.append(str(eid))
                    events.append(
                        Event(
                            id=eid,
                            topic=self.topic,
                            key=k,
                            type=EVENT_TYPE,
                            payload={"key": k, "seq": row[0], "id": str(eid)},
                        )
                    )
                publish(conn, events)
                body_done = True
                if rollback:
                    raise psycopg.Rollback()
        except (psycopg.Error, psycopg.Rollback):
            with self._lock:
                if rollback:
                    self.rolled_back.update(ids)
                elif body_done:
                    self.unknown.update(ids)
            raise
        with self._lock:
            if rollback:
                self.rolled_back.update(ids)
            else:
                self.commits.append(Commit(began, ids))


@dataclass
class Delivery:
    records: list[LogRecord]
    expected: int
    duplicates: int
    partitions: dict[str, int]


def check_delivery(bootstrap: str, topic: str, dsn: str, writers: Writers, *, timeout: float = 30.0) -> Delivery:
    """Read ``topic`` back and check G1-G3 against the committed truth (the sequence counters).

    * every committed event is in the log (the counters' ``1..n`` per key and every id a writer
      saw committed), no event of a rolled-back transaction is;
    * every copy of an event carries its original ``event-id`` header (the id is in the payload too);
    * all events of a key are on one partition, and the key's first occurrences are ``1..n`` in order.
    """
    counts = seq_counts(dsn)
    expected = sum(counts.values())
    assert expected > 0, "the writers committed nothing"
    records = read_topic(bootstrap, topic, min_records=expected, timeout=timeout)
    if len(records) < expected:
        # read_topic's last pass after its deadline reads nothing: read once more to say what is there.
        records = read_topic(bootstrap, topic, timeout=15)
    problems: list[str] = []
    ids: set[str] = set()
    for r in records:
        payload = json.loads(r.value)
        if r.event_id != payload["id"]:
            problems.append(f"record {r.partition}@{r.offset} has event-id {r.event_id} but is event {payload['id']}")
        if r.key is None or r.key.decode() != payload["key"]:
            problems.append(f"record {r.partition}@{r.offset} has key {r.key!r}, payload key {payload['key']!r}")
        ids.add(payload["id"])
    leaked = ids & writers.rolled_back
    if leaked:
        problems.append(
            f"G1: {len(leaked)} event(s) of rolled-back transactions reached the log, e.g. {sorted(leaked)[:3]}"
        )
    missing_ids = writers.committed_ids() - ids
    if missing_ids:
        problems.append(
            f"G2: {len(missing_ids)} committed event(s) missing from the log, e.g. {sorted(missing_ids)[:3]}"
        )
    partitions: dict[str, set[int]] = defaultdict(set)
    firsts: dict[str, list[int]] = defaultdict(list)
    for r in records:
        partitions[json.loads(r.value)["key"]].add(r.partition)
    for r in first_occurrences(records):
        payload = json.loads(r.value)
        firsts[payload["key"]].append(payload["seq"])
    for key, n in sorted(counts.items()):
        if len(partitions.get(key, ())) > 1:
            problems.append(f"G3: key {key} is on partitions {sorted(partitions[key])}")
        seqs = firsts.get(key, [])
        if seqs != list(range(1, n + 1)):
            missing = sorted(set(range(1, n + 1)) - set(seqs))
            extra = sorted(set(seqs) - set(range(1, n + 1)))
            out_of_order = [(a, b) for a, b in itertools.pairwise(seqs) if b < a]
            problems.append(
                f"key {key}: committed 1..{n}; first occurrences: {len(seqs)}, missing (G2) {missing[:10]}, "
                f"not committed (G1) {extra[:10]}, out of order (G3) {out_of_order[:5]}"
            )
    assert not problems, "\n".join(problems[:30])
    return Delivery(
        records=records,
        expected=expected,
        duplicates=len(records) - len(ids),
        partitions={k: next(iter(p)) for k, p in partitions.items()},
    )
