"""The asyncio twin: :class:`AsyncConsumer` (async handlers, psycopg ``AsyncConnection``).

Both Kafka clients (``client="kafka-python"`` or ``"confluent"``) are blocking: ``poll()`` and other
network calls run in a worker thread (``asyncio.to_thread``), one at a time; heartbeats run on the
client's own threads. Database work and
handlers run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import psycopg
from kafka.errors import KafkaError

from consumers._consumer import _check_bounds, _Lost, _Outcome
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
from consumers.schema import DEFAULT_SCHEMA, migrate_async
from outbox._faults import crashpoint

__all__ = ["AsyncConsumer"]

_PRUNE_CHUNK = 5000
_PRUNE_MAX_CHUNKS = 20


class AsyncConsumer(ConsumerBase):
    """:class:`consumers.Consumer` for asyncio: same arguments, same semantics.

    Handlers are ``async def handler(event, conn)`` with ``conn`` a psycopg ``AsyncConnection``
    inside the batch's open transaction. ``await consumer.run()`` consumes until :meth:`stop`,
    SIGTERM or SIGINT (handled when run in the main thread's event loop).
    """

    _want_async = True

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
        self._conn: psycopg.AsyncConnection[Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop`, SIGTERM or SIGINT; then commit, leave the group and return.

        :raises ConsumerError: as :meth:`consumers.Consumer.run`.
        """
        self._check_handlers()
        if self._running:
            raise ConsumerError("run() is already running for this consumer")
        self._running = True
        self._stopping.clear()
        self._freeze_gc()
        loop = asyncio.get_running_loop()
        signals: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for signum in (int(signal.SIGTERM), int(signal.SIGINT)):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, self._on_signal, signum)
                    signals.append(signum)
        try:
            self._conn = await self._connect()
            if self._conn is None:
                return  # stopped while waiting for the database
            self._start_services()
            await asyncio.to_thread(self._new_kafka_consumer)
            logger.info("group %s: consuming %s", self.group, ", ".join(self._settings.topics))
            while not self._stopping.is_set():
                try:
                    await self._tick()
                except psycopg.OperationalError as exc:
                    await self._reconnect(exc)
            if self._broker_commits:
                await asyncio.to_thread(self._broker_commit, force=True)
        finally:
            await self._shutdown()
            for signum in signals:
                loop.remove_signal_handler(signum)
            self._running = False

    def _on_signal(self, signum: int) -> None:
        logger.info("group %s: signal %s, stopping after the batch in hand", self.group, signum)
        self._stopping.set()

    async def _open(self) -> psycopg.AsyncConnection[Any] | None:
        """Connect, waiting out a database that is down or restarting (None: stop() came first)."""
        delay = 0.2
        while not self._stopping.is_set():
            try:
                return await psycopg.AsyncConnection.connect(self._settings.database_url)
            except psycopg.OperationalError as exc:
                logger.warning("group %s: database unreachable (%s); retry in %.1f s", self.group, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except psycopg.Error as exc:
                raise ConsumerError(f"cannot connect to the consumer database: {exc}") from exc
        return None

    async def _connect(self) -> psycopg.AsyncConnection[Any] | None:
        conn = await self._open()
        if conn is None:
            return None
        try:
            if self._settings.create_tables:
                await migrate_async(conn, schema=self._settings.schema)
            else:
                cur = await conn.execute(
                    "SELECT to_regclass(%s)", (self._tables.placeholders["offsets"].as_string(None),)
                )
                row = await cur.fetchone()
                await conn.rollback()
                if row is None or row[0] is None:
                    raise ConsumerError(
                        f"the consumer tables do not exist in schema {self._settings.schema!r}: run `outbox db migrate` "
                        "or pass create_tables=True"
                    )
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _reconnect(self, exc: Exception) -> None:
        logger.warning("group %s: database connection failed (%s); reconnecting", self.group, exc)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        for state in self._states.values():
            state.expected = -1
            state.retry_at = None
        self._conn = await self._open()

    async def _shutdown(self) -> None:
        if self._kafka is not None:
            kafka, self._kafka = self._kafka, None
            try:
                await asyncio.to_thread(kafka.close, autocommit=False)
            except Exception as exc:
                logger.warning("group %s: closing the Kafka consumer: %s", self.group, exc)
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(producer.close, timeout=5)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        self._states.clear()
        self._stop_services()
        logger.info("group %s: stopped", self.group)

    # -- the loop -----------------------------------------------------------------------------

    async def _tick(self) -> None:
        await self._position_new()
        due = self._due_retries()
        if due:
            self._kafka.resume(*due)
        try:
            records = await asyncio.to_thread(
                self._kafka.poll, timeout_ms=self._poll_timeout_ms(0.2), max_records=self._settings.max_batch
            )
        except KafkaError as exc:
            if not transient_kafka_error(exc):
                raise ConsumerError(f"group {self.group}: Kafka client error: {exc}") from exc
            logger.warning("group %s: broker unavailable (%s); retrying", self.group, exc)
            await asyncio.sleep(0.5)
            return
        await self._position_new()
        for state, events in self._usable(records):
            if self._states.get(state.tp) is not state:
                continue
            await self._process(state, events)
            if self._stopping.is_set():
                break
        self._broker_commit()
        self._update_lag()
        await self._maybe_prune()

    def _db(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None:
            raise psycopg.OperationalError("no database connection")
        return self._conn

    async def _position_new(self) -> None:
        """Position the partitions assigned and not positioned yet; see ``Consumer._position_new``."""
        try:
            await self._position(self._take_rebalances())
        except KafkaError as exc:
            if not transient_kafka_error(exc):
                raise ConsumerError(f"group {self.group}: Kafka client error: {exc}") from exc
            logger.warning("group %s: broker unavailable while positioning partitions (%s); retrying", self.group, exc)

    async def _position(self, partitions: list[Any]) -> None:
        if not partitions:
            return
        conn = self._db()
        s = self._settings
        topics = sorted({tp.topic for tp in partitions})
        async with conn.transaction():
            cur = await conn.execute(self._q["load_offsets"], {"group": s.group, "topics": topics})
            rows = await cur.fetchall()
        stored = {(t, p): o for t, p, o in rows}
        missing = [tp for tp in partitions if (tp.topic, tp.partition) not in stored]
        if missing:
            lookup = self._kafka.beginning_offsets if s.start_from == "earliest" else self._kafka.end_offsets
            starts = await asyncio.to_thread(lookup, missing)
            async with conn.transaction():
                for tp in missing:
                    await conn.execute(
                        self._q["init_offset"],
                        {"group": s.group, "topic": tp.topic, "partition": tp.partition, "offset": starts[tp]},
                    )
                cur = await conn.execute(self._q["load_offsets"], {"group": s.group, "topics": topics})
                rows = await cur.fetchall()
            stored = {(t, p): o for t, p, o in rows}
        async with conn.transaction():
            cur = await conn.execute(self._q["load_failures"], {"group": s.group})
            failures = await cur.fetchall()
        begins = await asyncio.to_thread(self._kafka.beginning_offsets, partitions)
        ends = await asyncio.to_thread(self._kafka.end_offsets, partitions)
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

    async def _process(self, state: PartitionState, events: list[ConsumedEvent]) -> None:
        s = self._settings
        while events:
            failure = state.failure
            if failure is not None and failure.offset < events[0].offset:
                state.failure = failure = None
            if failure is not None and failure.offset == events[0].offset and failure.attempts >= s.max_attempts:
                if not await self._dead_letter(state, events[0], failure):
                    return
                events = events[1:]
                continue
            careful = failure is not None and failure.offset <= events[-1].offset
            try:
                outcome = None
                if not careful and s.pipeline:
                    try:
                        outcome = await self._batch(state, events, careful=False)
                    except (_Lost, psycopg.OperationalError):
                        raise
                    except Exception as exc:
                        logger.debug("group %s: batch failed (%s); re-running it record by record", s.group, exc)
                if outcome is None:
                    outcome = await self._batch(state, events, careful=True)
            except _Lost:
                self._metrics.lost_partitions += 1
                logger.warning(
                    "group %s: %s/%s was moved by another member; rolled back and re-reading its offset",
                    s.group, state.tp.topic, state.tp.partition,
                )  # fmt: skip
                state.expected = -1
                await self._position([state.tp])
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
                if not await self._dead_letter(state, event, failure):
                    return
                events = events[outcome.failed_at + 1 :]
                continue
            self._schedule_retry(state, event.offset)
            return

    async def _batch(self, state: PartitionState, events: list[ConsumedEvent], *, careful: bool) -> _Outcome:
        conn = self._db()
        s = self._settings
        q = self._q
        where = {"group": s.group, "topic": state.tp.topic, "partition": state.tp.partition}
        ids = [e.id for e in events]
        failure = state.failure
        out = _Outcome(next_offset=events[-1].offset + 1, processed=0, duplicates=0, skipped=0)
        observe = self._metrics.observe_handler
        pipeline: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if careful else conn.pipeline()
        )
        async with pipeline, conn.transaction():
            cur = await conn.execute(q["begin_batch"], {**where, "ids": ids})
            row = await cur.fetchone()
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
                    out.failed_at = index
                    break
                spec = self._find_handler(event.type)
                if spec is None:
                    out.skipped += 1
                    continue
                if run and spec is not run_spec:
                    await _call_batch(run_spec, run, conn, observe)
                    run = []
                if careful:
                    started = time.perf_counter()
                    try:
                        async with conn.transaction():
                            if spec.batch:
                                await spec.func([batch_argument(event)], conn)
                            else:
                                await spec.func(spec.argument(event), conn)
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
                    await spec.func(spec.argument(event), conn)
                    observe(time.perf_counter() - started)
                out.processed += 1
                done.add(event.id)
                applied.append(event.id)
            if run:
                await _call_batch(run_spec, run, conn, observe)
            if out.failed_at is not None:
                out.next_offset = events[out.failed_at].offset
            crashpoint("consumer.in_handler")  # tests only: effects written, not committed
            finish = await conn.execute(
                q["finish_batch"], {**where, "ids": applied, "next": out.next_offset, "expected": state.expected}
            )
            if careful:
                if await finish.fetchone() is None:
                    raise _Lost
                if failed_exc is not None and out.failed_at is not None:
                    event = events[out.failed_at]
                    out.error = error_text(failed_exc)
                    cur = await conn.execute(
                        q["record_failure"],
                        {**where, "offset": event.offset, "event_id": event.id,
                         "error": out.error},
                    )  # fmt: skip
                    attempts = await cur.fetchone()
                    out.attempts = int(attempts[0]) if attempts else 1
        # Pipelined: finish_batch, COMMIT and the sync went out together (one round trip, not
        # two); the compare-and-set was certain (see above), its result is only a guard here.
        if not careful and await finish.fetchone() is None:
            raise _Lost
        return out

    async def _dead_letter(self, state: PartitionState, event: ConsumedEvent, failure: Failure) -> bool:
        s = self._settings
        topic, key, value, headers = self._dead_letter_record(event, failure.attempts, failure.error)

        def send() -> None:
            self._new_producer().send(topic, key=key, value=value, headers=headers).get(timeout=30)

        try:
            await asyncio.to_thread(send)
        except Exception as exc:
            logger.error(
                "group %s: cannot write %s/%s@%s to the dead-letter topic %s (%s); will try again",
                s.group, event.topic, event.partition, event.offset, topic, exc,
            )  # fmt: skip
            self._schedule_retry(state, event.offset)
            return False
        conn = self._db()
        where = {"group": s.group, "topic": event.topic, "partition": event.partition}
        async with conn.transaction():
            cur = await conn.execute(self._q["begin_batch"], {**where, "ids": []})
            row = await cur.fetchone()
            if row is None or row[0] != event.offset:
                logger.warning("group %s: %s/%s was moved by another member", s.group, event.topic, event.partition)
                state.expected = -1
                await self._position([state.tp])
                return False
            await conn.execute(self._q["mark_dead_lettered"], {**where, "offset": event.offset})
            await conn.execute(
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

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < self._settings.prune_interval:
            return
        self._last_prune = now
        await self.prune()

    async def prune(self) -> int:
        """Delete processed ids older than ``dedupe_retention`` (see :meth:`consumers.Consumer.prune`)."""
        own = self._conn is None
        conn = self._conn if self._conn is not None else await psycopg.AsyncConnection.connect(self._settings.database_url)
        params = {"group": self._settings.group, "older_than": self._settings.dedupe_retention, "limit": _PRUNE_CHUNK}
        total = 0
        try:
            for _ in range(_PRUNE_MAX_CHUNKS):
                async with conn.transaction():
                    cur = await conn.execute(self._q["prune_processed"], params)
                deleted = cur.rowcount
                total += max(deleted, 0)
                if deleted < _PRUNE_CHUNK:
                    break
            async with conn.transaction():
                await conn.execute(self._q["prune_dead_letters"], params)
        finally:
            if own:
                await conn.close()
        if total:
            logger.info("group %s: pruned %s processed ids older than %s", self.group, total, self._settings.dedupe_retention)
        return total


async def _call_batch(
    spec: HandlerSpec | None, events: list[ConsumedEvent], conn: psycopg.AsyncConnection[Any], observe: Callable[..., None]
) -> None:
    assert spec is not None
    started = time.perf_counter()
    await spec.func(events, conn)
    observe(time.perf_counter() - started, len(events))
