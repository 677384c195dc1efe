"""The relay under real faults, as real processes: kill -9, a store outage, a PostgreSQL restart,
failover between relays, a fenced relay, a lost doorbell, SIGTERM — and the same crash test on
Apache Kafka.

Every test checks G1-G3 on what a real consumer reads back (``_relay_traffic.check_delivery``):
every committed event is in the log (duplicates allowed, each copy with its original event id),
no rolled-back one is, and per key the first occurrences are in commit order on one partition.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import StoreFactory
from tests.e2e._relay_traffic import (
    Writers,
    check_delivery,
    ids_in_outbox,
    outbox_ids,
    outbox_rows,
    prepare_database,
    wait_drained,
)
from tests.support._proc import REPO_ROOT, log_tail
from tests.support.postgres import PostgresServer, ShutdownMode
from tests.support.relay import RelayProcess
from tests.support.store import StoreProcess
from tests.support.waiting import wait_until

KEYS = [f"k{i:02d}" for i in range(20)]
BUCKETS = 64

RelayFactory = Callable[..., RelayProcess]


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[RelayFactory]:
    """``relays(dsn, bootstrap, name=..., extra=[...])``: relay processes, stopped after the test.

    Their log tails are printed at teardown (pytest shows them when the test failed).
    """
    made: list[RelayProcess] = []

    def make(dsn: str, bootstrap: str, *, name: str = "r1", extra: list[str] | None = None) -> RelayProcess:
        args = ["--batch-size", "100", *(extra or [])]
        relay = RelayProcess(dsn, bootstrap, name=name, extra_args=args, work_dir=tmp_path / f"relay-{name}")
        made.append(relay)
        return relay

    yield make
    for relay in made:
        try:
            relay.cleanup()
        finally:
            print(f"--- relay {relay.name} log ({relay.log_path}):\n{log_tail(relay.log_path, 6000)}")


@pytest.fixture
def store4(store_factory: StoreFactory) -> StoreProcess:
    """A store whose auto-created topics have 4 partitions (so per-key partitioning is visible)."""
    return store_factory(["--default-partitions", "4"])


def _topic() -> str:
    return f"relay-e2e-{uuid.uuid4().hex[:8]}"


def _status(dsn: str) -> dict[str, Any]:
    """``outbox status --json``, as an operator runs it."""
    out = subprocess.run(
        [sys.executable, "-m", "outbox.cli", "status", "--database-url", dsn, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO_ROOT,
    )
    assert out.returncode in (0, 3), out.stderr
    status: dict[str, Any] = json.loads(out.stdout)
    return status


def _owners(dsn: str) -> Counter[str | None]:
    """Buckets per owner (None: no owner), from the status board and pg_locks."""
    return Counter(b["owner"] for b in _status(dsn)["bucket_status"])


def _wait_connects(relay: RelayProcess, n: int, what: str, timeout: float = 30.0) -> None:
    """Wait until the relay's log says it connected (to PostgreSQL) ``n`` times in all."""
    wait_until(lambda: relay.log_text().count("connected (backend pid") >= n, what, timeout=timeout)


CRASH_POINTS = "relay.after_send:0.05,relay.before_delete:0.05,relay.after_delete:0.05"


def _supervise(relay: RelayProcess, seconds: float) -> int:
    """Restart the relay whenever it dies, for ``seconds``; return how many times it died."""
    deaths = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not relay.is_running():
            deaths += 1
            relay.start()
        time.sleep(0.05)
    return deaths


def _crash_loop(relay: RelayProcess, rng: random.Random, kills: int, *, alternate_producers: bool = False) -> None:
    """kill -9 the relay ``kills`` times at random moments, restarting it each time."""
    for i in range(kills):
        time.sleep(rng.uniform(0.3, 1.5))
        relay.kill()
        time.sleep(rng.uniform(0.0, 0.4))
        if alternate_producers:
            # The other client on every restart: both must map a key to the same partition.
            producer = ("kafka-python", "confluent")[i % 2]
            relay.extra_args = [a for a in relay.extra_args if a not in ("--producer", "kafka-python", "confluent")]
            relay.extra_args += ["--producer", producer]
        relay.start()


