"""A randomized fault campaign: writers -> outbox -> 2 relays -> fault proxy -> store -> 2 consumers.

With ``--kafka-cluster`` the relays and consumers talk to a three-node Apache Kafka cluster on
loopback instead (KRaft, replication factor 3, min.insync.replicas 2; tests/support/kafka_cluster.py),
each broker's client listener behind a fault proxy of its own (replication bypasses them); no store
faults; the partition leader is killed (-9) or shut down and restarted, brokers are paused
(SIGSTOP), two brokers are killed at once (below min ISR: nothing can be acknowledged until one is
back), one broker fault at a time, while writers commit.

In both modes the relays (one with librdkafka, one with kafka-python) and the consumer workers
run on injected clocks (tests/chaos/clock.py): their wall clocks step forward and backward, their
monotonic clocks leap forward.

Everything is a real process (PostgreSQL, the store, relays, consumer workers); the fault proxy,
the writers, the auditor, the offset monitor and the fault scheduler are threads of this process.
A seeded PRNG picks the faults, their targets, their timing and the writers' choices: the printed
seed replays the same schedule (process timing itself is not deterministic).

``python -m tests.chaos --seconds 600 --seed 1234`` (or ``make chaos``).
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.chaos.clock import CLOCK_FILE_ENV, write_offset
from tests.chaos.disk import StorageFaults
from tests.chaos.history import (
    Auditor,
    CheckResult,
    History,
    OffsetMonitor,
    Writers,
    check,
    committed_truth,
    prepare_app_db,
)
from tests.chaos.proxy import FaultProxy
from tests.chaos.relay_main import ClockedRelay
from tests.chaos.worker import EFFECTS_DDL
from tests.support._proc import REPO_ROOT, ProcessHandle, free_port
from tests.support.kafka_cluster import KafkaCluster, KafkaNode
from tests.support.postgres import PostgresServer
from tests.support.relay import RelayProcess
from tests.support.store import StoreProcess

__all__ = ["CampaignConfig", "run_campaign"]

logger = logging.getLogger("chaos")

RELAY_CRASH_POINTS = "relay.after_send:0.003,relay.before_delete:0.003,relay.after_delete:0.003"
CONSUMER_CRASH_POINTS = "consumer.in_handler:0.002,consumer.after_effect_commit:0.002"
STORE_FAULT_POINTS = "storage.mid_append:0.0007,storage.write_enospc:0.003,storage.fsync_eio:0.0003"
MID_APPEND_RE = re.compile(r"crash point storage\.mid_append: .* log=(\S+) position=(\d+) size=(\d+)")


@dataclass
class CampaignConfig:
    seconds: float = 600.0
    seed: int | None = None
    partitions: int = 4
    keys: int = 24
    writers: int = 4
    rate: float = 40.0  # writer transactions per second, all writers together
    relays: int = 2
    consumers: int = 2
    fault_gap: tuple[float, float] = (0.5, 3.0)
    crash_points: bool = True
    clock_jumps: bool = True  # injected wall-clock jumps for relays/consumers (tests/chaos/clock.py)
    kafka_cluster: bool = False  # a 3-node Apache Kafka cluster instead of the store behind the proxy
    work_dir: Path | None = None
    quiesce_timeout: float = 240.0
    faults: list[str] | None = None  # restrict to these fault names
    log_every: float = 30.0
    extra: dict[str, Any] = field(default_factory=dict)


class Member(ProcessHandle):
    """One consumer worker process (restartable; incarnations numbered)."""

    def __init__(self, name: str, mode: str, args: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name, self.mode, self.args, self.env = name, mode, args, env
        self.log = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **self.env}
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"--- start #{self.starts}\n".encode())
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.worker", "--member", self.name, "--mode", self.mode,
                 "--incarnation", str(self.starts), *self.args],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        if self.is_running():
            assert self._proc is not None
            self._proc.send_signal(signal.SIGCONT)
            self._proc.kill()
            self._proc.wait()

    def pause(self) -> None:
        if self.is_running():
            assert self._proc is not None
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is None:
            return
        self.resume()
        if self.is_running():
            self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class Campaign:
    def __init__(self, cfg: CampaignConfig) -> None:
        self.cfg = cfg
        self.seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1, 2**31)
        self.rng = random.Random(self.seed)
        self.work = cfg.work_dir or Path(tempfile.mkdtemp(prefix="outbox-chaos-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.history = History()
        self.topic = f"chaos-{uuid.uuid4().hex[:8]}"
        self.group = f"g-{self.topic}"
        self.keys = [f"k{i:02d}" for i in range(cfg.keys)]
        self.pg = PostgresServer(use_env=False)
        self.proxy: FaultProxy | None = None
        self.broker_proxies: dict[str, FaultProxy] = {}  # --kafka-cluster: one per node, by node name
        self.outage_deletes: list[int] = []  # outbox rows deleted while two brokers were down
        self.outage_held = 0  # outbox rows the relays had not published when the outages began
        self.store: StoreProcess | None = None
        self.cluster: KafkaCluster | None = None
        self.broker_lock = threading.Lock()  # one broker fault at a time: RF 3 / min ISR 2 tolerate one
        self.relays: list[RelayProcess] = []
        self.members: list[Member] = []
        self.locks: dict[str, threading.Lock] = {}
        self.down: set[str] = set()  # components a fault is holding down on purpose
        self.unexpected_exits: dict[str, int] = {}
        self.recovery_failures: list[str] = []
        self._stop = threading.Event()
        self._store_log_seen = 0
        store_fault = lambda name: not cfg.kafka_cluster and (not cfg.faults or name in cfg.faults)  # noqa: E731
        self.disk = StorageFaults(
            self.work, self.rng, power_cuts=store_fault("power cut store"), disk_full=store_fault("disk full store")
        )
        self.clock_files: dict[str, Path] = {}
        self.clock_offsets: dict[str, float] = {}  # wall clock, seconds
        self.mono_offsets: dict[str, float] = {}  # monotonic clock, seconds, only grows

    # -- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        self.pg.start()
        self.app_dsn = self.pg.create_database("chaos_app")
        self.consumer_dsn = self.pg.create_database("chaos_consumer")
        prepare_app_db(self.app_dsn, self.keys)
        with psycopg.connect(self.consumer_dsn, autocommit=True) as conn:
            conn.execute(EFFECTS_DDL)
        if cfg.kafka_cluster:
            # Consumers ask for 3 s sessions (Kafka's group.min.session.timeout.ms is 6 s by default).
            props = {"group.min.session.timeout.ms": "1000"}
            self.cluster = KafkaCluster(base_dir=self.work, keep=True, heap="384m", server_properties=props)
            for node in self.cluster.nodes.values():
                # Clients reach each broker through its own fault proxy; replication bypasses them.
                proxy = FaultProxy(free_port(), "127.0.0.1", node.port, seed=self.seed + node.node_id, name=node.name)
                node.advertised = proxy.address
                self.broker_proxies[node.name] = proxy.start()
            self.cluster.start()
            self.cluster.create_topic(self.topic, cfg.partitions)
            bootstrap = self.cluster.bootstrap
        else:
            store_port, proxy_port = _two_free_ports()
            self.proxy = FaultProxy(proxy_port, "127.0.0.1", store_port, seed=self.seed).start()
            store_env = {"STREAMS_CRASH_POINTS": STORE_FAULT_POINTS} if cfg.crash_points else {}
            store_env.update(self.disk.store_env())
            # 64 KiB segments: the log rolls every few seconds, so power cuts meet fresh files and
            # directory entries that are not durable yet.
            self.store = StoreProcess(
                self.disk.prepare_data_dir(self.work / "store-data"), port=store_port, work_dir=self.work, env=store_env,
                extra_args=["--advertised-listener", self.proxy.address, "--default-partitions", str(cfg.partitions),
                            "--group-min-session-timeout-ms", "1000", "--group-initial-rebalance-delay-ms", "0",
                            "--segment-bytes", str(64 * 1024), "--idle-timeout", "30"],
            )  # fmt: skip
            self.store.start()
            self._create_topic()
            bootstrap = self.proxy.address
        relay_env = {"OUTBOX_CRASH_POINTS": RELAY_CRASH_POINTS} if cfg.crash_points else {}
        for i in range(cfg.relays):
            # Both producers the relay offers; kafka-python's timers read the (jumping) wall clock.
            producer = "confluent" if i % 2 == 0 else "kafka-python"
            r = ClockedRelay(
                self.app_dsn, bootstrap, name=f"relay-{i + 1}", work_dir=self.work,
                env={**relay_env, **self._clock_env(f"relay-{i + 1}")},
                extra_args=["--poll-interval-ms", "500", "--producer", producer],
            )  # fmt: skip
            r.start(wait=False)
            self.relays.append(r)
        consumer_env = {"OUTBOX_CRASH_POINTS": CONSUMER_CRASH_POINTS} if cfg.crash_points else {}
        common = ["--bootstrap", bootstrap, "--database-url", self.consumer_dsn, "--topic", self.topic,
                  "--group", self.group, "--session-timeout-ms", "3000"]  # fmt: skip
        for i in range(cfg.consumers):
            name = f"consumer-{i + 1}"
            env = {**consumer_env, **self._clock_env(name)}
            m = Member(name, "sync" if i % 2 == 0 else "async", common, self.work, env)
            m.start()
            self.members.append(m)
        for name in self._components():
            self.locks[name] = threading.Lock()
        self.writers = Writers(
            self.app_dsn, self.topic, self.keys, self.history, n=cfg.writers, seed=self.seed, rate=cfg.rate
        )
        self.auditor = Auditor(bootstrap, self.topic, self.history, interval=20.0)
        self.monitor = OffsetMonitor(self.consumer_dsn, self.group, self.history)

    def _clock_env(self, name: str) -> dict[str, str]:
        """The file of ``name``'s clock offsets (tests/chaos/clock.py; libfaketime hangs CPython, see there)."""
        if not self.cfg.clock_jumps:
            return {}
        path = self.work / f"{name}.clock"
        write_offset(path, 0.0, 0.0)
        self.clock_files[name] = path
        return {CLOCK_FILE_ENV: str(path)}

    def _clock_jump(self) -> None:
        """Step one relay's or consumer's wall clock by a second to an hour, forward or backward.

        Offsets stay within +-2 h of the true time (a step that would leave that range goes the
        other way).
        """
        if not self.clock_files:
            return
        name = self.rng.choice(sorted(self.clock_files))
        jump = self.rng.choice((1, 5, 30, 120, 600, 3600)) * self.rng.choice((1, -1))
        old = self.clock_offsets.get(name, 0.0)
        if abs(old + jump) > 7200:
            jump = -jump
        self.clock_offsets[name] = old + jump
        write_offset(self.clock_files[name], old + jump, self.mono_offsets.get(name, 0.0))
        with self.history.lock:  # counted under the fault table's name; the direction goes to the log
            self.history.fault_log.append(f"{time.strftime('%H:%M:%S')}   {name} wall clock {jump:+d} s")

    def _monotonic_leap(self) -> None:
        """Leap one relay's or consumer's monotonic clock forward by a second to an hour (never back):
        every Python-level timeout of that process is due at once, as after a pause nobody else saw."""
        if not self.clock_files:
            return
        name = self.rng.choice(sorted(self.clock_files))
        leap = self.rng.choice((1, 5, 30, 120, 600, 3600))
        self.mono_offsets[name] = self.mono_offsets.get(name, 0.0) + leap
        write_offset(self.clock_files[name], self.clock_offsets.get(name, 0.0), self.mono_offsets[name])
        with self.history.lock:
            self.history.fault_log.append(f"{time.strftime('%H:%M:%S')}   {name} monotonic +{leap} s")

    def _create_topic(self) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic

        assert self.store is not None
        admin = KafkaAdminClient(bootstrap_servers=self.store.bootstrap, request_timeout_ms=10_000)
        try:
            admin.create_topics([NewTopic(self.topic, self.cfg.partitions, 1)])
        finally:
            admin.close()

    def _components(self) -> dict[str, Any]:
        out: dict[str, Any] = {"store": self.store} if self.cluster is None else {}
        if self.cluster is not None:
            out.update({n.name: n for n in self.cluster.nodes.values()})
        out.update({r.name: r for r in self.relays})
        out.update({m.name: m for m in self.members})
        return out

    # -- supervisor: restart what died (crash points, fatal errors) --------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(0.3):
            for name, comp in self._components().items():
                lock = self.locks[name]
                if name in self.down or comp.is_running() or not lock.acquire(blocking=False):
                    continue
                try:
                    if name in self.down or comp.is_running():
                        continue
                    self._restart_dead(name, comp)
                except Exception as exc:
                    self.recovery_failures.append(f"{name}: {exc}"[:300])
                    logger.error("could not restart %s: %s", name, exc)
                finally:
                    lock.release()

    def _restart_dead(self, name: str, comp: Any) -> None:
        code = comp.returncode
        if name == "store":
            text = self.store.log_text() if self.store else ""
            new = text[self._store_log_seen :]
            self._store_log_seen = len(text)
            matches = list(MID_APPEND_RE.finditer(new))
            m = matches[-1] if matches else None
            if m is not None:
                self._tear_tail(Path(m.group(1)), int(m.group(2)), int(m.group(3)))
                self.history.note_fault("crashpoint store storage.mid_append (+ torn unsynced tail)")
            elif "fault point storage.fsync_eio" in new:
                self.history.note_fault("failpoint store fsync EIO (store exited)")
            else:
                self._unexpected(name, code)
            comp.start()
            self._store_log_seen = len(self.store.log_text()) if self.store else 0
            return
        if isinstance(comp, KafkaNode):
            self._unexpected(name, code)
            comp.start()
            return
        if code == -signal.SIGKILL:
            self.history.note_fault(f"crashpoint {name.split('-', maxsplit=1)[0]}")
        else:
            self._unexpected(name, code)
        if isinstance(comp, RelayProcess):
            comp.start(wait=False)
        else:
            comp.start()

    def _unexpected(self, name: str, code: int | None) -> None:
        key = f"{name.rstrip('0123456789').rstrip('-')} exit {code}"
        self.unexpected_exits[key] = self.unexpected_exits.get(key, 0) + 1
        logger.warning("%s exited by itself with %s; restarting it", name, code)

    def _tear_tail(self, path: Path, position: int, size: int) -> None:
        """A power cut right after the store wrote (not fsynced, not acked) the batch at ``position``."""
        try:
            keep = position + self.rng.randrange(0, size)
            if path.stat().st_size >= position + size:
                os.truncate(path, keep)
                logger.info("torn tail: %s cut at %d (batch %d+%d)", path.name, keep, position, size)
        except OSError as exc:
            logger.warning("could not tear %s: %s", path, exc)

    # -- faults -------------------------------------------------------------------------------

    def fault_table(self) -> dict[str, tuple[float, Callable[[], None]]]:
        if self.cluster is not None:
            return self.cluster_fault_table()
        return {
            "kill -9 relay": (3, self._kill_relay),
            "SIGSTOP relay": (2, self._pause(lambda: self.rng.choice(self.relays))),
            "kill -9 store": (3, self._kill_store),
            "power cut store": (2, self._power_cut_store),
            "disk full store": (1, self._disk_full_store),
            "SIGSTOP store": (2, self._pause(lambda: self.store)),
            "kill -9 consumer": (3, self._kill_consumer),
            "SIGSTOP consumer": (2, self._pause(lambda: self.rng.choice(self.members))),
            "PostgreSQL restart fast": (1, lambda: self._pg_restart("fast")),
            "PostgreSQL restart immediate": (1, lambda: self._pg_restart("immediate")),
            "proxy latency": (2, self._proxy_latency),
            "proxy hang": (2, self._proxy_hang),
            "proxy reset": (2, self._proxy_reset),
            "proxy cut mid-frame": (2, self._proxy_cut),
            "clock jump (wall clock, relay or consumer)": (3 if self.clock_files else 0, self._clock_jump),
            "monotonic clock leap forward (relay or consumer)": (2 if self.clock_files else 0, self._monotonic_leap),
        }

    def cluster_fault_table(self) -> dict[str, tuple[float, Callable[[], None]]]:
        return {
            "kill -9 relay": (2, self._kill_relay),
            "SIGSTOP relay": (1, self._pause(lambda: self.rng.choice(self.relays))),
            "kill -9 consumer": (2, self._kill_consumer),
            "SIGSTOP consumer": (1, self._pause(lambda: self.rng.choice(self.members))),
            "PostgreSQL restart fast": (0.5, lambda: self._pg_restart("fast")),
            "PostgreSQL restart immediate": (0.5, lambda: self._pg_restart("immediate")),
            "kill -9 partition leader": (5, lambda: self._broker_down(graceful=False)),
            "SIGTERM partition leader (controlled shutdown)": (1, lambda: self._broker_down(graceful=True)),
            "SIGSTOP broker": (2, self._pause_broker),
            "kill -9 two brokers (below min ISR)": (1.5, self._two_brokers_down),
            "broker proxy latency": (1, self._proxy_latency),
            "broker proxy hang": (1, self._proxy_hang),
            "broker proxy reset": (1, self._proxy_reset),
            "broker proxy cut mid-frame": (1, self._proxy_cut),
            "clock jump (wall clock, relay or consumer)": (3 if self.clock_files else 0, self._clock_jump),
            "monotonic clock leap forward (relay or consumer)": (2 if self.clock_files else 0, self._monotonic_leap),
        }

    def _leader_node(self) -> KafkaNode:
        """The node leading a random partition of the topic (a random running node if none answers)."""
        assert self.cluster is not None
        partition = self.rng.randrange(self.cfg.partitions)
        leader = self.cluster.leader(self.topic, partition)
        node = self.cluster.nodes.get(leader) if leader is not None else None
        if node is None or not node.is_running():
            node = self.rng.choice([n for n in self.cluster.nodes.values() if n.is_running()])
        with self.history.lock:
            self.history.fault_log.append(f"{time.strftime('%H:%M:%S')}   leader of {partition}: {node.name}")
        return node

    def _after_broker_fault(self) -> None:
        """Back to full replication before the next broker fault (else a second one is an outage)."""
        assert self.cluster is not None
        if not self.cluster.wait_fully_replicated([self.topic, "__consumer_offsets"], timeout=120.0):
            logger.warning("partitions still under-replicated 120 s after a broker fault")
            self.history.note_fault("(cluster under-replicated 120 s after a broker fault)")

    def _broker_down(self, *, graceful: bool) -> None:
        with self.broker_lock:
            node = self._leader_node()

            def act() -> None:
                if graceful:
                    node.stop(30.0)
                else:
                    node.kill()
                self._sleep(0, 3)
                try:
                    node.start()
                except Exception as exc:
                    self.recovery_failures.append(f"{node.name} restart: {exc}"[:300])
                    raise

            self._hold_down(node.name, act)
            self._after_broker_fault()

    def _pause_broker(self) -> None:
        assert self.cluster is not None
        with self.broker_lock:
            node = self.rng.choice([n for n in self.cluster.nodes.values() if n.is_running()])

            def act() -> None:
                node.pause()
                try:
                    self._sleep(1, 10)
                finally:
                    node.resume()

            self._hold_down(node.name, act)
            self._after_broker_fault()

    def _two_brokers_down(self) -> None:
        """kill -9 two of the three nodes, restart them one after the other.

        Every partition is then below min.insync.replicas (and the KRaft quorum is lost, so the
        ISR cannot even shrink): no acks=all write can be acknowledged. The relays must keep their
        rows — none of the rows in the outbox once acks already on the wire have settled may be
        deleted before a node is back (``outage_deletes``) — and publish them afterwards.
        """
        assert self.cluster is not None
        with self.broker_lock:
            running = sorted((n for n in self.cluster.nodes.values() if n.is_running()), key=lambda n: n.node_id)
            if len(running) < 2:
                return
            first, second = self.rng.sample(running, 2)
            with self.history.lock:
                self.history.fault_log.append(f"{time.strftime('%H:%M:%S')}   down: {first.name}, {second.name}")

            def act() -> None:
                first.kill()
                second.kill()
                try:
                    self._stop.wait(3.0)  # a relay may still delete rows acknowledged just before the kill
                    held = self._outbox_ids()
                    self._sleep(3, 15)
                    deleted = len(held - self._outbox_ids())
                    self.outage_deletes.append(deleted)
                    self.outage_held += len(held)
                    self.history.note_fault("(outbox rows held/deleted, two brokers down)", f"{len(held)}/{deleted}")
                finally:
                    for i, node in enumerate((first, second)):
                        if i:
                            self._sleep(0, 5)
                        try:
                            node.start()
                        except Exception as exc:
                            self.recovery_failures.append(f"{node.name} restart: {exc}"[:300])

            self._hold_down(first.name, lambda: self._hold_down(second.name, act))
            self._after_broker_fault()

    def _outbox_ids(self) -> set[int]:
        with psycopg.connect(self.app_dsn, connect_timeout=10) as conn:
            return {int(r[0]) for r in conn.execute("SELECT id FROM outbox.events")}

    def _sleep(self, a: float, b: float) -> None:
        self._stop.wait(self.rng.uniform(a, b))

    def _hold_down(self, name: str, action: Callable[[], None]) -> None:
        with self.locks[name]:
            self.down.add(name)
            try:
                action()
            finally:
                self.down.discard(name)

    def _kill_relay(self) -> None:
        r = self.rng.choice(self.relays)

        def act() -> None:
            r.resume()
            r.kill()
            self._sleep(0, 3)
            r.start(wait=False)

        self._hold_down(r.name, act)

    def _kill_consumer(self) -> None:
        m = self.rng.choice(self.members)

        def act() -> None:
            m.kill()
            self._sleep(0, 3)
            m.start()

        self._hold_down(m.name, act)

    def _power_cut_store(self) -> None:
        """SIGKILL the store, lose what a power cut could lose (tests/chaos/disk.py), restart it."""
        store = self.store
        assert store is not None

        def act() -> None:
            detail = self.disk.power_cut(store)
            with self.history.lock:
                self.history.fault_log.append(f"{time.strftime('%H:%M:%S')}   power cut: {detail}")
            self._sleep(0, 3)
            try:
                store.start()
            except Exception as exc:
                self.recovery_failures.append(f"store restart after a power cut ({detail}): {exc}"[:300])
                raise
            self._store_log_seen = len(store.log_text())

        self._hold_down("store", act)

    def _disk_full_store(self) -> None:
        """Fill the store's tmpfs for a few seconds; the store itself keeps running (no restarts meanwhile)."""
        self._hold_down("store", lambda: self._note_disk(self.disk.fill(self.rng.uniform(2, 8), self._stop)))

    def _note_disk(self, detail: str) -> None:
        with self.history.lock:
            self.history.fault_log.append(f"{time.strftime('%H:%M:%S')}   disk full: {detail}")

    def _kill_store(self) -> None:
        store = self.store
        assert store is not None

        def act() -> None:
            if store.is_running():
                os.kill(store.pid or 0, signal.SIGCONT)
            store.kill()
            self._sleep(0, 3)
            try:
                store.start()
            except Exception as exc:
                self.recovery_failures.append(f"store restart after kill -9: {exc}"[:300])
                raise
            self._store_log_seen = len(store.log_text())

        self._hold_down("store", act)

    def _pause(self, pick: Callable[[], Any]) -> Callable[[], None]:
        def fault() -> None:
            comp = pick()
            name = getattr(comp, "name", "store")

            def act() -> None:
                if not comp.is_running():
                    return
                pid = comp.pid
                os.kill(pid, signal.SIGSTOP)
                try:
                    self._sleep(1, 10)
                finally:
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass

            self._hold_down(name, act)

        return fault

    def _pg_restart(self, mode: str) -> None:
        self.pg.restart(mode)  # type: ignore[arg-type]

    def _proxies(self) -> list[FaultProxy]:
        return [self.proxy] if self.proxy is not None else list(self.broker_proxies.values())

    def _fault_proxy(self) -> FaultProxy:
        """The store's proxy, or a random broker's (named in the fault log)."""
        if self.proxy is not None:
            return self.proxy
        name = self.rng.choice(sorted(self.broker_proxies))
        with self.history.lock:
            self.history.fault_log.append(f"{time.strftime('%H:%M:%S')}   proxy of {name}")
        return self.broker_proxies[name]

    def _proxy_latency(self) -> None:
        proxy = self._fault_proxy()
        proxy.latency = self.rng.uniform(0.02, 0.5)
        self._sleep(2, 10)
        proxy.latency = 0.0

    def _proxy_hang(self) -> None:
        proxy = self._fault_proxy()
        proxy.hang()
        self._sleep(1, 12)
        proxy.unhang()

    def _proxy_reset(self) -> None:
        self._fault_proxy().reset_all()

    def _proxy_cut(self) -> None:
        proxy = self._fault_proxy()
        proxy.cut_probability = self.rng.uniform(0.05, 0.4)
        self._sleep(2, 8)
        proxy.cut_probability = 0.0

    def _schedule(self, deadline: float) -> None:
        table = self.fault_table()
        if self.cfg.faults:
            table = {k: v for k, v in table.items() if k in self.cfg.faults}
        names = list(table)
        weights = [table[n][0] for n in names]
        last_log = time.monotonic()
        while time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(self.rng.uniform(*self.cfg.fault_gap))
            if time.monotonic() >= deadline:
                break
            name = self.rng.choices(names, weights)[0]
            self.history.note_fault(name)
            try:
                table[name][1]()
            except Exception as exc:
                logger.error("fault %s failed: %s", name, exc)
                self.recovery_failures.append(f"{name}: {exc}"[:300])
            if time.monotonic() - last_log > self.cfg.log_every:
                last_log = time.monotonic()
                with self.history.lock:
                    n = len(self.history.writes)
                print(
                    f"[chaos] {deadline - time.monotonic():6.0f} s left, {n} writes, "
                    f"{sum(self.history.faults.values())} faults",
                    flush=True,
                )

    # -- run ----------------------------------------------------------------------------------

    def heal(self) -> None:
        for proxy in self._proxies():
            proxy.heal()
        for name, comp in self._components().items():
            with self.locks[name]:
                pid = comp.pid
                if pid and comp.is_running():
                    os.kill(pid, signal.SIGCONT)
        if self.cluster is not None:
            for node in self.cluster.nodes.values():
                node.resume()
        if not self.pg.is_running():
            self.pg.start()

    def wait_applied(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                truth = committed_truth(self.app_dsn)
                with psycopg.connect(self.consumer_dsn) as conn:
                    applied = {str(r[0]) for r in conn.execute("SELECT DISTINCT event_id FROM chaos_effects")}
                missing = len(set(truth) - applied)
                if missing == 0:
                    return True
                logger.info("quiesce: %d committed events not applied yet", missing)
            except psycopg.Error as exc:
                logger.info("quiesce: %s", exc)
            time.sleep(2)
        return False

    def run(self) -> CheckResult:
        cfg = self.cfg
        extra = " CHAOS_ARGS=--kafka-cluster" if cfg.kafka_cluster else ""
        print(
            f"[chaos] seed {self.seed}  (reproduce: CHAOS_SEED={self.seed} CHAOS_SECONDS={cfg.seconds:g}{extra} make chaos)"
        )
        print(f"[chaos] work dir {self.work}", flush=True)
        self.setup()
        supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        supervisor.start()
        self.writers.start()
        self.auditor.start()
        self.monitor.start()
        started = time.monotonic()
        try:
            self._schedule(started + cfg.seconds)
        finally:
            print("[chaos] faults over: healing, stopping writers, waiting for every committed event", flush=True)
            self.heal()
            self.writers.stop()
        quiet = self.wait_applied(cfg.quiesce_timeout)
        self._stop.set()
        supervisor.join(30)
        self.auditor.stop()
        self.monitor.stop()
        final = self.auditor.read_all(timeout=180)
        truth = committed_truth(self.app_dsn)
        with psycopg.connect(self.consumer_dsn) as conn:
            effects = [
                (r[0], str(r[1]), r[2], r[3], r[4], r[5], r[6], r[7])
                for r in conn.execute(
                    'SELECT id, event_id, key, seq, partition, "offset", member, incarnation FROM chaos_effects'
                )
            ]
        result = check(self.history, truth, final, effects)
        result.rows.insert(0, ("components that did not recover", len(self.recovery_failures), True,
                               self.recovery_failures[0] if self.recovery_failures else ""))  # fmt: skip
        if self.outage_deletes:
            deleted = sum(self.outage_deletes)
            result.rows.append(("outbox rows deleted while two brokers were down", deleted, True,
                                f"{len(self.outage_deletes)} outages, {self.outage_held} rows held"))  # fmt: skip
        exits = ", ".join(f"{k}: {v}" for k, v in sorted(self.unexpected_exits.items()))
        result.rows.append(("unexpected process exits (liveness, restarted)", sum(self.unexpected_exits.values()),
                            False, exits))  # fmt: skip
        if not quiet:
            result.rows.append(("quiesce timed out (see lost events)", 1, True, f"{cfg.quiesce_timeout:.0f} s"))
        result.stats["duration s"] = round(time.monotonic() - started)
        result.stats["auditor passes"] = self.auditor.passes
        result.stats["writer errors (connections lost)"] = self.writers.errors
        if self._proxies():
            result.stats["proxy connections/resets/cuts/refused"] = "/".join(
                str(sum(getattr(p, a) for p in self._proxies())) for a in ("connections", "resets", "cuts", "refused")
            )
        if self.cluster is not None:
            result.stats["Kafka node starts"] = {n.name: n.starts for n in self.cluster.nodes.values()}
        result.stats["unexpected exits (restarted)"] = dict(self.unexpected_exits)
        result.stats["faults"] = dict(sorted(self.history.faults.items()))
        return result

    def close(self) -> None:
        self._stop.set()
        for m in self.members:
            m.stop()
        for r in self.relays:
            try:
                r.resume()
                r.stop()
            except Exception:
                r.kill()
        if self.store is not None:
            try:
                self.store.stop()
            except Exception:
                self.store.kill()
        for proxy in self._proxies():
            proxy.close()
        self.disk.close()  # unmount the store's tmpfs (the store is stopped)
        if self.cluster is not None:
            self.cluster.cleanup()  # keep=True: the node logs stay in the work dir
        self.pg.cleanup()


def _two_free_ports() -> tuple[int, int]:
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        return int(a.getsockname()[1]), int(b.getsockname()[1])


def run_campaign(cfg: CampaignConfig) -> tuple[int, CheckResult]:
    """Run one campaign; return (seed, result). Prints the seed first and the table at the end."""
    c = Campaign(cfg)
    try:
        result = c.run()
    finally:
        c.close()
    print()
    for k, v in result.stats.items():
        print(f"[chaos] {k}: {v}")
    print()
    print(result.table())
    print()
    verdict = "PASS" if result.violations == 0 else f"FAIL ({result.violations} violated checks)"
    print(f"[chaos] seed {c.seed}: {verdict}  (logs: {c.work})", flush=True)
    return c.seed, result
