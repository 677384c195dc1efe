"""Consumer groups under faults: members killed with SIGKILL, members coming and going, store restarts.

Members are real processes (confluent-kafka consumers run by this very module, see ``member()``
at the bottom) that log every assignment, every record handed to the application and every
acknowledged synchronous commit, with the system-wide monotonic clock, to a file. The tests kill
them (SIGKILL: no LeaveGroup, no last commit), stop them (SIGTERM: a clean close), start more,
restart the store under them, and then check the histories:

* **no gaps**: every produced record reached some member (at least once);
* **no going back**: no member was ever handed a record below an offset that some member had
  already committed successfully at that time (a commit is never lost or undone, and after a
  rebalance or a restart the group resumes at the committed offset);
* committed offsets, as OffsetFetch shows them to an observer, only move forward per partition;
* a dead member's partitions are taken over by the survivors (after its session timeout).

The store runs with ``--group-min-session-timeout-ms 1000`` so that members may use a 2 s session
timeout; nothing asserts on time, the timeouts only keep a broken run from hanging.
"""

from __future__ import annotations

import bisect
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.conftest import StoreFactory
from tests.support._proc import REPO_ROOT, popen
from tests.support.store import StoreProcess
from tests.support.waiting import wait_until as _wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

STORE_ARGS = ["--group-min-session-timeout-ms", "1000"]
SESSION_TIMEOUT_MS = 2000
TIMEOUT = 60.0


# -- the cluster side: topic, records, committed offsets ------------------------------------------


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def make_topic(bootstrap: str, topic: str, partitions: int, per_partition: int) -> dict[int, int]:
    """Create the topic and fill it (values ``p<partition>-<n>``); returns each partition's end offset."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    client = admin(bootstrap)  # kept referenced until the result is in
    client.create_topics([NewTopic(topic, partitions, 1)])[topic].result(TIMEOUT)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    errors: list[str] = []
    for n in range(per_partition):
        for part in range(partitions):
            p.produce(topic, value=f"p{part}-{n}".encode(), partition=part,
                      on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0 and not errors, errors[:3]
    return dict.fromkeys(range(partitions), per_partition)


def committed(client: AdminClient, group: str, topic: str, partitions: int) -> dict[int, int]:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    result = client.list_consumer_group_offsets([request], request_timeout=15)[group].result(15)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


wait_until = functools.partial(_wait_until, timeout=TIMEOUT)

class OffsetWatcher:
    """Polls the group's committed offsets in the background; each partition's must never go back."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.client = admin(bootstrap)
        self.args = (group, topic, partitions)
        self.history: dict[int, list[int]] = defaultdict(list)
        self.backwards: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="offset-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                offsets = committed(self.client, *self.args)
            except KafkaException:
                time.sleep(0.1)  # the store is restarting, or a rebalance moved nothing yet
                continue
            self.polls += 1
            for p, off in offsets.items():
                seen = self.history[p]
                if off < 0:
                    if seen:
                        self.backwards.append(f"partition {p}: committed offset {seen[-1]} disappeared")
                    continue
                if seen and off < seen[-1]:
                    self.backwards.append(f"partition {p}: committed offset went from {seen[-1]} back to {off}")
                if not seen or off != seen[-1]:
                    seen.append(off)
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


# -- member processes and their histories -------------------------------------------------------------


@dataclass
class History:
    """What one member process logged (times on the system-wide monotonic clock)."""

    name: str
    deliveries: list[tuple[float, int, int, str]] = field(default_factory=list)  # (t, partition, offset, value)
    commits: list[tuple[float, int, int]] = field(default_factory=list)  # (t, partition, next offset)
    assignments: list[tuple[float, list[int]]] = field(default_factory=list)
    failed_commits: list[str] = field(default_factory=list)
    closed: bool = False