# -- 1. G2: kill -9 the relay repeatedly --------------------------------------------------------


def test_relay_kill9_repeatedly_loses_nothing_and_keeps_key_order(
    database_url: str, store4: StoreProcess, relays: RelayFactory, rng: random.Random
) -> None:
    topic = _topic()
    prepare_database(database_url, KEYS)
    relay = relays(database_url, store4.bootstrap).start()
    writers = Writers(database_url, topic, KEYS, seed=rng.randrange(1 << 30)).start()
    try:
        writers.wait_committed(200)
        _crash_loop(relay, rng, kills=3, alternate_producers=True)
        # Then at the worst moments: the relay's own crash points (SIGKILL after sending, between
        # the acks and the delete, after the delete), restarted each time it dies.
        relay.env["OUTBOX_CRASH_POINTS"] = CRASH_POINTS
        relay.kill()
        relay.start()
        crashes = _supervise(relay, seconds=3.0)
        assert crashes >= 2, f"the crash points fired {crashes} time(s): the worst moments went untested"
        relay.env.pop("OUTBOX_CRASH_POINTS")
        relay.kill()
        relay.start()
    finally:
        writers.stop()
    wait_drained(database_url, 60, "after the last restart")
    delivery = check_delivery(store4.bootstrap, topic, database_url, writers)
    assert writers.rolled_back, "the test rolled nothing back (G1 went unchecked)"
    assert len(set(delivery.partitions.values())) > 1, "every key landed on one partition: partitioning unchecked"
    print(f"{delivery.expected} events, {delivery.duplicates} duplicate(s), {len(writers.rolled_back)} rolled back")


# -- 2. G2: the store goes away (SIGTERM, then kill -9) and comes back on the same port -----------


def test_store_outage_keeps_unacknowledged_rows_and_delivers_everything(
    database_url: str, store4: StoreProcess, relays: RelayFactory, rng: random.Random
) -> None:
    topic = _topic()
    prepare_database(database_url, KEYS)
    # A short delivery timeout, so that the outage makes rounds fail (and be retried) in the relay.
    relay = relays(database_url, store4.bootstrap, extra=["--delivery-timeout-ms", "1500"]).start()
    writers = Writers(database_url, topic, KEYS, seed=rng.randrange(1 << 30)).start()
    try:
        writers.wait_committed(150)
        for crash in (False, True):
            if crash:
                store4.kill()
            else:
                store4.stop()
            down_since = time.monotonic()
            # Acknowledgements that came before the store went down are deleted within the delivery
            # timeout; every row left after that was never acknowledged and must stay.
            time.sleep(3.0)
            stranded = outbox_ids(database_url)
            time.sleep(rng.uniform(1.0, 2.0))
            during = writers.committed_ids(began_after=down_since)
            assert during, "the writers committed nothing during the outage"
            assert stranded, "no row was waiting when the store went down"
            kept = ids_in_outbox(database_url, stranded | during)
            lost = (stranded | during) - kept
            assert not lost, f"{len(lost)} unacknowledged event(s) deleted from the outbox during the store outage"
            assert relay.is_running(), "the relay died during the store outage"
            store4.start()
            n = writers.committed
            writers.wait_committed(n + 100)
    finally:
        writers.stop()
    wait_drained(database_url, 60, "after the store came back")
    check_delivery(store4.bootstrap, topic, database_url, writers)
    assert "not acknowledged" in relay.log_text(), "the relay never reported (and retried) a failed round"


