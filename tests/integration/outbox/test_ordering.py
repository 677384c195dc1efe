"""Per-key order by construction: for one (topic, key), outbox ids follow COMMIT order (G3's
foundation), and batch publishes with overlapping keys never deadlock."""

from __future__ import annotations

import random
import threading
import time

import psycopg
import pytest

from outbox import Event, publish
from tests.integration.outbox._support import rows

WAIT = 10.0


def ev(key: str | None, topic: str = "orders") -> Event:
    return Event(topic=topic, key=key, type="t", payload={"key": key})


def wait_until_blocked_on_advisory_lock(url: str, pid: int) -> None:
    deadline = time.monotonic() + WAIT
    with psycopg.connect(url, autocommit=True) as observer:
        while time.monotonic() < deadline:
            row = observer.execute(
                "SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted", (pid,)
            ).fetchone()
            if row is not None:
                return
            time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited for an advisory lock")


def test_publish_first_commit_last_gets_the_larger_id_for_its_key(outbox_url: str) -> None:
    """T1 draws an id first (another key) and publishes K last, after T2 published K and committed:
    T1's K event must come after T2's. And a transaction that publishes K while another holds K
    waits, so the one that published first (and commits first) has the smaller id."""
    commit_order: list[str] = []
    errors: list[BaseException] = []
    with psycopg.connect(outbox_url) as t1, psycopg.connect(outbox_url) as t2:
        # Scenario A: T1 takes an id first (other key), T2 publishes K and commits, T1 publishes K.
        publish(t1, ev("other"))
        e2 = ev("K")
        publish(t2, e2)
        t2.commit()
        commit_order.append("t2")
        e1 = ev("K")
        publish(t1, e1)
        t1.commit()
        commit_order.append("t1")

        # Scenario B: T1 publishes K first; T2 publishes K and tries to commit before T1 does.
        # Without the lock T2 would insert (larger id) and commit first: ids against commit order.
        b1, b2 = ev("K"), ev("K")
        publish(t1, b1)
        b1_seen_by_t2: list[int] = []

        def second() -> None:
            try:
                publish(t2, b2)
                # publish returned, so T2 got K's lock: T1 must have committed by now, and T2's
                # next statement (read committed) sees b1.
                row = t2.execute("SELECT count(*) FROM outbox.events WHERE event_id = %s", (b1.id,)).fetchone()
                b1_seen_by_t2.append(row[0] if row else 0)
                t2.commit()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        wait_until_blocked_on_advisory_lock(outbox_url, t2.info.backend_pid)
        assert thread.is_alive()  # T2 is stuck in publish, before drawing an id
        t1.commit()
        thread.join(WAIT)
        assert not thread.is_alive() and not errors, errors
    assert commit_order == ["t2", "t1"]
    assert b1_seen_by_t2 == [1]
    k_events = [r[0] for r in rows(outbox_url, "SELECT event_id FROM outbox.events WHERE key = 'K' ORDER BY id")]
    assert k_events == [e2.id, e1.id, b1.id, b2.id]


def test_a_batch_holds_every_key_lock_until_commit(outbox_url: str) -> None:
    with psycopg.connect(outbox_url) as t1, psycopg.connect(outbox_url, autocommit=True) as t2:
        publish(t1, [ev("a"), ev("b", topic="other"), ev(None), ev("a")])
        with t2.transaction():
            t2.execute("SET LOCAL lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                publish(t2, ev("b", topic="other"))
        with t2.transaction():  # other topics, other keys and keyless events do not wait
            publish(t2, [ev("b"), ev("a", topic="other"), ev(None)])
        t1.rollback()
        with t2.transaction():
            t2.execute("SET LOCAL lock_timeout = '200ms'")
            publish(t2, ev("b", topic="other"))


def test_commit_order_per_key_under_concurrency(outbox_url: str) -> None:
    """Many writers on a few shared keys: per key, id order == the order of the commits, as
    recorded by a commit-order sequence drawn while the key lock is still held."""
    writers, per_writer, keys = 6, 25, ["k0", "k1", "k2"]
    with psycopg.connect(outbox_url, autocommit=True) as setup:
        setup.execute("CREATE SEQUENCE commit_seq")
        setup.execute("CREATE TABLE commits (event_id uuid PRIMARY KEY, seq bigint NOT NULL)")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        rnd = random.Random(n)
        try:
            with psycopg.connect(outbox_url) as conn:
                for _ in range(per_writer):
                    event = ev(rnd.choice(keys))
                    with conn.transaction():
                        publish(conn, event)
                        time.sleep(rnd.random() * 0.002)
                        # Drawn last, just before COMMIT, while the key lock is held: for one key
                        # this is the commit order.
                        conn.execute("INSERT INTO commits VALUES (%s, nextval('commit_seq'))", (event.id,))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    got = rows(
        outbox_url,
        "SELECT e.key, e.id, c.seq FROM outbox.events e JOIN commits c USING (event_id) ORDER BY e.key, e.id",
    )
    assert len(got) == writers * per_writer
    for key in keys:
        seqs = [seq for k, _, seq in got if k == key]
        assert seqs == sorted(seqs), f"key {key}: ids not in commit order"


def test_overlapping_batches_in_random_orders_never_deadlock(outbox_url: str) -> None:
    writers, rounds = 8, 30
    keys = [f"key-{i}" for i in range(12)]
    errors: list[BaseException] = []
    done = [0]
    lock = threading.Lock()

    def work(n: int) -> None:
        rnd = random.Random(1000 + n)
        try:
            with psycopg.connect(outbox_url) as conn:
                # PostgreSQL would report a deadlock after deadlock_timeout; fail fast instead.
                conn.execute("SET deadlock_timeout = '100ms'")
                conn.commit()
                for _ in range(rounds):
                    batch = [ev(k) for k in rnd.sample(keys, rnd.randint(2, 8))]
                    rnd.shuffle(batch)
                    with conn.transaction():
                        publish(conn, batch)
                        time.sleep(rnd.random() * 0.001)
                    with lock:
                        done[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert done[0] == writers * rounds


def test_unsorted_locks_would_deadlock(outbox_url: str) -> None:
    """The control experiment: taking the same locks in call order (two calls) does deadlock, so
    the test above would catch a publish() that stopped sorting."""
    with psycopg.connect(outbox_url) as t1, psycopg.connect(outbox_url) as t2:
        for c in (t1, t2):
            c.execute("SET deadlock_timeout = '50ms'")
            c.commit()
        publish(t1, ev("a"))
        publish(t2, ev("b"))
        errors: list[BaseException] = []

        def t1_second() -> None:
            try:
                publish(t1, ev("b"))
            except BaseException as exc:
                errors.append(exc)
                t1.rollback()  # releases "a", so T2 can go on

        thread = threading.Thread(target=t1_second)
        thread.start()
        wait_until_blocked_on_advisory_lock(outbox_url, t1.info.backend_pid)
        try:
            publish(t2, ev("a"))
        except psycopg.errors.DeadlockDetected as exc:
            errors.append(exc)
            t2.rollback()
        thread.join(WAIT)
        assert any(isinstance(e, psycopg.errors.DeadlockDetected) for e in errors)
