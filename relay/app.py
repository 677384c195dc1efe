"""The relay process: own key buckets, claim their committed rows, publish, delete after the ack.

One dedicated, autocommit, non-pooled connection does everything that needs fencing: it holds the
bucket and membership locks, LISTENs for the doorbell, claims rows and deletes them. Losing it
loses the locks and the right to delete in one go; the relay then reconnects, rejoins, scans.

The loop: rebalance (about once a second) → claim the oldest committed rows of the owned buckets
→ publish them and wait for every outcome → delete what may be deleted (``claimer.deletable``) →
repeat; with nothing to claim, keep polling for ``linger``, then arm the doorbell and sleep until a
notification or ``poll_interval``.
"""

from __future__ import annotations

import gc
import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from outbox._faults import crashpoint
from outbox._table import OutboxTable
from outbox.errors import SchemaError
from outbox.schema import OutboxSettings, read_settings
from relay.claimer import ClaimedRow, claim, deletable, delete, to_record
from relay.config import RelayConfig
from relay.errors import PublishError, RelayError
from relay.leadership import LockHolders, lock_namespace, member_slot_key, plan_rebalance
from relay.listener import Listener
from relay.metrics import RelayMetrics
from relay.publisher import Pending, Publisher, make_publisher

__all__ = ["Relay"]

log = logging.getLogger(__name__)

# How long a SIGTERM lets the batch in hand finish before its unacknowledged rows are abandoned
# (kept in the table for the next relay; a record that was sent may then appear twice).
SHUTDOWN_GRACE = 10.0


@dataclass
class _Batch:
    rows: list[ClaimedRow]
    publisher: Publisher
    pending: Pending
    sent_at: float


class _Session:
    """One connection's worth of state: settings, lock namespace, membership slot, listener."""

    def __init__(self, conn: psycopg.Connection[Any], settings: OutboxSettings, listener: Listener, slot: int) -> None:
        self.conn = conn
        self.settings = settings
        self.namespace = lock_namespace(settings.doorbell_lock)
        self.listener = listener
        self.slot = slot
        self.pid = conn.info.backend_pid