def test_store_crash_quick_restart_and_sigterm_with_a_stuck_batch(
    database_url: str, store4: StoreProcess, relays: RelayFactory, rng: random.Random
) -> None:
    """kill -9 of the store, back within a second: the producer's own retries (idempotent, across a
    store that lost its in-memory producer state) must neither lose nor reorder anything. Then a
    SIGTERM while the store is down: the stuck batch is abandoned safely."""
    topic = _topic()
    prepare_database(database_url, KEYS)
    relay = relays(database_url, store4.bootstrap).start()  # default delivery timeout (30 s)
    writers = Writers(database_url, topic, KEYS, seed=rng.randrange(1 << 30)).start()
    try:
        writers.wait_committed(150)
        for _ in range(2):
            time.sleep(rng.uniform(0.3, 1.0))
            store4.kill()
            time.sleep(rng.uniform(0.0, 0.5))
            store4.start()
        writers.wait_committed(writers.committed + 100)
        assert relay.is_running()
        # SIGTERM while a round waits for a dead store: the batch is abandoned after the shutdown
        # grace (10 s), its rows stay, and the relay still exits 0.
        store4.kill()
        time.sleep(1.0)
        started = time.monotonic()
        code = relay.stop(timeout=30)
        took = time.monotonic() - started
        assert code == 0, f"the relay exited with {code} on SIGTERM"
        assert took < 20, f"the relay took {took:.1f} s to stop with its batch stuck"
        assert "abandoned" in relay.log_text(), "the relay had no batch in hand: the abandon path went untested"
        assert outbox_rows(database_url) > 0
        store4.start()
        relay.start()
        writers.wait_committed(writers.committed + 100)
    finally:
        writers.stop()
    wait_drained(database_url, 60, "after the store crashes")
    check_delivery(store4.bootstrap, topic, database_url, writers)


# -- 3. G2: PostgreSQL restarts (fast, then immediate: crash recovery) under a running relay -------


def test_postgres_restart_under_running_relay(
    private_postgres: PostgresServer, store4: StoreProcess, relays: RelayFactory, rng: random.Random
) -> None:
    topic = _topic()
    dsn = private_postgres.create_database("outbox_e2e")
    prepare_database(dsn, KEYS)
    relay = relays(dsn, store4.bootstrap).start()
    writers = Writers(dsn, topic, KEYS, seed=rng.randrange(1 << 30)).start()
    try:
        writers.wait_committed(150)
        modes: tuple[ShutdownMode, ...] = ("fast", "immediate")
        for i, mode in enumerate(modes, start=2):
            private_postgres.stop(mode)
            time.sleep(rng.uniform(1.0, 2.0))
            private_postgres.start()
            n = writers.committed
            writers.wait_committed(n + 150, timeout=60)
            _wait_connects(relay, i, f"the relay to reconnect after the {mode} restart")
    finally:
        writers.stop()
    assert relay.is_running(), "the relay died when PostgreSQL restarted"
    wait_drained(dsn, 60, "after the restarts")
    check_delivery(store4.bootstrap, topic, dsn, writers)
    assert "database connection lost" in relay.log_text()
    assert writers.errors, "the writers never saw the restarts (did PostgreSQL really stop?)"


# -- 4. Failover: bucket sharing, kill -9 of an owner, rebalancing with a third relay -------------


