"""The campaign's history (writes, log reads, consumer offsets, effects) and its Jepsen-style checker.

Writes: every writer transaction updates a per-key counter row (``UPDATE ... RETURNING``: the row
lock serialises transactions of one key, so the sequence follows commit order), inserts a witness
row per event and publishes the events with ``outbox.publish`` — then commits or rolls back. The
history keeps what the writer saw (committed, rolled back, or unknown when the connection died in
COMMIT); the witness table is the database's own truth and resolves the unknowns.

Reads: an auditor re-reads the whole topic from offset 0 again and again (through the fault proxy,
across store restarts) and records ``(partition, offset) -> hash(key, value, event id)``; consumer
effects carry the partition and offset they came from. A monitor samples the consumer group's
authoritative offsets in the consumer database.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from outbox import Event, migrate, publish

__all__ = ["Auditor", "CheckResult", "History", "OffsetMonitor", "Writers", "check", "prepare_app_db"]

logger = logging.getLogger(__name__)

EVENT_TYPE = "chaos.tick"


def prepare_app_db(dsn: str, keys: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("CREATE TABLE chaos_seq (key text PRIMARY KEY, n integer NOT NULL)")
        conn.execute("CREATE TABLE chaos_writes (event_id uuid PRIMARY KEY, key text NOT NULL, seq integer NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO chaos_seq VALUES (%s, 0)", [(k,) for k in keys])


@dataclass
class Write:
    event_id: str
    key: str
    seq: int
    outcome: str  # committed | rolled_back | unknown


@dataclass
class History:
    writes: list[Write] = field(default_factory=list)
    # (partition, offset) -> set of record hashes ever read there, and the event id of each hash
    reads: dict[tuple[int, int], set[str]] = field(default_factory=lambda: defaultdict(set))
    read_ids: dict[tuple[int, int], str | None] = field(default_factory=dict)
    high_read: dict[int, int] = field(default_factory=dict)  # highest offset ever read per partition
    shrinks: list[str] = field(default_factory=list)  # a partition's end fell below an offset read before
    offset_samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, partition, next_offset)
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note_fault(self, name: str, detail: str = "") -> None:
        with self.lock:
            self.faults[name] += 1
            self.fault_log.append(f"{time.strftime('%H:%M:%S')} {name} {detail}".rstrip())
        logger.info("fault: %s %s", name, detail)


# -- writers -------------------------------------------------------------------------------------


class Writers:
    """``n`` threads committing (or rolling back) 1-3 events of distinct keys per transaction."""

    def __init__(
        self, dsn: str, topic: str, keys: list[str], history: History, *, n: int, seed: int, rate: float
    ) -> None:
        self.dsn, self.topic, self.keys, self.history = dsn, topic, keys, history
        self.n, self.seed, self.rate = n, seed, rate
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors = 0

    def start(self) -> None:
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i,), name=f"writer-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, connect_timeout=5)
                self._one(conn, rng, index)
            except Exception as exc:  # psycopg errors, and a Rollback whose ROLLBACK hit a dead connection
                self.errors += 1
                logger.debug("writer %s: %s", index, exc)
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                self._stop.wait(0.2)
            self._stop.wait(rng.expovariate(self.rate / self.n))
        if conn is not None:
            conn.close()

    def _one(self, conn: psycopg.Connection[Any], rng: random.Random, index: int) -> None:
        keys = sorted(rng.sample(self.keys, rng.choice((1, 1, 1, 2, 3))))
        rollback = rng.random() < 0.1
        pending: list[Write] = []
        try:
            with conn.transaction() as tx:
                events = []
                for k in keys:
                    row = conn.execute("UPDATE chaos_seq SET n = n + 1 WHERE key = %s RETURNING n", (k,)).fetchone()
                    assert row is not None
                    eid = uuid.uuid4()
                    seq = int(row[0])
                    conn.execute("INSERT INTO chaos_writes VALUES (%s, %s, %s)", (eid, k, seq))
                    events.append(
                        Event(
                            id=eid, topic=self.topic, key=k, type=EVENT_TYPE, payload={"key": k, "seq": seq, "w": index}
                        )
                    )
                    pending.append(Write(str(eid), k, seq, "unknown"))
                publish(conn, events)
                if rollback:
                    raise psycopg.Rollback(tx)
        except Exception:
            with self.history.lock:  # died somewhere in the transaction or in COMMIT: outcome unknown
                self.history.writes.extend(pending)
            raise
        outcome = "rolled_back" if rollback else "committed"
        with self.history.lock:
            for w in pending:
                w.outcome = outcome
            self.history.writes.extend(pending)


def committed_truth(dsn: str) -> dict[str, tuple[str, int]]:
    """event id -> (key, seq) of every committed write, from the witness table."""
    with psycopg.connect(dsn) as conn:
        return {str(r[0]): (r[1], r[2]) for r in conn.execute("SELECT event_id, key, seq FROM chaos_writes")}


# -- readers -------------------------------------------------------------------------------------


def record_hash(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in (key or b"", value or b"", json.dumps(sorted((k, v.hex()) for k, v in headers)).encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.hexdigest()


class Auditor:
    """Re-reads the whole topic from offset 0 every ``interval`` seconds and records what it saw."""

    def __init__(self, bootstrap: str, topic: str, history: History, *, interval: float = 15.0) -> None:
        self.bootstrap, self.topic, self.history, self.interval = bootstrap, topic, history, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="auditor", daemon=True)
        self.passes = 0
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.read_all()
            except Exception as exc:
                self.errors += 1
                logger.debug("auditor pass failed: %s", exc)
            self._stop.wait(self.interval)

    def read_all(self, timeout: float = 60.0) -> dict[tuple[int, int], tuple[str | None, str]]:
        """One full pass; returns ``(partition, offset) -> (event id, hash)`` and records it."""
        seen: dict[tuple[int, int], tuple[str | None, str]] = {}
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, request_timeout_ms=10_000)
        try:
            deadline = time.monotonic() + timeout
            partitions = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            if not tps:
                return seen
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            with self.history.lock:
                for tp in tps:
                    high = self.history.high_read.get(tp.partition, -1)
                    if ends[tp] <= high:
                        self.history.shrinks.append(
                            f"partition {tp.partition}: end offset {ends[tp]} <= offset {high} read before"
                        )
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"auditor pass incomplete: {sorted(tp.partition for tp in remaining)}")
                for tp, batch in consumer.poll(timeout_ms=500, max_records=10_000).items():
                    for m in batch:
                        headers = list(m.headers or [])
                        eid = next((v.decode() for k, v in headers if k == "event-id"), None)
                        seen[(m.partition, m.offset)] = (eid, record_hash(m.key, m.value, headers))
                        if m.offset + 1 >= ends[tp]:
                            remaining.discard(tp)
        finally:
            consumer.close()
        with self.history.lock:
            for (p, o), (eid, h) in seen.items():
                self.history.reads[(p, o)].add(h)
                self.history.read_ids.setdefault((p, o), eid)
                if o > self.history.high_read.get(p, -1):
                    self.history.high_read[p] = o
        self.passes += 1
        return seen


class OffsetMonitor:
    """Samples the group's authoritative offsets (consumer database) every ``interval`` seconds."""

    def __init__(self, dsn: str, group: str, history: History, *, interval: float = 0.5) -> None:
        self.dsn, self.group, self.history, self.interval = dsn, group, history, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="offset-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.wait(self.interval):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
                rows = conn.execute(
                    "SELECT partition, next_offset FROM outbox.consumer_offsets WHERE group_id = %s", (self.group,)
                ).fetchall()
                now = time.monotonic()
                with self.history.lock:
                    self.history.offset_samples.extend((now, int(p), int(o)) for p, o in rows)
            except psycopg.Error:
                conn = None
        if conn is not None:
            conn.close()