class Relay:
    """Move committed outbox rows to the log. ``run()`` blocks until :meth:`stop`."""

    def __init__(self, config: RelayConfig, *, metrics: RelayMetrics | None = None) -> None:
        self.config = config
        self.table = OutboxTable(config.schema, config.table)
        self.metrics = metrics if metrics is not None else RelayMetrics()
        self.owned: set[int] = set()
        self.published = 0
        self.metrics_port: int | None = None
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self._publisher: Publisher | None = None
        self._rng = random.Random()
        self._started_at = datetime.now(UTC)
        self._last_publish_at: datetime | None = None
        self._arm_failures = 0
        self._failures = 0
        self._next_heartbeat = 0.0

    # -- control ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run()`` to return: the batch in hand gets ``SHUTDOWN_GRACE`` seconds to finish."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _abandon(self) -> bool:
        return self._stop_at is not None and time.monotonic() - self._stop_at > SHUTDOWN_GRACE

    def run(self) -> None:
        """Relay until :meth:`stop`; database and broker outages are waited out with backoff."""
        config = self.config
        if config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(config.metrics_port, config.metrics_host)
            log.info("metrics on http://%s:%d/metrics", config.metrics_host, self.metrics_port)
        backoff = config.retry_backoff
        # Everything alive now (modules, configuration) leaves the cyclic collector's reach: the
        # full collections that 30,000 rows in flight trigger then scan only what came since.
        gc.freeze()
        log.info("relay %s starting: %s -> %s", config.name, self.table.qualified, config.bootstrap_servers)
        try:
            while not self.stopping:
                try:
                    self._run_session()
                    backoff = config.retry_backoff
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    self.owned = set()
                    self.metrics.owned_buckets.set(0)
                    if self._publisher is not None:
                        # Fencing: with the connection went the bucket locks. Drop every record not
                        # yet on the wire; the rows are still in the table for whoever owns them now.
                        self._publisher.close(timeout=0)
                        self._publisher = None
                    log.warning(
                        "database connection lost or refused (%s); its bucket locks are gone. Reconnecting in %.1f s",
                        str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                        backoff,
                    )
                    self._stop.wait(backoff)
                    backoff = min(max(backoff * 2, 0.05), config.retry_backoff_max)
        finally:
            if self._publisher is not None:
                self._publisher.close(timeout=1.0)
                self._publisher = None
            log.info("relay %s stopped after publishing %d event(s)", config.name, self.published)

    # -- one database session -----------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        c = self.config
        conn = psycopg.connect(
            c.database_url,
            autocommit=True,
            application_name=f"outbox-relay {c.name}"[:63],
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=c.keepalive_idle,
            keepalives_interval=c.keepalive_interval,
            keepalives_count=c.keepalive_count,
        )
        # Server-side keepalives: PostgreSQL notices a vanished relay and frees its locks.
        for name, value in (
            ("tcp_keepalives_idle", c.keepalive_idle),
            ("tcp_keepalives_interval", c.keepalive_interval),
            ("tcp_keepalives_count", c.keepalive_count),
            ("tcp_user_timeout", 1000 * (c.keepalive_idle + c.keepalive_interval * c.keepalive_count)),
        ):
            conn.execute("SELECT set_config(%s, %s, false)", (name, str(value)))
        return conn

    def _run_session(self) -> None:
        with self._connect() as conn:
            self.metrics.reconnects.inc()
            try:
                settings = read_settings(conn, schema=self.config.schema, table=self.config.table)
            except SchemaError as exc:
                raise RelayError(str(exc)) from exc
            slot = self._join(conn, lock_namespace(settings.doorbell_lock))
            listener = Listener(conn, settings, schema=self.config.schema, table=self.config.table)
            listener.listen()
            session = _Session(conn, settings, listener, slot)
            log.info(
                "connected (backend pid %d, member slot %d, %d buckets, doorbell %s)",
                session.pid,
                slot,
                settings.buckets,
                "on" if listener.works else "OFF: polling",
            )
            self.owned = set()
            try:
                self._serve(session)
            finally:
                if self.stopping and not conn.closed:
                    try:
                        conn.execute(self.table.query("relay_leave"), {"name": self.config.name})
                    except psycopg.Error:
                        pass

    def _join(self, conn: psycopg.Connection[Any], namespace: int) -> int:
        for slot in range(self.config.max_relays):
            row = conn.execute(
                self.table.query("try_lock_member"), {"namespace": namespace, "slot_key": member_slot_key(slot)}
            ).fetchone()
            if row and row[0]:
                return slot
        raise RelayError(
            f"all {self.config.max_relays} relay membership slots of {self.table.qualified} are taken: "
            "stop some relays or raise --max-relays on every relay"
        )

    def _serve(self, s: _Session) -> None:
        c = self.config
        next_rebalance = next_backlog = 0.0
        self._next_heartbeat = 0.0
        last_work = time.monotonic()
        inflight: deque[_Batch] = deque()
        try:
            while not self.stopping:
                now = time.monotonic()
                self._heartbeat_if_due(s)
                if now >= next_backlog:
                    self._measure_backlog(s)
                    next_backlog = now + c.backlog_interval
                rebalance_due = now >= next_rebalance
                if rebalance_due and not inflight:
                    # Only between batches: a bucket is given back once its rows in flight are settled.
                    self._rebalance(s)
                    next_rebalance = now + c.rebalance_interval
                    rebalance_due = False
                if not self.owned and not inflight:
                    # A standby: nothing to publish until a bucket frees up.
                    self._stop.wait(max(0.0, next_rebalance - time.monotonic()))
                    continue
                if len(inflight) < c.pipeline_depth and not rebalance_due and self.owned:
                    exclude = [row.id for batch in inflight for row in batch.rows]
                    rows = self._claim(s, exclude)
                    if rows:
                        batch = self._send(rows)
                        if batch is not None:
                            inflight.append(batch)
                            last_work = time.monotonic()
                        if len(inflight) < c.pipeline_depth and len(rows) == c.batch_size:
                            continue  # more waiting: fill the pipeline first
                if inflight:
                    self._settle(s, inflight)
                    last_work = time.monotonic()
                    continue
                if time.monotonic() - last_work < c.linger:
                    self._stop.wait(c.linger_step)
                    continue
                self._sleep(s, until=min(next_rebalance, self._next_heartbeat))
                last_work = time.monotonic() - c.linger  # after a sleep, go straight back to sleep if idle
        finally:
            if inflight and self.stopping and not s.conn.closed:
                # Shutdown: give the batches in hand SHUTDOWN_GRACE to be acknowledged, delete those.
                self._settle(s, inflight, everything=True)

    def _claim(self, s: _Session, exclude: Sequence[int] = ()) -> list[ClaimedRow]:
        started = time.perf_counter()
        rows = claim(s.conn, self.table, sorted(self.owned), self.config.batch_size, exclude)
        self.metrics.claim_seconds.observe(time.perf_counter() - started)
        return rows

    def _sleep(self, s: _Session, until: float) -> None:
        c = self.config
        listener = s.listener
        listener.drain()
        timeout = max(0.0, min(c.poll_interval, until - time.monotonic()))
        if not listener.works:
            self._stop.wait(timeout)
            return
        if not listener.arm():
            # A writer's transaction that inserted is still open: it commits soon (poll again
            # quickly), unless it stays open for long (back off up to the poll interval).
            self._arm_failures += 1
            delay = min(timeout, c.linger_step * 2 ** min(self._arm_failures, 12))
            log.debug("doorbell busy (a writer's transaction is open): polling again in %.3f s", delay)
            self._stop.wait(delay)
            return
        self._arm_failures = 0
        try:
            if claim(s.conn, self.table, sorted(self.owned), 1):
                return
            deadline = time.monotonic() + timeout
            woke = False
            # In slices, so that stop() is noticed within a quarter of a second.
            while not woke and not self.stopping and (left := deadline - time.monotonic()) > 0:
                woke = listener.wait(min(left, 0.25))
            self.metrics.wakeups.labels("notify" if woke else "poll").inc()
            log.debug("woken by %s", "a notification" if woke else "the poll timeout")
        finally:
            listener.disarm()

    # -- publishing ---------------------------------------------------------------------------

    def _producer(self) -> Publisher:
        if self._publisher is None:
            c = self.config
            self._publisher = make_publisher(
                c.producer,
                c.bootstrap_servers,
                client_id=f"outbox-relay-{c.name}",
                delivery_timeout=c.delivery_timeout,
                options=c.producer_options,
            )
            log.info("publishing with %s to %s", self._publisher.name, c.bootstrap_servers)
        return self._publisher

    def _backoff(self, message: str, *args: object) -> None:
        self._failures += 1
        delay = min(self.config.retry_backoff * 2 ** (self._failures - 1), self.config.retry_backoff_max)
        log.warning(message + "; retrying in %.1f s", *args, delay)
        self._stop.wait(delay)

    def _send(self, rows: list[ClaimedRow]) -> _Batch | None:
        records = [to_record(r) for r in rows]
        try:
            publisher = self._producer()
        except PublishError as exc:
            self._backoff("%s", exc)
            return None
        batch = _Batch(rows, publisher, publisher.send(records), time.perf_counter())
        crashpoint("relay.after_send")
        return batch

    def _settle(self, s: _Session, inflight: deque[_Batch], *, everything: bool = False) -> None:
        """Wait for the oldest batch (all of them after a failure), delete what may go."""
        m = self.metrics
        batches = [inflight.popleft()]
        rows: list[ClaimedRow] = []
        errors: list[str | None] = []
        broken = False
        while batches:
            batch = batches.pop(0)
            result = batch.publisher.wait(batch.pending, should_stop=lambda: self._waiting(s))
            m.publish_seconds.observe(time.perf_counter() - batch.sent_at)
            m.batch_size.observe(len(batch.rows))
            rows.extend(batch.rows)
            errors.extend(result.errors)
            broken = broken or result.broken
            if (result.failed or result.broken or everything) and inflight:
                # Later batches may hold later rows of a failed key: settle them together.
                batches.extend(inflight)
                inflight.clear()
        if broken and self._publisher is not None:
            self._publisher.close(timeout=0)
            self._publisher = None
        ids, kept = deletable(rows, errors)
        if ids:
            crashpoint("relay.before_delete")
            # On the lock connection: if it died, so did our ownership, and this raises.
            delete(s.conn, self.table, ids)
            crashpoint("relay.after_delete")
            self.published += len(ids)
            self._last_publish_at = datetime.now(UTC)
            m.published.inc(len(ids))
            now_ms = time.time() * 1000
            step = max(1, len(rows) // 64)
            for row, error in zip(rows[::step], errors[::step], strict=True):
                if error is None:
                    m.event_latency.observe(max(0.0, (now_ms - row.timestamp_ms) / 1000))
        failed = sum(1 for e in errors if e is not None)
        if failed == 0:
            m.rounds.labels("ok").inc()
            self._failures = 0
            return
        m.failed.inc(failed)
        m.rounds.labels("failed").inc()
        if self.stopping:
            log.warning("shutdown: abandoned %d unacknowledged event(s); they stay in the outbox", failed)
            return
        first = next(e for e in errors if e is not None)
        self._backoff(
            "%d of %d event(s) not acknowledged (%s); %d acknowledged one(s) kept to preserve key order",
            failed,
            len(rows),
            first,
            kept,
        )

    # -- ownership and bookkeeping ------------------------------------------------------------

    def _rebalance(self, s: _Session) -> None:
        rows = s.conn.execute(self.table.query("lock_holders"), {"namespace_oid": s.namespace & 0xFFFFFFFF}).fetchall()
        holders = LockHolders.from_rows((int(objid), int(pid)) for objid, pid in rows)
        plan = plan_rebalance(s.settings.buckets, holders, s.pid, self.owned, rng=self._rng)
        if plan.release:
            s.conn.execute(self.table.query("unlock_buckets"), {"namespace": s.namespace, "buckets": plan.release})
            self.owned.difference_update(plan.release)
            log.info(
                "gave back %d bucket(s) to balance %d relays (now %d)",
                len(plan.release),
                len(holders.members),
                len(self.owned),
            )
        if plan.acquire:
            got = [
                int(r[0])
                for r in s.conn.execute(
                    self.table.query("try_lock_buckets"), {"namespace": s.namespace, "buckets": plan.acquire}
                ).fetchall()
            ]
            if got:
                self.owned.update(got)
                log.info("took %d bucket(s) (now %d of %d)", len(got), len(self.owned), s.settings.buckets)
        self.metrics.owned_buckets.set(len(self.owned))
        self.metrics.live_relays.set(len(holders.members | {s.pid}))

    def _waiting(self, s: _Session) -> bool:
        """Called while a batch waits for its acknowledgements (a broker outage can make that long):
        keep the status board fresh; True when a shutdown's grace period is over."""
        self._heartbeat_if_due(s)
        return self._abandon()

    def _heartbeat_if_due(self, s: _Session) -> None:
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_interval
            self._heartbeat(s)

    def _heartbeat(self, s: _Session) -> None:
        s.conn.execute(
            self.table.query("relay_heartbeat"),
            {
                "name": self.config.name,
                "host": socket.gethostname(),
                "started_at": self._started_at,
                "last_publish_at": self._last_publish_at,
                "published": self.published,
                "buckets": sorted(self.owned),
            },
        )

    def _measure_backlog(self, s: _Session) -> None:
        row = s.conn.execute(self.table.query("backlog")).fetchone()
        events, oldest = row if row is not None else (0, None)
        self.metrics.backlog.set(int(events))
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        self.metrics.oldest_age.set(max(0.0, age))