def test_failover_between_relays_and_rebalancing(
    database_url: str, store4: StoreProcess, relays: RelayFactory, rng: random.Random
) -> None:
    topic = _topic()
    prepare_database(database_url, KEYS)
    a = relays(database_url, store4.bootstrap, name="a").start()
    b = relays(database_url, store4.bootstrap, name="b").start()
    _wait_owners(database_url, {"a": 32, "b": 32}, "two relays to share the 64 buckets")
    writers = Writers(database_url, topic, KEYS, seed=rng.randrange(1 << 30)).start()
    try:
        writers.wait_committed(150)
        a.kill()
        _wait_owners(database_url, {"b": 64}, "the survivor to take every bucket after kill -9", timeout=15)
        writers.wait_committed(writers.committed + 150)
        c = relays(database_url, store4.bootstrap, name="c").start()
        _wait_owners(database_url, {"b": 32, "c": 32}, "a new relay to get half of the buckets")
        writers.wait_committed(writers.committed + 150)
        a.start()
        owners = _wait_owners(database_url, None, "three relays to share the buckets", balanced_among=3)
        assert set(owners) == {"a", "b", "c"}, owners
        writers.wait_committed(writers.committed + 100)
    finally:
        writers.stop()
    wait_drained(database_url, 60, "after the failover")
    check_delivery(store4.bootstrap, topic, database_url, writers)
    status = _status(database_url)
    assert {r["name"] for r in status["relays"] if r["alive"]} == {"a", "b", "c"}
    assert status["orphaned_buckets"] == []
    assert b.is_running() and c.is_running()


def _wait_owners(
    dsn: str, want: dict[str, int] | None, what: str, *, timeout: float = 20.0, balanced_among: int = 0
) -> Counter[str | None]:
    """Wait until bucket owners are exactly ``want`` (or ``balanced_among`` relays hold ~64/n each)."""
    seen: list[Counter[str | None]] = [Counter()]

    def ok() -> bool:
        seen[0] = owners = _owners(dsn)
        if want is not None:
            return owners == Counter(want)
        target = -(-BUCKETS // balanced_among)
        return (
            None not in owners
            and len(owners) == balanced_among
            and all(target - balanced_among <= n <= target for n in owners.values())
        )

    wait_until(ok, lambda: f"{what}; bucket owners now {dict(seen[0])}", timeout=timeout, interval=0.3)
    return seen[0]


# -- 5. Fencing: a relay whose session is terminated (or that freezes) cannot break order --------


def _terminate_session(dsn: str, relay: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"outbox-relay {relay}",),
        ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def test_fenced_relay_loses_nothing_and_keeps_key_order(
    database_url: str, store4: StoreProcess, relays: RelayFactory, rng: random.Random
) -> None:
    topic = _topic()
    prepare_database(database_url, KEYS)
    a = relays(database_url, store4.bootstrap, name="a").start()
    relays(database_url, store4.bootstrap, name="b").start()
    _wait_owners(database_url, {"a": 32, "b": 32}, "two relays to share the 64 buckets")
    writers = Writers(database_url, topic, KEYS, seed=rng.randrange(1 << 30)).start()
    try:
        writers.wait_committed(150)
        connects = 1
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 1.0))
            assert _terminate_session(database_url, "a") == 1, "relay a has no session to terminate"
            connects += 1
            _wait_connects(a, connects, "relay a to reconnect after its session was terminated")
        # A zombie: a frozen while it owns buckets (perhaps holding a claimed batch), its session
        # ends, b takes everything and publishes on; then a wakes up with its stale batch.
        _wait_owners(database_url, {"a": 32, "b": 32}, "a to get its share back")
        time.sleep(rng.uniform(0.0, 0.3))
        a.pause()
        try:
            assert _terminate_session(database_url, "a") == 1
            _wait_owners(database_url, {"b": 64}, "b to take a's buckets while a is frozen", timeout=15)
            writers.wait_committed(writers.committed + 150)
        finally:
            a.resume()
        _wait_connects(a, connects + 1, "the woken relay a to reconnect")
        writers.wait_committed(writers.committed + 100)
    finally:
        writers.stop()
    wait_drained(database_url, 60, "after the fencing")
    check_delivery(store4.bootstrap, topic, database_url, writers)
    assert "database connection lost" in a.log_text()


# -- 6. Lost doorbell: the fallback poll, and a full scan when a relay (re)connects -------------


