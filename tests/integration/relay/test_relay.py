"""The relay against real PostgreSQL and the real store: G1, G3, the record format, operations."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from kafka.partitioner.default import murmur2

from outbox import Event, grant, publish
from tests.integration.relay.conftest import RelayRunner
from tests.support._proc import REPO_ROOT
from tests.support.store import StoreProcess
from tests.support.topics import first_occurrences, read_topic
from tests.support.waiting import wait_until


def _backlog(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM outbox.events").fetchone()
        assert row is not None
        return int(row[0])


def _drained(url: str, relay: Any, at_least: int, timeout: float = 60) -> None:
    wait_until(
        lambda: relay.published >= at_least and _backlog(url) == 0,
        timeout=timeout,
        what=f"the relay did not publish {at_least} events",
    )


def test_committed_events_are_published_and_rolled_back_ones_never(
    outbox_url: str, store_factory: Any, run_relay: RelayRunner
) -> None:
    store: StoreProcess = store_factory(extra_args=["--default-partitions", "3"])
    committed: list[str] = []
    rolled_back: list[str] = []
    with psycopg.connect(outbox_url) as conn, run_relay(store.bootstrap) as relay:
        for i in range(300):
            event = Event(topic="g1", key=f"k{i % 7}", type="t", payload={"i": i})
            if i % 3 == 0:
                with pytest.raises(RuntimeError), conn.transaction():
                    publish(conn, event)
                    raise RuntimeError("the business logic failed")
                rolled_back.append(str(event.id))
            else:
                with conn.transaction():
                    publish(conn, event)
                committed.append(str(event.id))
        _drained(outbox_url, relay, len(committed))
    records = read_topic(store.bootstrap, "g1", min_records=len(committed))
    ids = [r.event_id for r in records]
    assert set(ids) == set(committed)
    assert not set(ids) & set(rolled_back)


def test_per_key_commit_order_with_concurrent_writers(
    outbox_url: str, store_factory: Any, run_relay: RelayRunner
) -> None:
    """Each writer takes a per-key counter row lock in its transaction: the counter value is the
    key's commit order, witnessed independently of the outbox. The log must follow it."""
    store: StoreProcess = store_factory(extra_args=["--default-partitions", "4"])
    keys = [f"key-{i}" for i in range(8)]
    with psycopg.connect(outbox_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE counters (key text PRIMARY KEY, n integer NOT NULL)")
        conn.execute("INSERT INTO counters SELECT k, 0 FROM unnest(%s::text[]) k", (keys,))
    total = {"n": 0}
    lock = threading.Lock()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(outbox_url) as conn:
            for _ in range(60):
                chosen = sorted(rng.sample(keys, rng.randint(1, 3)))
                with conn.transaction():
                    events = []
                    for key in chosen:
                        row = conn.execute(
                            "UPDATE counters SET n = n + 1 WHERE key = %s RETURNING n", (key,)
                        ).fetchone()
                        assert row is not None
                        events.append(Event(topic="order", key=key, type="t", payload={"key": key, "n": row[0]}))
                    publish(conn, events)
                    if rng.random() < 0.1:
                        time.sleep(0.002)  # hold the key locks a little: late commits with small ids
                with lock:
                    total["n"] += len(events)

    with run_relay(store.bootstrap, batch_size=50) as relay:
        threads = [threading.Thread(target=writer, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        _drained(outbox_url, relay, total["n"])
    records = first_occurrences(read_topic(store.bootstrap, "order", min_records=total["n"]))
    assert len(records) == total["n"]
    by_key: dict[str, list[tuple[int, int]]] = {}
    for r in records:
        payload = json.loads(r.value)
        by_key.setdefault(payload["key"], []).append((r.partition, payload["n"]))
    for key, seen in by_key.items():
        assert len({p for p, _ in seen}) == 1, f"{key} is on several partitions"
        numbers = [n for _, n in seen]
        assert numbers == list(range(1, len(numbers) + 1)), f"{key} out of commit order: {numbers[:20]}"


@pytest.mark.parametrize("producer", ["confluent", "kafka-python"])
def test_record_format_and_partitioner(
    outbox_url: str, store_factory: Any, run_relay: RelayRunner, producer: str
) -> None:
    store: StoreProcess = store_factory(extra_args=["--default-partitions", "5"])
    created = datetime(2026, 5, 4, 3, 2, 1, 123000, tzinfo=UTC)
    events = [
        Event(
            topic="fmt",
            key=f"customer-{i}",
            type="order.placed",
            payload={"total": i, "ü": "é"},
            headers={"trace-id": f"t{i}"},
            created_at=created,
        )
        for i in range(20)
    ] + [Event(topic="fmt", key=None, type="ping", payload=[1, None, "x"])]
    with psycopg.connect(outbox_url) as conn, run_relay(store.bootstrap, producer=producer) as relay:
        with conn.transaction():
            publish(conn, events)
        _drained(outbox_url, relay, len(events))
    records = {r.event_id: r for r in read_topic(store.bootstrap, "fmt", min_records=len(events))}
    assert len(records) == len(events)
    for event in events:
        r = records[str(event.id)]
        assert r.value == event.payload_json()
        assert r.headers["event-type"] == event.type.encode()
        assert r.headers["content-type"] == b"application/json"
        if event.key is None:
            assert r.key is None
            continue
        assert r.key == event.key.encode()
        assert r.headers["trace-id"] == event.headers["trace-id"].encode()
        assert r.timestamp == int(created.timestamp() * 1000)
        # The Java client's partitioner: murmur2(key) & 0x7fffffff mod partitions.
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 5


def test_the_doorbell_wakes_a_sleeping_relay(outbox_url: str, store: StoreProcess, run_relay: RelayRunner) -> None:
    """With a 60 s fallback poll, only a notification can deliver an event within seconds."""
    with (
        psycopg.connect(outbox_url) as conn,
        run_relay(
            store.bootstrap, poll_interval=60, rebalance_interval=60, heartbeat_interval=60, backlog_interval=60
        ) as relay,
    ):
        wait_until(lambda: len(relay.owned) == 64, timeout=10, what="the relay took no buckets")
        for i in range(3):
            time.sleep(0.3)  # let it linger out and fall asleep
            with conn.transaction():
                publish(conn, Event(topic="bell", key="k", type="t", payload=i))
            wait_until(lambda n=i + 1: relay.published >= n, timeout=10, what="no wake-up by NOTIFY")
        assert relay.metrics.wakeups.labels("notify")._value.get() >= 1


def test_least_privilege_relay_role(outbox_url: str, store: StoreProcess, run_relay: RelayRunner) -> None:
    role = f"relay_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(outbox_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
        grant(conn, relay_role=role)
        with conn.transaction():
            publish(conn, Event(topic="priv", key="k", type="t", payload={}))
    info = psycopg.conninfo.conninfo_to_dict(outbox_url)
    info.update(user=role, password="pw")
    relay_url = psycopg.conninfo.make_conninfo(**info)
    with run_relay(store.bootstrap, database_url=relay_url) as relay:
        _drained(outbox_url, relay, 1)
        wait_until(lambda: _board(outbox_url), timeout=10, what="no heartbeat on the status board")


def _board(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT name, published FROM outbox.events_relays").fetchall()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outbox.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )


def test_status_command_and_metrics(outbox_url: str, store: StoreProcess, run_relay: RelayRunner) -> None:
    with psycopg.connect(outbox_url) as conn, conn.transaction():
        publish(conn, [Event(topic="st", key=f"k{i}", type="t", payload=i) for i in range(10)])
    before = _cli("status", "--database-url", outbox_url, "--json")
    assert before.returncode == 3, before.stderr  # events waiting, no relay owns their buckets
    report = json.loads(before.stdout)
    assert report["backlog"] == 10 and report["relays"] == [] and len(report["orphaned_buckets"]) == 64
    with run_relay(
        store.bootstrap,
        name="status-relay",
        metrics_port=0,
        metrics_host="127.0.0.1",
        heartbeat_interval=0.2,
        backlog_interval=0.2,
    ) as relay:
        _drained(outbox_url, relay, 10)
        wait_until(lambda: any(p == 10 for _, p in _board(outbox_url)), timeout=10, what="no heartbeat")
        during = _cli("status", "--database-url", outbox_url)
        assert during.returncode == 0, during.stderr
        assert "0 event(s) waiting" in during.stdout
        assert "relay status-relay [alive]" in during.stdout and "64 bucket(s) 0-63" in during.stdout
        assert relay.metrics_port is not None
        body = urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics_port}/metrics", timeout=10).read().decode()
        assert "outbox_relay_published_total 10.0" in body
        assert "outbox_relay_owned_buckets 64.0" in body
        assert "outbox_relay_event_latency_seconds_bucket" in body
    after = json.loads(_cli("status", "--database-url", outbox_url, "--json").stdout)
    assert after["relays"] == []  # a clean stop leaves the board


def test_relay_without_outbox_table_says_what_to_do(database_url: str, store: StoreProcess) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "outbox.cli",
            "relay",
            "--database-url",
            database_url,
            "--bootstrap-servers",
            store.bootstrap,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "outbox db migrate" in result.stderr


def test_bad_flags_are_rejected_before_connecting() -> None:
    result = _cli(
        "relay", "--database-url", "postgresql://nowhere/x", "--bootstrap-servers", "h:1", "--batch-size", "0"
    )
    assert result.returncode == 2 and "batch_size must be" in result.stderr
    result = _cli(
        "relay",
        "--database-url",
        "postgresql://nowhere/x",
        "--bootstrap-servers",
        "h:1",
        "--producer-option",
        "novalue",
    )
    assert result.returncode != 0 and "KEY=VALUE" in result.stderr


def test_heartbeat_stays_fresh_while_a_batch_waits_for_a_dead_broker(
    outbox_url: str, store: StoreProcess, run_relay: RelayRunner
) -> None:
    """A broker outage blocks the batch in hand (no delivery timeout), not the relay's liveness."""
    with run_relay(store.bootstrap, name="patient", heartbeat_interval=0.2) as relay:
        with psycopg.connect(outbox_url) as conn, conn.transaction():
            publish(conn, Event(topic="hb", key="k", type="t", payload=0))
        _drained(outbox_url, relay, 1)
        store.stop()
        with psycopg.connect(outbox_url) as conn, conn.transaction():
            publish(conn, Event(topic="hb", key="k", type="t", payload=1))
        time.sleep(3)
        with psycopg.connect(outbox_url) as conn:
            row = conn.execute(
                "SELECT extract(epoch FROM now() - heartbeat_at) FROM outbox.events_relays WHERE name = 'patient'"
            ).fetchone()
        assert row is not None and float(row[0]) < 1.5, f"heartbeat is {row} s old while the broker is down"
        assert _backlog(outbox_url) == 1  # the unacknowledged event stays
        store.start()
        _drained(outbox_url, relay, 2)
