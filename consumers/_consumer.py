"""The blocking consumer: :class:`Consumer`."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any

import psycopg
from kafka.errors import KafkaError

from consumers._core import (
    ConsumerBase,
    Failure,
    PartitionState,
    error_text,
    logger,
    make_settings,
    transient_kafka_error,
)
from consumers._records import ConsumedEvent, HandlerSpec, batch_argument
from consumers.errors import ConsumerError
from consumers.schema import DEFAULT_SCHEMA, migrate
from outbox._faults import crashpoint

__all__ = ["Consumer"]

_PRUNE_CHUNK = 5000
_PRUNE_MAX_CHUNKS = 20


class _Lost(Exception):
    """The partition's stored offset is not where this member expected it: another member moved it."""


@dataclass
class _Outcome:
    next_offset: int
    processed: int
    duplicates: int
    skipped: int
    failed_at: int | None = None  # index of the record that failed (or must be dead-lettered)
    attempts: int = 0
    error: str = ""


class Consumer(ConsumerBase):
    """A consumer group member that applies each event's effects exactly once.

    Every batch of records of one partition is one transaction of the consumer's database: records
    whose event id the group already applied are skipped, each handler runs in a savepoint, the
    applied ids are recorded and the partition's stored offset is moved by compare-and-set (a
    member that lost the partition fails there and rolls back). The database's offsets are
    authoritative: on assignment the consumer seeks to them; it copies them to the broker after
    commits for lag tools only.

    A handler that raises is retried with backoff (``retry_backoff`` doubling up to
    ``retry_backoff_max`` seconds) while later records of its partition wait; the attempt count is
    stored. After ``max_attempts`` the record is written to ``dead_letter_topic`` (``"{topic}.dlq"``)
    and the offset moves past it in the transaction that records this.

    With ``pipeline`` (default) a batch first runs in psycopg's pipeline mode without per-record
    savepoints (a few round trips per batch instead of three per record); if anything in it fails,
    the batch is rolled back and re-run record by record, each handler in its own savepoint, so the
    failing record is known exactly and the others commit. A handler may therefore be called more
    than once for a record; its database effects are committed exactly once.

    Arguments are explicit (no environment variables). ``client`` picks the Kafka client:
    ``"kafka-python"`` (default) or ``"confluent"`` (confluent-kafka/librdkafka: fetching, heartbeats
    and record parsing off the GIL, so fewer Python instructions per record and lower latency; a
    group may mix both). ``kafka_config`` passes extra options to that client (``KafkaConsumer``
    keyword arguments, or librdkafka settings such as ``"security.protocol"``).

    ``freeze_gc`` (default True): ``run()`` calls ``gc.freeze()`` once at start, so the cyclic
    garbage collector's full collections skip every object alive then (imports, the application's
    state); without it they cost ~10 us per event in a busy consumer. Pass False to leave the
    process's collector untouched.
    """

    def __init__(
        self,
        *,
        group: str,
        topics: Sequence[str],
        bootstrap_servers: str | Sequence[str],
        database_url: str,
        schema: str = DEFAULT_SCHEMA,
        start_from: str = "earliest",
        max_attempts: int = 5,
        retry_backoff: float = 0.2,
        retry_backoff_max: float = 10.0,
        dead_letter_topic: str | Callable[[str], str] = "{topic}.dlq",
        max_batch: int = 500,
        pipeline: bool = True,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        dedupe_retention: timedelta = timedelta(days=14),
        prune_interval: float = 600.0,
        create_tables: bool = True,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        client_id: str | None = None,
        kafka_config: dict[str, Any] | None = None,
        client: str = "kafka-python",
        freeze_gc: bool = True,
    ) -> None:
        super().__init__(
            make_settings(
                group=group,
                topics=topics,
                bootstrap_servers=bootstrap_servers,
                database_url=database_url,
                schema=schema,
                start_from=start_from,
                max_attempts=max_attempts,
                retry_backoff=retry_backoff,
                retry_backoff_max=retry_backoff_max,
                dead_letter_topic=dead_letter_topic,
                max_batch=max_batch,
                pipeline=pipeline,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                dedupe_retention=dedupe_retention,
                prune_interval=prune_interval,
                create_tables=create_tables,
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                client_id=client_id,
                kafka_config=kafka_config,
                client=client,
                freeze_gc=freeze_gc,
            )
        )
        self._conn: psycopg.Connection[Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        """Consume until :meth:`stop`, SIGTERM or SIGINT; then commit, leave the group and return.

        Signal handlers are installed only when called from the main thread (and restored after).

        :raises ConsumerError: no handlers, the database URL or the brokers are unusable, or a
            stored offset is beyond the end of its partition. A database that does not answer
            (down, restarting) is waited for, at start as later, with a warning per attempt.
        """
        self._check_handlers()
        if self._running:
            raise ConsumerError("run() is already running for this consumer")
        self._running = True
        self._stopping.clear()
        self._freeze_gc()
        previous = self._install_signals()
        try:
            self._conn = self._connect()
            if self._conn is None:
                return  # stopped while waiting for the database
            self._start_services()
            self._new_kafka_consumer()
            logger.info("group %s: consuming %s", self.group, ", ".join(self._settings.topics))
            while not self._stopping.is_set():
                try:
                    self._tick()
                except psycopg.OperationalError as exc:
                    self._reconnect(exc)
            self._broker_commit(force=True)
        finally:
            self._shutdown()
            for signum, handler in previous:
                signal.signal(signum, handler)
            self._running = False

    def _install_signals(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []

        def on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("group %s: signal %s, stopping after the batch in hand", self.group, signum)
            self._stopping.set()

        previous: list[tuple[int, Any]] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous.append((signum, signal.signal(signum, on_signal)))
        return previous

    def _open(self) -> psycopg.Connection[Any] | None:
        """Connect, waiting out a database that is down or restarting (None: stop() came first).

        A consumer started while PostgreSQL restarts (or fails over) waits like one that was
        running; every attempt logs why it failed, so a wrong address or password shows too.
        """
        delay = 0.2
        while not self._stopping.is_set():
            try:
                return psycopg.connect(self._settings.database_url)
            except psycopg.OperationalError as exc:
                logger.warning("group %s: database unreachable (%s); retry in %.1f s", self.group, exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
            except psycopg.Error as exc:
                raise ConsumerError(f"cannot connect to the consumer database: {exc}") from exc
        return None

    def _connect(self) -> psycopg.Connection[Any] | None:
        conn = self._open()
        if conn is None:
            return None
        try:
            if self._settings.create_tables:
                migrate(conn, schema=self._settings.schema)
            else:
                row = conn.execute(
                    "SELECT to_regclass(%s)", (self._tables.placeholders["offsets"].as_string(None),)
                ).fetchone()
                conn.rollback()
                if row is None or row[0] is None:
                    raise ConsumerError(
                        f"the consumer tables do not exist in schema {self._settings.schema!r}: run `outbox db migrate` "
                        "or pass create_tables=True"
                    )
        except BaseException:
            conn.close()
            raise
        return conn

    def _reconnect(self, exc: Exception) -> None:
        logger.warning("group %s: database connection failed (%s); reconnecting", self.group, exc)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for state in self._states.values():  # an in-doubt commit: re-read the offsets
            state.expected = -1
            state.retry_at = None
        self._conn = self._open()

    def _shutdown(self) -> None:
        if self._kafka is not None:
            try:
                self._kafka.close(autocommit=False)
            except Exception as exc:
                logger.warning("group %s: closing the Kafka consumer: %s", self.group, exc)
            self._kafka = None
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=5)
            self._producer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._states.clear()
        self._stop_services()
        logger.info("group %s: stopped", self.group)

    # -- the loop -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self._position_new()
        due = self._due_retries()
        if due:
            self._kafka.resume(*due)
        try:
            records = self._kafka.poll(timeout_ms=self._poll_timeout_ms(0.2), max_records=self._settings.max_batch)
        except KafkaError as exc:
            if not transient_kafka_error(exc):
                raise ConsumerError(f"group {self.group}: Kafka client error: {exc}") from exc
            logger.warning("group %s: broker unavailable (%s); retrying", self.group, exc)
            self._stopping.wait(0.5)
            return
        self._position_new()
        for state, events in self._usable(records):
            if self._states.get(state.tp) is not state:
                continue
            self._process(state, events)
            if self._stopping.is_set():
                break
        self._broker_commit()
        self._update_lag()
        self._maybe_prune()

    def _position_new(self) -> None:
        """Position the partitions assigned and not positioned yet. A broker that cannot answer the
        offset lookups (two of three Kafka nodes down, a partition without a leader) leaves them
        paused and unpositioned: the next tick tries again, instead of run() ending."""
        try:
            self._position(self._take_rebalances())
        except KafkaError as exc:
            if not transient_kafka_error(exc):
                raise ConsumerError(f"group {self.group}: Kafka client error: {exc}") from exc
            logger.warning("group %s: broker unavailable while positioning partitions (%s); retrying", self.group, exc)

    def _position(self, partitions: list[Any]) -> None:
        """Seek newly assigned partitions to the offsets stored in the database (creating them for a new group)."""
        if not partitions:
            return
        conn = self._db()
        s = self._settings
        topics = sorted({tp.topic for tp in partitions})
        with conn.transaction():
            rows = conn.execute(self._q["load_offsets"], {"group": s.group, "topics": topics}).fetchall()
        stored = {(t, p): o for t, p, o in rows}
        missing = [tp for tp in partitions if (tp.topic, tp.partition) not in stored]
        if missing:
            starts = (
                self._kafka.beginning_offsets(missing)
                if s.start_from == "earliest"
                else self._kafka.end_offsets(missing)
            )
            with conn.transaction():
                for tp in missing:
                    conn.execute(
                        self._q["init_offset"],
                        {"group": s.group, "topic": tp.topic, "partition": tp.partition, "offset": starts[tp]},
                    )
                rows = conn.execute(self._q["load_offsets"], {"group": s.group, "topics": topics}).fetchall()
            stored = {(t, p): o for t, p, o in rows}
        with conn.transaction():
            failures = conn.execute(self._q["load_failures"], {"group": s.group}).fetchall()
        begins = self._kafka.beginning_offsets(partitions)
        ends = self._kafka.end_offsets(partitions)
        for tp in partitions:
            state = self._states.get(tp)
            if state is None:
                continue
            offset = int(stored[(tp.topic, tp.partition)])
            _check_bounds(self.group, tp, offset, begins[tp], ends[tp])
            state.expected = offset
            state.retry_at = None
            mine = [Failure(o, a, e) for t, p, o, a, e in failures if (t, p) == (tp.topic, tp.partition) and o >= offset]
            state.failure = min(mine, key=lambda f: f.offset) if mine else None
            self._kafka.seek(tp, max(offset, begins[tp]))
            self._kafka.resume(tp)
            logger.info("group %s: %s/%s starts at offset %s (from the database)", s.group, tp.topic, tp.partition, offset)

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise psycopg.OperationalError("no database connection")
        return self._conn

    def _process(self, state: PartitionState, events: list[ConsumedEvent]) -> None:
        s = self._settings
        while events:
            failure = state.failure
            if failure is not None and failure.offset < events[0].offset:
                state.failure = failure = None
            if failure is not None and failure.offset == events[0].offset and failure.attempts >= s.max_attempts:
                if not self._dead_letter(state, events[0], failure):
                    return
                events = events[1:]
                continue
            careful = failure is not None and failure.offset <= events[-1].offset
            try:
                outcome = None
                if not careful and s.pipeline:
                    try:
                        outcome = self._batch(state, events, careful=False)
                    except (_Lost, psycopg.OperationalError):
                        raise
                    except Exception as exc:
                        logger.debug("group %s: batch failed (%s); re-running it record by record", s.group, exc)
                if outcome is None:
                    outcome = self._batch(state, events, careful=True)
            except _Lost:
                self._metrics.lost_partitions += 1
                logger.warning(
                    "group %s: %s/%s was moved by another member; rolled back and re-reading its offset",
                    s.group, state.tp.topic, state.tp.partition,
                )  # fmt: skip
                state.expected = -1
                self._position([state.tp])
                return
            self._after_commit(state, outcome.next_offset)
            m = self._metrics
            m.processed += outcome.processed
            m.duplicates += outcome.duplicates
            m.skipped += outcome.skipped
            m.batches += 1
            if outcome.failed_at is None:
                return
            event = events[outcome.failed_at]
            if outcome.error:
                m.failed += 1
                state.failure = Failure(event.offset, outcome.attempts, outcome.error)
            failure = state.failure
            assert failure is not None
            if failure.attempts >= s.max_attempts:
                if not self._dead_letter(state, event, failure):
                    return
                events = events[outcome.failed_at + 1 :]
                continue
            self._schedule_retry(state, event.offset)
            return

    def _batch(self, state: PartitionState, events: list[ConsumedEvent], *, careful: bool) -> _Outcome:
        conn = self._db()
        s = self._settings
        q = self._q
        where = {"group": s.group, "topic": state.tp.topic, "partition": state.tp.partition}
        ids = [e.id for e in events]
        failure = state.failure
        out = _Outcome(next_offset=events[-1].offset + 1, processed=0, duplicates=0, skipped=0)
        observe = self._metrics.observe_handler
        pipeline = contextlib.nullcontext() if careful else conn.pipeline()
        with pipeline, conn.transaction():
            row = conn.execute(q["begin_batch"], {**where, "ids": ids}).fetchone()
            if row is None or row[0] != state.expected:
                raise _Lost
            # The offset row is now locked by this transaction and holds ``expected``: the
            # compare-and-set in finish_batch cannot fail before COMMIT.
            done = set(row[1])
            applied = []
            failed_exc: BaseException | None = None
            run: list[ConsumedEvent] = []  # consecutive records for run_spec (a batch handler), not yet handed over
            run_spec: HandlerSpec | None = None
            for index, event in enumerate(events):
                if event.id in done:
                    out.duplicates += 1
                    continue
                if failure is not None and event.offset == failure.offset and failure.attempts >= s.max_attempts:
                    out.failed_at = index  # dead-letter it without another attempt
                    break
                spec = self._find_handler(event.type)
                if spec is None:
                    out.skipped += 1
                    continue
                if run and spec is not run_spec:
                    _call_batch(run_spec, run, conn, observe)
                    run = []
                if careful:
                    started = time.perf_counter()
                    try:
                        with conn.transaction():
                            if spec.batch:
                                spec.func([batch_argument(event)], conn)
                            else:
                                spec.func(spec.argument(event), conn)
                    except Exception as exc:
                        out.failed_at = index
                        failed_exc = exc
                        break
                    observe(time.perf_counter() - started)
                elif spec.batch:
                    run.append(batch_argument(event))
                    run_spec = spec
                else:
                    started = time.perf_counter()
                    spec.func(spec.argument(event), conn)
                    observe(time.perf_counter() - started)
                out.processed += 1
                done.add(event.id)
                applied.append(event.id)
            if run:
                _call_batch(run_spec, run, conn, observe)
            if out.failed_at is not None:
                out.next_offset = events[out.failed_at].offset
            crashpoint("consumer.in_handler")  # tests only: effects written, not committed
            finish = conn.execute(
                q["finish_batch"], {**where, "ids": applied, "next": out.next_offset, "expected": state.expected}
            )
            if careful:
                if finish.fetchone() is None:
                    raise _Lost
                if failed_exc is not None and out.failed_at is not None:
                    event = events[out.failed_at]
                    out.error = error_text(failed_exc)
                    attempts = conn.execute(
                        q["record_failure"],
                        {**where, "offset": event.offset, "event_id": event.id,
                         "error": out.error},
                    ).fetchone()  # fmt: skip
                    out.attempts = int(attempts[0]) if attempts else 1
        # Pipelined: finish_batch, COMMIT and the sync went out together (one round trip, not
        # two). The row lock taken by begin_batch made the compare-and-set certain; its result is
        # checked here only as a guard (the processed ids committed with the effects, so re-reading
        # the offset and replaying would apply nothing twice).
        if not careful and finish.fetchone() is None:
            raise _Lost
        return out

    def _dead_letter(self, state: PartitionState, event: ConsumedEvent, failure: Failure) -> bool:
        """Write ``event`` to its dead-letter topic, then move the offset past it; False if that failed."""
        s = self._settings
        topic, key, value, headers = self._dead_letter_record(event, failure.attempts, failure.error)
        try:
            self._new_producer().send(topic, key=key, value=value, headers=headers).get(timeout=30)
        except Exception as exc:
            logger.error(
                "group %s: cannot write %s/%s@%s to the dead-letter topic %s (%s); will try again",
                s.group, event.topic, event.partition, event.offset, topic, exc,
            )  # fmt: skip
            self._schedule_retry(state, event.offset)
            return False
        conn = self._db()
        where = {"group": s.group, "topic": event.topic, "partition": event.partition}
        with conn.transaction():
            row = conn.execute(self._q["begin_batch"], {**where, "ids": []}).fetchone()
            if row is None or row[0] != event.offset:
                logger.warning("group %s: %s/%s was moved by another member", s.group, event.topic, event.partition)
                state.expected = -1
                self._position([state.tp])
                return False
            conn.execute(self._q["mark_dead_lettered"], {**where, "offset": event.offset})
            conn.execute(
                self._q["finish_batch"], {**where, "ids": [], "next": event.offset + 1, "expected": event.offset}
            )
        self._after_commit(state, event.offset + 1)
        state.failure = None
        self._metrics.dead_lettered += 1
        logger.error(
            "group %s: %s/%s@%s (event %s) dead-lettered to %s after %s attempts: %s",
            s.group, event.topic, event.partition, event.offset, event.id, topic, failure.attempts, failure.error,
        )  # fmt: skip
        return True

    def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < self._settings.prune_interval:
            return
        self._last_prune = now
        self.prune()

    def prune(self) -> int:
        """Delete processed ids (and dead-letter bookkeeping) older than ``dedupe_retention``; return how many ids.

        ``run()`` calls it every ``prune_interval`` seconds; deletes go in bounded chunks.
        """
        conn = self._db() if self._conn is not None else None
        own = conn is None
        if conn is None:
            conn = psycopg.connect(self._settings.database_url)
        params = {"group": self._settings.group, "older_than": self._settings.dedupe_retention, "limit": _PRUNE_CHUNK}
        total = 0
        try:
            for _ in range(_PRUNE_MAX_CHUNKS):
                with conn.transaction():
                    deleted = conn.execute(self._q["prune_processed"], params).rowcount
                total += max(deleted, 0)
                if deleted < _PRUNE_CHUNK:
                    break
            with conn.transaction():
                conn.execute(self._q["prune_dead_letters"], params)
        finally:
            if own:
                conn.close()
        if total:
            logger.info("group %s: pruned %s processed ids older than %s", self.group, total, self._settings.dedupe_retention)
        return total


def _call_batch(
    spec: HandlerSpec | None, events: list[ConsumedEvent], conn: psycopg.Connection[Any], observe: Callable[..., None]
) -> None:
    assert spec is not None
    started = time.perf_counter()
    spec.func(events, conn)
    observe(time.perf_counter() - started, len(events))


def _check_bounds(group: str, tp: Any, offset: int, begin: int, end: int) -> None:
    if offset > end:
        raise ConsumerError(
            f"group {group}: the database says {tp.topic}/{tp.partition} continues at offset {offset}, but the "
            f"partition ends at {end}: was the topic deleted and re-created, or the broker's data lost? If the "
            f"log really restarted, delete the group's row in consumer_offsets for this partition (it restarts "
            f"per start_from); deduplication by event id still protects against re-applying events"
        )
    if offset < begin:
        logger.warning(
            "group %s: records %s..%s of %s/%s were deleted by retention before the group applied them; "
            "continuing at %s",
            group, offset, begin - 1, tp.topic, tp.partition, begin,
        )  # fmt: skip