def test_lost_doorbell_fallback_poll_and_scan_on_start(
    database_url: str, store4: StoreProcess, relays: RelayFactory, rng: random.Random
) -> None:
    topic = _topic()
    prepare_database(database_url, KEYS)
    relay = relays(database_url, store4.bootstrap, extra=["--poll-interval-ms", "500"]).start()
    writers = Writers(database_url, topic, KEYS, seed=rng.randrange(1 << 30))
    writers.backlog(1)
    wait_drained(database_url, 15, "the warm-up events")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE outbox.events DISABLE TRIGGER events_doorbell")
    for _ in range(3):
        time.sleep(rng.uniform(0.3, 1.0))  # the relay is idle: armed and asleep
        writers.backlog(1)
        # The poll interval (0.5 s) plus a generous margin: no notification can come.
        wait_drained(database_url, 5, "an event published without a doorbell")
    relay.stop()
    writers.backlog(5)  # no relay runs; nothing will ring
    status = subprocess.run(
        [sys.executable, "-m", "outbox.cli", "status", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO_ROOT,
    )
    assert status.returncode == 3, f"outbox status should exit 3 (events, no owner):\n{status.stdout}{status.stderr}"
    relay.start()
    wait_drained(database_url, 10, "events published while no relay ran")
    delivery = check_delivery(store4.bootstrap, topic, database_url, writers)
    assert delivery.duplicates == 0, "clean stops and starts duplicated events"
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'events_doorbell' AND tgrelid = 'outbox.events'::regclass"
        ).fetchone()
    assert row == ("D",), "the doorbell trigger was not disabled: the test proved nothing"


# -- 7. The scale-out path: the crash test against Apache Kafka ---------------------------------


def test_relay_kill9_on_apache_kafka(
    database_url: str, kafka_broker: Any, relays: RelayFactory, rng: random.Random
) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = _topic()
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        admin.close()
    prepare_database(database_url, KEYS)
    relay = relays(database_url, kafka_broker.bootstrap).start()  # nothing but --bootstrap-servers differs
    writers = Writers(database_url, topic, KEYS, seed=rng.randrange(1 << 30)).start()
    try:
        writers.wait_committed(150)
        _crash_loop(relay, rng, kills=3)
    finally:
        writers.stop()
    wait_drained(database_url, 60, "after the last restart")
    delivery = check_delivery(kafka_broker.bootstrap, topic, database_url, writers)
    assert len(set(delivery.partitions.values())) > 1


# -- 8. SIGTERM: a prompt, clean exit while busy, and nothing lost ------------------------------


def test_sigterm_while_busy_exits_cleanly(
    database_url: str, store4: StoreProcess, relays: RelayFactory, rng: random.Random
) -> None:
    topic = _topic()
    prepare_database(database_url, KEYS)
    writers = Writers(database_url, topic, KEYS, seed=rng.randrange(1 << 30))
    writers.backlog(1000)  # 20,000 events, drained 100 per round
    relay = relays(database_url, store4.bootstrap).start()
    writers.start()
    try:
        wait_until(lambda: outbox_rows(database_url) < 19_000, "the relay to start draining", timeout=30)
        time.sleep(rng.uniform(0.0, 0.5))
        started = time.monotonic()
        code = relay.stop(timeout=30)
        took = time.monotonic() - started
        assert code == 0, f"the relay exited with {code} on SIGTERM"
        assert took < 12, f"the relay took {took:.1f} s to stop on SIGTERM"
        left = outbox_rows(database_url)
        assert left > 0, "the relay was not busy when SIGTERM came (nothing left): the test proved nothing"
        with psycopg.connect(database_url, autocommit=True) as conn:
            board = [r[0] for r in conn.execute("SELECT name FROM outbox.events_relays").fetchall()]
        assert board == [], f"the stopped relay is still on the status board: {board}"
        writers.wait_committed(writers.committed + 50)
        relay.start()
        writers.wait_committed(writers.committed + 50)
    finally:
        writers.stop()
    wait_drained(database_url, 90, "after the restart")
    check_delivery(store4.bootstrap, topic, database_url, writers, timeout=60)