class MemberProcess:
    """``python -m tests.e2e.test_group_faults member ...``: one confluent-kafka group member."""

    def __init__(self, bootstrap: str, group: str, topic: str, name: str, work: Path, *,
                 batch: int = 20, pause: float = 0.02) -> None:
        self.name = name
        self.out = work / f"{name}.log"
        self.err = work / f"{name}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with self.err.open("wb") as err:
            self.proc = popen(
                [sys.executable, "-m", "tests.e2e.test_group_faults", "member", bootstrap, group, topic, name,
                 str(self.out), str(SESSION_TIMEOUT_MS), str(batch), str(pause)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
            )
        self.killed_at: float | None = None
        self.stopped = False

    def history(self) -> History:
        h = History(self.name)
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return h
        lines = text.split("\n")[:-1]  # a killed member may have left half a line
        for line in lines:
            kind, t, rest = [*line.split(" ", 2), ""][:3]
            if kind == "D":
                p, o, v = rest.split(" ", 2)
                h.deliveries.append((float(t), int(p), int(o), v))
            elif kind == "C":
                for item in filter(None, rest.split(",")):
                    p, o = item.split(":")
                    h.commits.append((float(t), int(p), int(o)))
            elif kind == "A":
                h.assignments.append((float(t), [int(x) for x in rest.split(",") if x]))
            elif kind == "F":
                h.failed_commits.append(rest)
            elif kind == "X":
                h.closed = True
        return h

    def delivered(self) -> int:
        return len(self.history().deliveries)

    def assigned(self) -> list[int]:
        got = self.history().assignments
        return got[-1][1] if got else []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.killed_at = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise AssertionError(f"member {self.name} did not exit on SIGTERM: {self.stderr()}") from None
        code = self.proc.returncode
        assert code == 0, f"member {self.name} exited with {code}: {self.stderr()}"
        assert self.history().closed, f"member {self.name} did not close: {self.stderr()}"

    def stderr(self) -> str:
        try:
            return self.err.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


def check_alive(members: Sequence[MemberProcess]) -> None:
    for m in members:
        if m.killed_at is None and not m.stopped and not m.alive():
            raise AssertionError(f"member {m.name} exited with {m.proc.returncode}: {m.stderr()}")


def wait_all_committed(client: AdminClient, group: str, topic: str, ends: dict[int, int],
                       members: Sequence[MemberProcess]) -> None:
    last: dict[int, int] = {}

    def done() -> bool:
        check_alive(members)
        try:
            last.update(committed(client, group, topic, len(ends)))
        except KafkaException:
            return False
        return last == ends

    wait_until(done, lambda: f"the group to commit the log end {ends}; committed {last}", timeout=90)


def check_histories(histories: Sequence[History], ends: dict[int, int]) -> None:
    """No gaps, right values, and no record handed out below an offset already committed."""
    delivered: dict[tuple[int, int], str] = {}
    for h in histories:
        for _t, p, o, v in h.deliveries:
            assert v == f"p{p}-{o}", f"{h.name} got {v!r} at partition {p} offset {o}"
            delivered[(p, o)] = v
    missing = [(p, o) for p, end in ends.items() for o in range(end) if (p, o) not in delivered]
    assert not missing, f"{len(missing)} records never reached any member, e.g. {missing[:10]}"

    # Successful commits per partition in time order, with the highest offset committed by then.
    by_partition: dict[int, list[tuple[float, int, str]]] = defaultdict(list)
    for h in histories:
        for t, p, o in h.commits:
            by_partition[p].append((t, o, h.name))
    high: dict[int, tuple[list[float], list[tuple[int, float, str]]]] = {}
    for p, entries in by_partition.items():
        entries.sort()
        times, best = [], []
        top: tuple[int, float, str] = (-1, 0.0, "")
        for t, o, who in entries:
            if o > top[0]:
                top = (o, t, who)
            times.append(t)
            best.append(top)
        high[p] = (times, best)
    for h in histories:
        for t, p, o, _v in h.deliveries:
            times, best = high.get(p, ([], []))
            i = bisect.bisect_left(times, t)
            if i:
                c, tc, who = best[i - 1]
                assert c <= o, (
                    f"{h.name} was handed partition {p} offset {o} at {t:.3f}, after {who} had committed offset "
                    f"{c} at {tc:.3f}: a committed offset was lost or went back"
                )


def histories(members: Sequence[MemberProcess]) -> list[History]:
    return [m.history() for m in members]


@pytest.fixture
def group_store(store_factory: StoreFactory) -> StoreProcess:
    return store_factory(STORE_ARGS)


# -- tests ----------------------------------------------------------------------------------------------


def test_killed_member_partitions_move_to_the_others(group_store: StoreProcess, tmp_path: Path) -> None:
    bootstrap, topic, group, partitions = group_store.bootstrap, "kill9", "kill9-group", 6
    ends = make_topic(bootstrap, topic, partitions, per_partition=800)
    client = admin(bootstrap)
    members = [MemberProcess(bootstrap, group, topic, f"m{i}", tmp_path) for i in range(3)]
    try:
        # All three share the partitions (two each, range) and are consuming.
        wait_until(lambda: (check_alive(members), sorted(p for m in members for p in m.assigned()))[1]
                   == list(range(partitions)) and all(m.delivered() >= 20 for m in members),
                   lambda: f"three members consuming: {[(m.name, m.assigned(), m.delivered()) for m in members]}")
        victim = members[0]
        victim_partitions = victim.assigned()
        victim.kill()
        survivors = members[1:]
        # The survivors take the dead member's partitions over once its session times out.
        wait_until(lambda: (check_alive(members), set(victim_partitions)
                            <= {p for m in survivors for p in m.assigned()})[1],
                   lambda: f"survivors to own {victim_partitions}: {[(m.name, m.assigned()) for m in survivors]}")
        wait_all_committed(client, group, topic, ends, members)
        for m in survivors:
            m.stop()
    finally:
        for m in members:
            if m.alive():
                m.proc.kill()
    hs = histories(members)
    check_histories(hs, ends)
    dead, alive = hs[0], hs[1:]
    assert dead.deliveries, "the killed member consumed nothing before it died"
    assert victim.killed_at is not None
    for p in victim_partitions:
        taken_over = [o for h in alive for t, q, o, _v in h.deliveries if q == p and t > victim.killed_at]
        assert taken_over, f"no survivor consumed partition {p} after its owner was killed"
        # They resumed no lower than the dead member's last acknowledged commit (check_histories
        # holds every delivery to that) and with no gap (every record was delivered).
        last_commit = max((o for _t, q, o in dead.commits if q == p), default=0)
        assert min(taken_over) >= last_commit


def test_members_joining_and_leaving_never_lose_committed_offsets(group_store: StoreProcess, tmp_path: Path) -> None:
    bootstrap, topic, group, partitions = group_store.bootstrap, "churn", "churn-group", 4
    ends = make_topic(bootstrap, topic, partitions, per_partition=2500)
    client = admin(bootstrap)
    slow = {"batch": 20, "pause": 0.05}
    members = [MemberProcess(bootstrap, group, topic, f"m{i}", tmp_path, **slow) for i in range(2)]
    watcher = OffsetWatcher(bootstrap, group, topic, partitions)
    try:
        wait_until(lambda: (check_alive(members), all(m.delivered() > 0 for m in members))[1], "two members consuming")
        # Each round a member joins; once it consumes, an older one leaves: SIGTERM or SIGKILL in turn.
        for round_no in range(6):
            newcomer = MemberProcess(bootstrap, group, topic, f"m{len(members)}", tmp_path, **slow)
            members.append(newcomer)
            wait_until(lambda n=newcomer: (check_alive(members), n.assigned())[1],  # type: ignore[misc]
                       f"round {round_no}: {newcomer.name} to get partitions")
            leaving = next(m for m in members if m.alive() and m is not newcomer)
            if round_no % 2:
                leaving.kill()
            else:
                leaving.stop()
        wait_all_committed(client, group, topic, ends, members)
        for m in members:
            if m.alive():
                m.stop()
    finally:
        watcher.stop()
        for m in members:
            if m.alive():
                m.proc.kill()
    assert not watcher.backwards, watcher.backwards
    assert watcher.polls > 10, "the watcher hardly saw the committed offsets"
    assert all(watcher.history[p][-1] == ends[p] for p in range(partitions)), dict(watcher.history)
    check_histories(histories(members), ends)


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_store_restart_keeps_committed_offsets_and_the_group_resumes(
    store_factory: StoreFactory, tmp_path: Path, how: str
) -> None:
    store = store_factory(STORE_ARGS)
    bootstrap, topic, group, partitions = store.bootstrap, "restart", "restart-group", 4
    ends = make_topic(bootstrap, topic, partitions, per_partition=1500)
    client = admin(bootstrap)
    # An idle group with offsets only (committed by the admin client): they must survive exactly.
    idle = {0: 7, 1: 0, 3: 1499}
    request = ConsumerGroupTopicPartitions("idle-group", [TopicPartition(topic, p, o) for p, o in idle.items()])
    client.alter_consumer_group_offsets([request], request_timeout=15)["idle-group"].result(15)
    members = [MemberProcess(bootstrap, group, topic, f"m{i}", tmp_path) for i in range(2)]
    try:
        wait_until(lambda: (check_alive(members), sum(m.delivered() for m in members) >= 1000)[1],
                   "the group to consume 1000 records")
        down = time.monotonic()
        store.restart(kill=how == "kill9")
        up = time.monotonic()
        # Every commit acknowledged before the restart is still there (or a later one is).
        acked = defaultdict(int)
        for h in histories(members):
            for t, p, o in h.commits:
                if t < down:
                    acked[p] = max(acked[p], o)
        after = committed(admin(bootstrap), group, topic, partitions)
        for p, o in acked.items():
            assert after[p] >= o, f"partition {p}: commit of {o} acknowledged before the restart, {after[p]} after"
        assert {p: o for p, o in committed(admin(bootstrap), "idle-group", topic, partitions).items()
                if o >= 0} == idle
        # The members reconnect, rejoin and finish the topic.
        wait_all_committed(admin(bootstrap), group, topic, ends, members)
        for m in members:
            m.stop()
    finally:
        for m in members:
            if m.alive():
                m.proc.kill()
    hs = histories(members)
    check_histories(hs, ends)
    resumed = [(p, o) for h in hs for t, p, o, _v in h.deliveries if t > up]
    assert resumed, "no member consumed anything after the restart"
    for p in range(partitions):
        first = min((o for q, o in resumed if q == p), default=None)
        if first is not None:
            assert first >= acked[p], f"partition {p} resumed at {first}, below the acknowledged commit {acked[p]}"
    assert "--- start #2" in store.log_text()


# -- the member process -----------------------------------------------------------------------------


def member(argv: Sequence[str]) -> int:
    """Consume as one group member until SIGTERM, logging assignments, deliveries and commits."""
    bootstrap, group, topic, name, out_path, session_ms, batch, pause = argv
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - line-buffered for the whole process life

    def log(kind: str, text: str) -> None:
        out.write(f"{kind} {time.monotonic():.6f} {text}\n")

    def on_assign(_c: Any, parts: list[TopicPartition]) -> None:
        log("A", ",".join(str(tp.partition) for tp in sorted(parts, key=lambda tp: tp.partition)))

    def on_revoke(_c: Any, parts: list[TopicPartition]) -> None:
        log("R", ",".join(str(tp.partition) for tp in parts))

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "partition.assignment.strategy": "range",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(session_ms),
        "heartbeat.interval.ms": 250,
        "max.poll.interval.ms": 20_000,
        # small fetches and queues: what is handed out follows what is fetched closely
        "max.partition.fetch.bytes": 16 * 1024,
        "queued.max.messages.kbytes": 256,
        "reconnect.backoff.max.ms": 500,
    })
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    while not stop.is_set():
        msgs = consumer.consume(int(batch), 0.2)
        for m in msgs:
            if m.error() is not None:
                log("E", str(m.error()))
                continue
            log("D", f"{m.partition()} {m.offset()} {m.value().decode()}")
        if any(m.error() is None for m in msgs):
            try:
                done = consumer.commit(asynchronous=False)
            except KafkaException as exc:  # a rebalance or a restart under us: redelivered later
                log("F", str(exc.args[0]))
            else:
                log("C", ",".join(f"{tp.partition}:{tp.offset}" for tp in done or ()
                                  if tp.error is None and tp.offset >= 0))
        time.sleep(float(pause))
    consumer.close()
    log("X", "closed")
    out.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["member"]:
        raise SystemExit(member(sys.argv[2:]))
    raise SystemExit("usage: python -m tests.e2e.test_group_faults member BOOTSTRAP GROUP TOPIC NAME OUT "
                     "SESSION_MS BATCH PAUSE")
