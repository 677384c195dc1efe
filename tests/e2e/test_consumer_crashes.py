"""G5 under faults: two consumer processes in one group (one sync, one asyncio), kill -9 at random
points — inside the handler, right after a commit, mid-rebalance — over several rounds while
events (with duplicates) flow: every event's effect is applied exactly once, per key in log order.
Against the built-in store and Apache Kafka.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.integration.consumers._support import EFFECTS_DDL, create_topic, effects, make_events, producer, relay_record
from tests.support._proc import REPO_ROOT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


@dataclass
class Target:
    name: str
    bootstrap: str
    session_timeout_ms: int
    rounds: int


@pytest.fixture(params=["store", pytest.param("kafka", marks=pytest.mark.kafka)])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        return Target("kafka", broker.bootstrap, 6000, 1)  # Kafka's group.min.session.timeout.ms is 6 s
    store = request.getfixturevalue("store_factory")(["--group-min-session-timeout-ms", "1000"])
    return Target("store", store.bootstrap, 1500, 4)


class Member:
    def __init__(self, name: str, mode: str, args: list[str], log_dir: Path) -> None:
        self.name, self.mode, self.args = name, mode, args
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.starts += 1
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.consumers._worker", "--member", self.name,
                 "--mode", self.mode, *self.args],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> int | None:
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.mark.parametrize("clients", ["kafka-python", "mixed"])
def test_kill_9_members_at_random_points_every_effect_exactly_once_in_key_order(
    clients: str, target: Target, database_url: str, rng: random.Random, tmp_path: Path
) -> None:
    """``mixed``: the sync member uses the confluent-kafka client, the async one kafka-python (one group)."""
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    create_topic(target.bootstrap, topic, 4)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)
    keys = [f"k{i}" for i in range(12)]
    events = make_events(topic, keys, 60)  # 720 events, n = 0..59 per key
    common = [
        "--bootstrap", target.bootstrap, "--database-url", database_url, "--topic", topic,
        "--group", f"g-{topic}", "--session-timeout-ms", str(target.session_timeout_ms),
        "--die-in-handler", "0.004", "--die-after-commit", "0.08", "--max-batch", "40",
    ]  # fmt: skip
    first_client = ["--client", "confluent"] if clients == "mixed" else []
    members = [Member("a-sync", "sync", [*common, *first_client], tmp_path), Member("b-async", "async", common, tmp_path)]

    # Events flow while members die: chunks with pauses, and ~10% re-sent later (relay duplicates).
    produced_dups: list[uuid.UUID] = []

    def produce_all() -> None:
        p = producer(target.bootstrap)
        try:
            for start in range(0, len(events), 60):
                chunk = events[start : start + 60]
                for e in chunk:
                    p.send(topic, **relay_record(e))
                for e in rng.sample(events[: start + len(chunk)], 6):
                    p.send(topic, **relay_record(e))
                    produced_dups.append(e.id)
                p.flush()
                time.sleep(0.25)
        finally:
            p.close()

    for m in members:
        m.start()
    feeder = threading.Thread(target=produce_all)
    feeder.start()
    try:
        for _ in range(target.rounds):
            time.sleep(rng.uniform(0.3, 1.5))
            first, second = rng.sample(members, 2)
            first.kill()
            first.start()  # its join starts a rebalance ...
            time.sleep(rng.uniform(0.0, 0.5))
            second.kill()  # ... during which the other one dies
            second.start()
            for m in members:  # self-kills (in the handler, after a commit) are restarted too
                if not m.alive():
                    m.start()
        feeder.join()

        def all_applied() -> bool:
            for m in members:
                if not m.alive():
                    m.start()
            return len(effects(database_url)) >= len(events)

        wait_until(
            all_applied, lambda: f"{len(effects(database_url))} of {len(events)} effects", timeout=120, interval=0.5
        )
        time.sleep(1.0)  # a duplicate effect, if any, would land now
    finally:
        feeder.join()
        codes = {m.name: m.terminate() for m in members}
    rows = effects(database_url)
    by_id = defaultdict(int)
    for event_id, _, _ in rows:
        by_id[event_id] += 1
    assert {e.id for e in events} == set(by_id), "every event applied"
    assert [i for i, c in by_id.items() if c > 1] == [], "no event applied twice"
    per_key: dict[str, list[int]] = defaultdict(list)
    for _, key, n in rows:
        per_key[key].append(n)
    assert all(per_key[k] == list(range(60)) for k in keys), "per key, effects in log order"
    assert produced_dups, "the log held duplicates"
    assert sum(m.starts for m in members) >= 2 + 2 * target.rounds, "members were killed and restarted"
    assert codes == {"a-sync": 0, "b-async": 0}, "SIGTERM stops members cleanly"