# -- checker -------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    rows: list[tuple[str, int, bool, str]]  # (check, count, is_violation, example)
    stats: dict[str, Any]

    @property
    def violations(self) -> int:
        return sum(1 for _, n, bad, _ in self.rows if bad and n)

    def table(self) -> str:
        width = max(len(r[0]) for r in self.rows)
        lines = [f"{'check'.ljust(width)}  {'count':>8}  verdict  example", "-" * (width + 40)]
        for name, n, bad, example in self.rows:
            verdict = "FAIL" if bad and n else ("ok" if bad else "info")
            lines.append(f"{name.ljust(width)}  {n:>8}  {verdict:<7}  {example[:110]}")
        return "\n".join(lines)


def check(
    history: History,
    truth: dict[str, tuple[str, int]],
    final_log: dict[tuple[int, int], tuple[str | None, str]],
    effects: list[tuple[int, str, str | None, int | None, int, int, str, int]],
) -> CheckResult:
    """Classify the history. ``effects`` rows: (id, event_id, key, seq, partition, offset, member, incarnation)."""
    rows: list[tuple[str, int, bool, str]] = []

    def add(name: str, items: list[str] | int, violation: bool = True) -> None:
        if isinstance(items, int):
            rows.append((name, items, violation, ""))
        else:
            rows.append((name, len(items), violation, items[0] if items else ""))

    by_outcome = Counter(w.outcome for w in history.writes)
    rolled_back = {w.event_id for w in history.writes if w.outcome == "rolled_back"}
    acked = {w.event_id for w in history.writes if w.outcome == "committed"}

    # G1: the witness table agrees with what the writers were told.
    add("G1 acked commit missing from the database", [e for e in acked if e not in truth])
    add("G1 rolled-back write in the database", [e for e in rolled_back if e in truth])

    log_ids: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for (p, o), (eid, _) in sorted(final_log.items()):
        if eid is not None:
            log_ids[eid].append((p, o))
    effect_ids = Counter(e[1] for e in effects)

    lost_log = [f"{e} {truth[e]} not in the log" for e in truth if e not in log_ids]
    lost_eff = [f"{e} {truth[e]} never applied" for e in truth if e not in effect_ids]
    add("lost events (committed, never in the log)", lost_log)
    add("lost events (committed, never applied)", lost_eff)
    phantom = [f"{e} in log at {log_ids[e][0]}" for e in log_ids if e not in truth]
    phantom += [f"{e} applied" for e in effect_ids if e not in truth and e not in log_ids]
    add("phantom events (not committed, yet published/applied)", phantom)
    dup_eff = [f"{e} applied {n}x" for e, n in effect_ids.items() if n > 1]
    add("duplicate effects", dup_eff)

    # Per-key order in the log: first occurrences, by offset, must follow the commit sequence.
    order_log: list[str] = []
    per_key_first: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for eid, places in log_ids.items():
        if eid in truth:
            key, seq = truth[eid]
            p, o = places[0]
            per_key_first[key].append((p, o, seq))
    for key, items in per_key_first.items():
        parts = {p for p, _, _ in items}
        if len(parts) > 1:
            order_log.append(f"key {key} on partitions {sorted(parts)}")
        items.sort()
        for a, b in itertools.pairwise(items):
            if b[2] <= a[2]:
                order_log.append(f"key {key}: seq {a[2]} at offset {a[1]} before seq {b[2]} at offset {b[1]}")
    add("per-key order violations in the log (G3)", order_log)

    # Per-key order of effects: in the order they were applied (offset order within a partition
    # is commit order, the CAS serialises a partition's transactions), seq must increase.
    order_eff: list[str] = []
    per_key_eff: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for eff in effects:
        if eff[2] is not None and eff[3] is not None:
            per_key_eff[eff[2]].append((eff[0], eff[5], eff[3]))
    for key, eff_items in per_key_eff.items():
        eff_items.sort()
        for a, b in itertools.pairwise(eff_items):
            if b[2] <= a[2]:
                order_eff.append(f"key {key}: seq {b[2]} (offset {b[1]}) applied after seq {a[2]} (offset {a[1]})")
    add("per-key order violations in effects (G5)", order_eff)

    # Inconsistent offsets: one (partition, offset), two different records.
    inconsistent = [f"p{p}@{o}: {len(hs)} different records" for (p, o), hs in history.reads.items() if len(hs) > 1]
    for (p, o), (_eid, digest) in final_log.items():
        before = history.reads.get((p, o))
        if before and digest not in before:
            inconsistent.append(f"p{p}@{o}: final read differs from an earlier read")
    for _id, eid, _k, _s, p, o, _m, _i in effects:
        logged = final_log.get((p, o))
        if logged is None:
            inconsistent.append(f"p{p}@{o}: applied {eid} from an offset missing from the final log")
        elif logged[0] != eid:
            inconsistent.append(f"p{p}@{o}: applied {eid}, the log now has {logged[0]}")
    inconsistent += history.shrinks
    add("inconsistent offsets (G4)", inconsistent)

    # Consumer offsets going backwards: the authoritative offsets, and the offsets effects came from.
    backwards: list[str] = []
    last: dict[int, int] = {}
    for _t, p, o in sorted(history.offset_samples):
        if p in last and o < last[p]:
            backwards.append(f"partition {p}: committed offset {last[p]} -> {o}")
        last[p] = max(o, last.get(p, o))
    eff_by_part: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for _id, _e, _k, _s, p, o, _m, _i in effects:
        eff_by_part[p].append((_id, o))
    for p, part_items in eff_by_part.items():
        part_items.sort()
        for x, y in itertools.pairwise(part_items):
            if y[1] <= x[1]:
                backwards.append(f"partition {p}: effect from offset {y[1]} applied after offset {x[1]}")
    add("consumer offsets going backwards", backwards)

    dup_log = sum(len(v) - 1 for v in log_ids.values())
    add("duplicates in the log (allowed)", dup_log, violation=False)
    stats = {
        "writes": dict(by_outcome),
        "committed (witness table)": len(truth),
        "unknown outcomes resolved as committed": sum(
            1 for w in history.writes if w.outcome == "unknown" and w.event_id in truth
        ),
        "log records": len(final_log),
        "effects": len(effects),
        "auditor offsets read": len(history.reads),
        "offset samples": len(history.offset_samples),
    }
    return CheckResult(rows, stats)
