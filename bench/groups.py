"""Consumer-group benchmark: the store's group coordinator against Apache Kafka's.

Run from the repo root: ``.venv/bin/python bench/groups.py [--quick] [--only store,kafka]``.
It prints figures and never asserts on time. Every consumer is a confluent-kafka (librdkafka)
consumer in its own process, ``partition.assignment.strategy=range``, no auto-commit: each
``consume()`` batch is followed by ``commit(asynchronous=False)``.

Phases per system, on one topic of ``--partitions`` partitions pre-filled with ``--messages``
1 KiB incompressible records (produced first, not timed):

  join      one consumer subscribes to a fresh group, ``--join-trials`` times: time from
            ``subscribe()`` to the assignment callback, with each broker's *default* initial
            rebalance delay (store: 100 ms; Kafka: ``group.initial.rebalance.delay.ms`` 3000 ms)
  consume   a 3-member group (3 processes subscribing at the same moment) reads the whole topic;
            records/s of the group from its first delivered record to its last; also each
            member's subscribe-to-assignment time
  failover  a fresh 3-member group consumes at a throttled rate (so the topic outlasts the phase);
            one member is SIGKILLed; time from the kill until a record of one of its partitions
            is handed to a surviving member (session.timeout.ms 6000, the smallest both accept by
            default; heartbeat.interval.ms 1000)
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
# Run as a script, Python puts bench/ first on sys.path, where bench/streams.py would shadow the
# ``streams`` package; the repo root goes there instead (``bench.*`` and ``tests.support.*``).
sys.path[:] = [str(_REPO), *(p for p in sys.path if Path(p or ".").resolve() != _REPO / "bench")]

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import queue  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from bench._util import MSG_SIZE, BenchError, log, run_workers  # noqa: E402

KAFKA_VERSION = "4.2.0"
TARGET_RATE = 500_000
TARGET_JOIN_MS = 500.0
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_MS = 1000
MEMBERS = 3

_GROUP_CONSUMER: dict[str, Any] = {
    "partition.assignment.strategy": "range",
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    "session.timeout.ms": SESSION_TIMEOUT_MS,
    "heartbeat.interval.ms": HEARTBEAT_MS,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
    "fetch.wait.max.ms": 100,
    "queued.max.messages.kbytes": 128 * 1024,
    "socket.nagle.disable": True,
}


@dataclass
class Settings:
    messages: int
    partitions: int
    join_trials: int
    failover_seconds: float
    work_dir: Path
    store_args: list[str]
    own_work_dir: bool = True


@dataclass
class Result:
    label: str
    rate: float | None = None
    consumed: int = 0
    consume_seconds: float = 0.0
    duplicates: int = 0
    commits: int = 0
    join_ms: list[float] = field(default_factory=list)
    group_join_ms: list[float] = field(default_factory=list)
    failover_s: float | None = None
    failover_note: str = ""
    notes: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


# -- workers (spawned processes) -------------------------------------------------------------------


def _produce_worker(args: dict[str, Any], counter: Any, ready: Any) -> dict[str, Any]:
    from bench._kafka_clients import produce

    return produce(args, counter, ready)


def _member(bootstrap: str, group: str, topic: str, idx: int, counts: Any, stop: Any, events: Any,
            start: Any, rate: float | None, conf: dict[str, Any]) -> None:
    """One group member: subscribe at ``start``, consume + commit(sync) per batch until ``stop``.

    Reports ("joined", idx, ms), ("assign", idx, t, partitions), ("first", idx, t, partition) for
    the first record of each partition after every assignment, and at the end ("done", idx, stats).
    """
    from confluent_kafka import Consumer, KafkaException

    try:
        consumer = Consumer({**_GROUP_CONSUMER, **conf, "bootstrap.servers": bootstrap, "group.id": group,
                             "client.id": f"bench-member-{idx}"})
        fresh: set[int] = set()
        subscribed = [0.0]

        def on_assign(_c: Any, parts: list[Any]) -> None:
            now = time.monotonic()
            if subscribed[0]:
                events.put(("joined", idx, (now - subscribed[0]) * 1000))
                subscribed[0] = 0.0
            fresh.clear()
            fresh.update(tp.partition for tp in parts)
            events.put(("assign", idx, now, sorted(fresh)))

        events.put(("ready", idx, None))
        if not start.wait(300):
            raise BenchError("no start signal within 300 s")
        subscribed[0] = time.monotonic()
        consumer.subscribe([topic], on_assign=on_assign)
        count = commits = 0
        t_first = t_last = 0.0
        batch = 10_000 if rate is None else max(1, int(rate / 50))
        throttle_start = 0.0
        while not stop.is_set():
            msgs = consumer.consume(batch, 0.2)
            if not msgs:
                continue
            now = time.monotonic()
            good = 0
            for m in msgs:
                if m.error() is not None:
                    continue
                good += 1
                p = m.partition()
                if p in fresh:
                    fresh.discard(p)
                    events.put(("first", idx, now, p))
            if not good:
                continue
            if not t_first:
                t_first = now
                throttle_start = now
            t_last = now
            count += good
            counts[idx] = count
            try:
                consumer.commit(asynchronous=False)
                commits += 1
            except KafkaException:
                pass  # a rebalance under us: those records are redelivered to the new owner
            if rate is not None:
                ahead = count / rate - (time.monotonic() - throttle_start)
                if ahead > 0:
                    time.sleep(ahead)
        consumer.close()
        events.put(("done", idx, {"count": count, "t_first": t_first, "t_last": t_last, "commits": commits}))
    except BaseException:
        events.put(("error", idx, traceback.format_exc()))


class Group:
    """MEMBERS member processes of one group; they subscribe together when ``start()`` is called."""

    def __init__(self, bootstrap: str, group: str, topic: str, rate: float | None = None,
                 conf: dict[str, Any] | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.counts = ctx.Array("q", MEMBERS, lock=False)
        self.stop_event = ctx.Event()
        self.start_event = ctx.Event()
        self.events: Any = ctx.Queue()
        self.procs = [
            ctx.Process(target=_member, args=(bootstrap, group, topic, i, self.counts, self.stop_event, self.events,
                                              self.start_event, rate, conf or {}), daemon=True, name=f"member-{i}")
            for i in range(MEMBERS)
        ]
        self.log: list[tuple[Any, ...]] = []
        self.done: dict[int, dict[str, Any]] = {}
        for p in self.procs:
            p.start()
        self.wait(lambda: sum(1 for e in self.log if e[0] == "ready") == MEMBERS, 120, "members ready")

    def pump(self, timeout: float = 0.1) -> None:
        try:
            while True:
                e = self.events.get(timeout=timeout)
                if e[0] == "error":
                    raise BenchError(f"member {e[1]} failed:\n{e[2]}")
                if e[0] == "done":
                    self.done[e[1]] = e[2]
                self.log.append(e)
                timeout = 0.0
        except queue.Empty:
            pass

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.pump()

    def start(self) -> None:
        self.start_event.set()

    def total(self) -> int:
        return sum(self.counts)

    def assignment(self, idx: int) -> list[int]:
        got = [e[3] for e in self.log if e[0] == "assign" and e[1] == idx]
        return got[-1] if got else []

    def finish(self, alive: Sequence[int]) -> None:
        self.stop_event.set()
        self.wait(lambda: all(i in self.done for i in alive), 60, "members to stop")

    def close(self) -> None:
        self.stop_event.set()
        self.start_event.set()
        for p in self.procs:
            p.join(timeout=15)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


# -- phases --------------------------------------------------------------------------------------------


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    client = AdminClient({"bootstrap.servers": bootstrap})
    client.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)
    deadline = time.monotonic() + 60
    while True:
        md = client.list_topics(topic=topic, timeout=30).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions and all(
            p.leader >= 0 for p in md.partitions.values()
        ):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"topic {topic} has no leaders after 60 s")
        time.sleep(0.1)


def fill(bootstrap: str, topic: str, st: Settings, server_pid: int | None) -> None:
    from bench._kafka_clients import BATCHED

    per = st.messages // 2
    args = [{"bootstrap": bootstrap, "topic": topic, "conf": BATCHED, "messages": n, "max_seconds": 600}
            for n in (per, st.messages - per)]
    started = time.monotonic()
    results = run_workers(_produce_worker, args, "fill", total=st.messages, timeout=900, server_pid=server_pid)
    if sum(r["count"] for r in results) != st.messages:
        raise BenchError(f"filling the topic failed: {[r.get('first_error') for r in results]}")
    log(f"  filled {topic}: {st.messages:,} x {MSG_SIZE} B in {time.monotonic() - started:.1f} s")


def join_phase(bootstrap: str, topic: str, trials: int) -> list[float]:
    from confluent_kafka import Consumer

    out = []
    for i in range(trials):
        consumer = Consumer({**_GROUP_CONSUMER, "bootstrap.servers": bootstrap,
                             "group.id": f"bench-join-{uuid.uuid4().hex[:8]}", "client.id": f"bench-join-{i}"})
        # Connect and learn the cluster first: the figure is the group protocol, not the bootstrap.
        consumer.list_topics(topic, timeout=30)
        assigned: list[float] = []
        t0 = time.monotonic()
        consumer.subscribe([topic], on_assign=lambda _c, _p, got=assigned: got.append(time.monotonic()))
        deadline = t0 + 60
        while not assigned:
            consumer.poll(0.01)
            if time.monotonic() > deadline:
                consumer.close()
                raise BenchError("a single member got no assignment within 60 s")
        out.append((assigned[0] - t0) * 1000)
        consumer.close()
    return out


def consume_phase(bootstrap: str, topic: str, st: Settings, res: Result) -> None:
    group = Group(bootstrap, f"bench-consume-{uuid.uuid4().hex[:8]}", topic)
    try:
        group.start()
        deadline = time.monotonic() + 600
        last_show = 0.0
        while group.total() < st.messages:
            group.pump(0.2)
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"the group consumed {group.total():,} of {st.messages:,} records in 600 s")
            if now - last_show > 5:
                last_show = now
                log(f"    consume: {group.total():,}/{st.messages:,}")
        group.finish(range(MEMBERS))
    finally:
        group.close()
    stats = [group.done[i] for i in range(MEMBERS)]
    t0 = min(s["t_first"] for s in stats if s["t_first"])
    t1 = max(s["t_last"] for s in stats)
    res.consumed = sum(s["count"] for s in stats)
    res.consume_seconds = t1 - t0
    res.rate = res.consumed / res.consume_seconds if res.consume_seconds > 0 else None
    res.duplicates = res.consumed - st.messages
    res.commits = sum(s["commits"] for s in stats)
    res.group_join_ms = [e[2] for e in group.log if e[0] == "joined"]


def failover_phase(bootstrap: str, topic: str, st: Settings, res: Result) -> None:
    # Throttle so the topic outlasts the phase: the 3 members together read it in ~failover_seconds*2.
    rate = st.messages / (MEMBERS * st.failover_seconds * 2)
    # Small fetches: a throttled member must not sit on seconds of prefetched records of one
    # partition, or the figure would be how long it takes to drain them, not the failover.
    small = {"max.partition.fetch.bytes": 32 * 1024, "fetch.max.bytes": 1024 * 1024 + 512,
             "queued.max.messages.kbytes": 256}
    group = Group(bootstrap, f"bench-failover-{uuid.uuid4().hex[:8]}", topic, rate=rate, conf=small)
    try:
        group.start()

        def consuming() -> bool:
            parts = sorted(p for i in range(MEMBERS) for p in group.assignment(i))
            firsts = {e[1] for e in group.log if e[0] == "first"}
            return parts == list(range(st.partitions)) and firsts == set(range(MEMBERS))

        group.wait(consuming, 120, "three members consuming")
        time.sleep(1.0)  # steady state
        group.pump()
        victim = 0
        lost = set(group.assignment(victim))
        killed_at = time.monotonic()
        group.procs[victim].kill()
        seen_before = len(group.log)

        def taken_over() -> Any:
            return next((e for e in group.log[seen_before:]
                         if e[0] == "first" and e[1] != victim and e[3] in lost and e[2] > killed_at), None)

        group.wait(taken_over, 120, f"a survivor to consume one of {sorted(lost)}")
        event = taken_over()
        res.failover_s = event[2] - killed_at
        revoked = next((e[2] for e in group.log[seen_before:] if e[0] == "assign" and e[1] != victim), None)
        res.failover_note = (f"failover: kill -9 of a member owning partitions {sorted(lost)}; survivors got their new "
                             f"assignment {revoked - killed_at:.2f} s after the kill" if revoked else "")
        group.finish([i for i in range(MEMBERS) if i != victim])
    finally:
        group.close()


# -- systems -----------------------------------------------------------------------------------------


def run_system(key: str, st: Settings) -> Result:
    label = "stream store" if key == "store" else f"Apache Kafka {KAFKA_VERSION}"
    res = Result(label)
    work = st.work_dir / key
    work.mkdir(parents=True, exist_ok=True)
    server: Any = None
    try:
        if key == "store":
            from tests.support.store import StoreProcess

            server = StoreProcess(work_dir=work, extra_args=st.store_args, start_timeout=60)
            log(f"store: starting {' '.join(server.command()[3:])}")
            res.notes.append("store: default group settings (initial rebalance delay 100 ms), fsync always")
        else:
            from tests.support.kafka import KafkaBroker

            # Kafka's own default initial delay (the test fixture sets 0).
            server = KafkaBroker(server_properties={"group.initial.rebalance.delay.ms": "3000"}, heap="1g",
                                 base_dir=work)
            log(f"kafka: starting Apache Kafka {KAFKA_VERSION} (group.initial.rebalance.delay.ms=3000, its default)")
            res.notes.append("Kafka: defaults (group.initial.rebalance.delay.ms 3000, no fsync per write)")
        server.start()
        topic = f"bench-groups-{uuid.uuid4().hex[:6]}"
        create_topic(server.bootstrap, topic, st.partitions)
        fill(server.bootstrap, topic, st, server.pid)
        for name, fn in (
            ("join", lambda: res.join_ms.extend(join_phase(server.bootstrap, topic, st.join_trials))),
            ("consume", lambda: consume_phase(server.bootstrap, topic, st, res)),
            ("failover", lambda: failover_phase(server.bootstrap, topic, st, res)),
        ):
            log(f"{key} {name}: start")
            try:
                fn()
            except Exception as exc:
                msg = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
                res.failures[name] = msg.strip()
                log(f"{key} {name}: FAILED: {msg.strip().splitlines()[-1]}")
    except Exception as exc:
        res.failures["start"] = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
        log(f"{key}: FAILED: {res.failures['start'].splitlines()[-1]}")
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return res


# -- report ----------------------------------------------------------------------------------------------


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):,.0f} ms (max {max(values):,.0f})"


def report(results: Sequence[Result], st: Settings) -> str:
    rows: list[list[str]] = []

    def row(name: str, cells: list[str], target: str) -> None:
        rows.append([name, *cells, target])

    row("group consumption, 3 members", [f"{r.rate:,.0f} rec/s" if r.rate else "FAILED" for r in results],
        f">= {TARGET_RATE:,} rec/s")
    row("  (records, seconds, commits)", [f"{r.consumed:,}, {r.consume_seconds:.2f} s, {r.commits}" for r in results],
        "")
    row(f"join, 1 member (median of {st.join_trials})", [_ms(r.join_ms) for r in results],
        f"<= {TARGET_JOIN_MS:.0f} ms")
    row("join, 3 members at once", [_ms(r.group_join_ms) for r in results], "")
    row(f"failover after kill -9 (session {SESSION_TIMEOUT_MS / 1000:g} s)",
        [f"{r.failover_s:.2f} s" if r.failover_s is not None else "FAILED" for r in results], "")
    header = ["figure", *[r.label for r in results], "target"]
    widths = [max(len(x[i]) for x in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    for r in results:
        for note in [*r.notes, r.failover_note]:
            if note:
                out.append(f"  {r.label}: {note}")
        if r.duplicates:
            out.append(f"  {r.label}: {r.duplicates:,} records delivered twice (rebalances while the group formed)")
        for phase, msg in r.failures.items():
            out.append(f"  {r.label} {phase} FAILED: {msg.splitlines()[-1] if msg else ''}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="store,kafka", help="systems to run, in order: store, kafka (default both)")
    ap.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    ap.add_argument("--messages", type=int, help="records in the topic (default 600,000; quick 60,000)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the topic (default 6)")
    ap.add_argument("--join-trials", type=int, help="single-member joins measured (default 5; quick 3)")
    ap.add_argument("--failover-seconds", type=float, default=15.0,
                    help="the failover group is throttled to read the topic in about twice this (default 15)")
    ap.add_argument("--store-args", default="", help="extra flags for `python -m streams serve`")
    ap.add_argument("--work-dir", type=Path, help="where data dirs go (default: a temp dir)")
    a = ap.parse_args(argv)
    systems = [s.strip() for s in a.only.split(",") if s.strip()]
    if bad := [s for s in systems if s not in ("store", "kafka")]:
        ap.error(f"unknown systems {bad}")
    work = a.work_dir.resolve() if a.work_dir else Path(tempfile.mkdtemp(prefix="outbox-bench-groups-"))
    st = Settings(
        messages=a.messages or (60_000 if a.quick else 600_000),
        partitions=a.partitions,
        join_trials=a.join_trials or (3 if a.quick else 5),
        failover_seconds=a.failover_seconds,
        work_dir=work,
        store_args=a.store_args.split(),
        own_work_dir=a.work_dir is None,
    )
    import confluent_kafka

    started = time.monotonic()
    print("Consumer-group benchmark (figures only, nothing is asserted)")
    print(f"topic: {st.messages:,} x {MSG_SIZE} B records in {st.partitions} partitions; {MEMBERS} member processes, "
          f"confluent-kafka {confluent_kafka.version()} (librdkafka {confluent_kafka.libversion()[0]}), "
          f"range, commit(sync) per consume() batch")
    print(f"machine: {os.cpu_count()} cores shared by clients and servers; {platform.system()} {platform.release()}; "
          f"python {platform.python_version()}")
    sys.stdout.flush()
    results: list[Result] = []
    try:
        for key in systems:
            results.append(run_system(key, st))
    except KeyboardInterrupt:
        log("interrupted; printing what was measured")
    finally:
        if st.own_work_dir:
            shutil.rmtree(st.work_dir, ignore_errors=True)
    print()
    print(report(results, st))
    print(f"\n(whole run: {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
