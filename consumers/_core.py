"""What the sync and async consumers share: options, partition state, the rebalance listener,
handler registry, dead-letter records and broker-side offset commits. No database I/O here."""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from consumers._clients import CLIENTS, CONFLUENT_RESERVED, ConfluentClient, confluent_config
from consumers._metrics import ConsumerMetrics, MetricsServer, MetricsSnapshot
from consumers._records import ConsumedEvent, HandlerSpec, handler_spec
from consumers.errors import ConsumerError
from consumers.schema import DEFAULT_SCHEMA, ConsumerTables
from outbox._faults import crashpoint

__all__ = ["DLQ_HEADERS", "StartFrom"]

logger = logging.getLogger("consumers")


def transient_kafka_error(exc: BaseException) -> bool:
    """A broker connection reset, a restart, a leader move: the client recovers on its own.

    kafka-python 3.0 raises UnknownBrokerIdError (not marked retriable) from an offset lookup
    whose partition leader, named by fresh metadata, is a broker its connection manager does not
    know yet (seen while a Kafka node restarts); the next metadata refresh fixes it.
    """
    import kafka.errors as ke

    transient = (ke.KafkaConnectionError, ke.NodeNotReadyError, ke.KafkaTimeoutError, ke.UnknownBrokerIdError)
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, transient)

StartFrom = Literal["earliest", "latest"]
F = TypeVar("F", bound=Callable[..., Any])

#: Headers a dead-letter record carries on top of the original record's headers.
DLQ_HEADERS = ("dlq-error", "dlq-attempts", "dlq-topic", "dlq-partition", "dlq-offset", "dlq-group", "dlq-at")
_MAX_ERROR_TEXT = 4000
_BROKER_COMMIT_INTERVAL = 1.0


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


@dataclass
class Failure:
    """A record whose handler failed: its persisted attempt count and last error."""

    offset: int
    attempts: int
    error: str


@dataclass
class PartitionState:
    """What the consumer knows about one partition it owns."""

    tp: Any  # TopicPartition
    expected: int = -1  # the offset stored in the database (next record to apply); -1: not positioned
    failure: Failure | None = None
    retry_at: float | None = None  # monotonic time at which a paused partition retries

    @property
    def positioned(self) -> bool:
        return self.expected >= 0


@dataclass(frozen=True)
class Settings:
    """A consumer's validated options (see :class:`consumers.Consumer` for their meaning)."""

    group: str
    topics: tuple[str, ...]
    bootstrap_servers: str | tuple[str, ...]
    database_url: str
    schema: str = DEFAULT_SCHEMA
    start_from: StartFrom = "earliest"
    max_attempts: int = 5
    retry_backoff: float = 0.2
    retry_backoff_max: float = 10.0
    dead_letter_topic: Callable[[str], str] = field(default=lambda topic: f"{topic}.dlq")
    max_batch: int = 500
    pipeline: bool = True
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    dedupe_retention: timedelta = timedelta(days=14)
    prune_interval: float = 600.0
    create_tables: bool = True
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    client_id: str | None = None
    kafka_config: tuple[tuple[str, Any], ...] = ()
    client: str = "kafka-python"
    freeze_gc: bool = True


def make_settings(
    *,
    group: str,
    topics: Sequence[str],
    bootstrap_servers: str | Sequence[str],
    database_url: str,
    schema: str,
    start_from: str,
    max_attempts: int,
    retry_backoff: float,
    retry_backoff_max: float,
    dead_letter_topic: str | Callable[[str], str],
    max_batch: int,
    pipeline: bool,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    max_poll_interval_ms: int,
    dedupe_retention: timedelta,
    prune_interval: float,
    create_tables: bool,
    metrics_port: int | None,
    metrics_host: str,
    client_id: str | None,
    kafka_config: dict[str, Any] | None,
    client: str = "kafka-python",
    freeze_gc: bool = True,
) -> Settings:
    """Check every option once, with messages that say what to pass instead."""
    if not isinstance(group, str) or not group:
        raise ConsumerError(f"group must be a non-empty str (the consumer group id), got {group!r}")
    if isinstance(topics, str):
        raise ConsumerError(f"topics must be a list of topic names, not a str: use topics=[{topics!r}]")
    topic_list = tuple(topics)
    if not topic_list or not all(isinstance(t, str) and t for t in topic_list):
        raise ConsumerError(f"topics must be a non-empty list of topic names, got {topics!r}")
    if start_from not in ("earliest", "latest"):
        raise ConsumerError(f"start_from must be 'earliest' or 'latest', got {start_from!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConsumerError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
    if not (retry_backoff >= 0 and retry_backoff_max >= retry_backoff):
        raise ConsumerError("retry_backoff must be >= 0 and retry_backoff_max >= retry_backoff (seconds)")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ConsumerError(f"max_batch must be an int >= 1, got {max_batch!r}")
    if not isinstance(dedupe_retention, timedelta) or dedupe_retention <= timedelta(0):
        raise ConsumerError(f"dedupe_retention must be a positive timedelta, got {dedupe_retention!r}")
    dlq_name: Callable[[str], str]
    if isinstance(dead_letter_topic, str):
        template = dead_letter_topic
        if "{topic}" not in template:
            raise ConsumerError(
                f"dead_letter_topic must contain '{{topic}}' (e.g. '{{topic}}.dlq'), or be a callable; got {template!r}"
            )

        def from_template(topic: str) -> str:
            return template.format(topic=topic)

        dlq_name = from_template

    elif callable(dead_letter_topic):
        dlq_name = dead_letter_topic
    else:
        raise ConsumerError("dead_letter_topic must be a str like '{topic}.dlq' or a callable topic -> name")
    servers: str | tuple[str, ...] = (
        bootstrap_servers if isinstance(bootstrap_servers, str) else tuple(bootstrap_servers)
    )
    if not servers:
        raise ConsumerError("bootstrap_servers must name at least one HOST:PORT")
    if not isinstance(database_url, str) or not database_url:
        raise ConsumerError("database_url must be a libpq URL or conninfo string of the consumer's database")
    ConsumerTables(schema)  # validates the name
    if client not in CLIENTS:
        raise ConsumerError(f"client must be one of {', '.join(map(repr, CLIENTS))}, got {client!r}")
    reserved = {"group_id", "enable_auto_commit", "auto_offset_reset", "bootstrap_servers"}
    if client == "confluent":
        reserved = set(CONFLUENT_RESERVED)
    extra = dict(kafka_config or {})
    if client == "confluent" and "cooperative" in str(extra.get("partition.assignment.strategy", "")):
        raise ConsumerError(
            "client='confluent' supports the eager assignors only (range, roundrobin): new partitions are taken "
            "paused until seeked to the database's offsets"
        )
    clash = sorted(reserved & set(extra))
    if clash:
        raise ConsumerError(f"kafka_config may not set {clash}: the SDK manages them (use the Consumer's arguments)")
    return Settings(
        group=group,
        topics=topic_list,
        bootstrap_servers=servers,
        database_url=database_url,
        schema=schema,
        start_from=start_from,  # type: ignore[arg-type]
        max_attempts=max_attempts,
        retry_backoff=float(retry_backoff),
        retry_backoff_max=float(retry_backoff_max),
        dead_letter_topic=dlq_name,
        max_batch=max_batch,
        pipeline=pipeline,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        max_poll_interval_ms=max_poll_interval_ms,
        dedupe_retention=dedupe_retention,
        prune_interval=float(prune_interval),
        create_tables=create_tables,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        client_id=client_id,
        kafka_config=tuple(extra.items()),
        client=client,
        freeze_gc=bool(freeze_gc),
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO thread inside ``poll()``: it only pauses new partitions (so nothing
    is fetched before the consumer seeks them to the database's offsets) and queues the change."""

    def __init__(self, base: ConsumerBase) -> None:
        self._base = base

    def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
        self._base._queue_rebalance("revoked", set(revoked))

    def on_partitions_lost(self, lost: Iterable[Any]) -> None:
        self._base._queue_rebalance("revoked", set(lost))

    def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        partitions = set(assigned)
        if partitions and self._base._kafka is not None:
            self._base._kafka.pause(*partitions)
        self._base._queue_rebalance("assigned", partitions)


class ConsumerBase:
    """State and Kafka plumbing shared by :class:`Consumer` and :class:`AsyncConsumer`."""

    _want_async = False

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tables = ConsumerTables(settings.schema)
        self._q = self._tables.queries
        self._handlers: dict[str, HandlerSpec] = {}
        self._fallback: HandlerSpec | None = None
        self._states: dict[Any, PartitionState] = {}
        self._rebalances: list[tuple[str, set[Any]]] = []
        self._rebalance_lock = threading.Lock()
        self._kafka: Any = None
        self._producer: Any = None
        self._stopping = threading.Event()
        self._running = False
        self._metrics = ConsumerMetrics(settings.group)
        self._metrics_server: MetricsServer | None = None
        self._broker_commits: dict[Any, int] = {}
        self._last_broker_commit = 0.0
        self._last_prune = time.monotonic()

    # -- public -------------------------------------------------------------------------------

    @property
    def group(self) -> str:
        return self._settings.group

    def handler(self, event_type: str | None = None) -> Callable[[F], F]:
        """Register the decorated function for records of ``event_type`` (all others if None).

        The function is called as ``func(event, conn)`` inside the batch's open transaction, in a
        savepoint. ``event`` is a :class:`ConsumedEvent`, or an instance of the ``outbox.Event``
        subclass the first parameter is annotated with (validated; a failure counts as a failed
        attempt).
        """
        return self._register(event_type, batch=False)

    def batch_handler(self, event_type: str | None = None) -> Callable[[F], F]:
        """Register the decorated function for records of ``event_type`` (all others if None), called
        with a list of them: ``func(events, conn)``.

        ``events`` is a non-empty list of :class:`ConsumedEvent` of one partition, in log order,
        already-applied ones left out: the consecutive records of the batch that this handler
        takes (a record for another handler ends the list, so effects keep the log's order).
        The call runs inside the batch's open transaction; one call can then write all its rows with
        one statement (``cursor.executemany``, ``COPY``, ``unnest``) instead of one per record,
        which is what lets one process apply tens of thousands of events per second. If the call
        raises, the batch is rolled back and re-run with one record per call, each in its own
        savepoint (retries and dead letters then work per record as for :meth:`handler`), so the
        function must accept lists of any length. A record that cannot be decoded (``problem`` set)
        is never handed over: it counts as a failed attempt of its own, as with :meth:`handler`.
        """
        return self._register(event_type, batch=True)

    def _register(self, event_type: str | None, *, batch: bool) -> Callable[[F], F]:
        if event_type is not None and (not isinstance(event_type, str) or not event_type):
            raise ConsumerError(f"event_type must be a non-empty str or None (catch-all), got {event_type!r}")

        def register(func: F) -> F:
            spec = handler_spec(func, want_async=self._want_async, batch=batch)
            if event_type is None:
                if self._fallback is not None:
                    raise ConsumerError("a catch-all handler() is already registered")
                self._fallback = spec
            else:
                if event_type in self._handlers:
                    raise ConsumerError(f"a handler for event type {event_type!r} is already registered")
                self._handlers[event_type] = spec
            return func

        return register

    def stop(self) -> None:
        """Ask ``run()`` to finish the batch in hand, commit, leave the group and return (thread-safe)."""
        self._stopping.set()

    def metrics(self) -> MetricsSnapshot:
        """A snapshot of the counters (processed, duplicates, failed, dead-lettered, lag, latency)."""
        return self._metrics.snapshot()

    @property
    def metrics_port(self) -> int | None:
        """The port serving Prometheus text (``metrics_port=0`` picks one), None if not serving."""
        return None if self._metrics_server is None else self._metrics_server.port

    # -- internals ----------------------------------------------------------------------------

    def _find_handler(self, event_type: str | None) -> HandlerSpec | None:
        if event_type is not None:
            spec = self._handlers.get(event_type)
            if spec is not None:
                return spec
        return self._fallback

    def _check_handlers(self) -> None:
        if not self._handlers and self._fallback is None:
            raise ConsumerError(
                "no handlers registered: decorate a function with @consumer.handler('EventType') or "
                "@consumer.handler() before run()"
            )

    def _queue_rebalance(self, kind: str, partitions: set[Any]) -> None:
        with self._rebalance_lock:
            self._rebalances.append((kind, partitions))

    def _take_rebalances(self) -> list[Any]:
        """Apply queued rebalance events to the partition states; return partitions to position."""
        with self._rebalance_lock:
            events, self._rebalances = self._rebalances, []
        for kind, partitions in events:
            if kind == "revoked":
                for tp in partitions:
                    self._states.pop(tp, None)
                    self._broker_commits.pop(tp, None)
                logger.info("group %s: partitions revoked: %s", self.group, _names(partitions))
            else:
                for tp in partitions:
                    self._states[tp] = PartitionState(tp)
                logger.info("group %s: partitions assigned: %s", self.group, _names(partitions))
        return [tp for tp, state in self._states.items() if not state.positioned]

    def _freeze_gc(self) -> None:
        """Move the objects alive now (modules, configuration, the application's own state) out of
        the cyclic collector's reach: its full collections, triggered by the records and cursors a
        busy consumer allocates, then scan only what was allocated since. Measured at ~10 us per
        event (of ~60) with a one-row handler. ``freeze_gc=False`` leaves the collector alone."""
        if self._settings.freeze_gc:
            gc.freeze()

    def _start_services(self) -> None:
        if self._settings.metrics_port is not None and self._metrics_server is None:
            self._metrics_server = MetricsServer(
                self._metrics.snapshot, self._settings.metrics_host, self._settings.metrics_port
            )

    def _stop_services(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None

    def _new_kafka_consumer(self) -> Any:
        s = self._settings
        if s.client == "confluent":
            return self._new_confluent_consumer()
        config: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers,
            "group_id": s.group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": s.session_timeout_ms,
            "heartbeat_interval_ms": s.heartbeat_interval_ms,
            "max_poll_interval_ms": s.max_poll_interval_ms,
            "max_poll_records": s.max_batch,
        }
        if s.client_id is not None:
            config["client_id"] = s.client_id
        config.update(dict(s.kafka_config))
        try:
            consumer = KafkaConsumer(**config)
        except Exception as exc:
            raise ConsumerError(
                f"cannot connect to the brokers at {s.bootstrap_servers!r}: {exc} (check bootstrap_servers and that "
                "the store or Kafka is running)"
            ) from exc
        self._kafka = consumer
        consumer.subscribe(list(s.topics), listener=_Listener(self))
        return consumer

    def _new_confluent_consumer(self) -> Any:
        s = self._settings
        config = confluent_config(
            bootstrap_servers=s.bootstrap_servers,
            group=s.group,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            client_id=s.client_id,
            extra=dict(s.kafka_config),
        )
        try:
            consumer = ConfluentClient(config)
        except Exception as exc:
            raise ConsumerError(f"cannot create the confluent-kafka consumer for {s.bootstrap_servers!r}: {exc}") from exc
        self._kafka = consumer
        consumer.subscribe(list(s.topics), listener=_Listener(self))
        return consumer

    def _new_producer(self) -> Any:
        if self._producer is None:
            self._producer = KafkaProducer(
                bootstrap_servers=self._settings.bootstrap_servers, acks="all", linger_ms=0, retries=5
            )
        return self._producer

    def _dead_letter_record(
        self, event: ConsumedEvent, attempts: int, error: str
    ) -> tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]:
        headers = [(k, v) for k, v in event.raw_headers if k not in DLQ_HEADERS]
        headers += [
            ("dlq-error", error.encode()),
            ("dlq-attempts", str(attempts).encode()),
            ("dlq-topic", event.topic.encode()),
            ("dlq-partition", str(event.partition).encode()),
            ("dlq-offset", str(event.offset).encode()),
            ("dlq-group", self.group.encode()),
            ("dlq-at", datetime.now(UTC).isoformat().encode()),
        ]
        return self._settings.dead_letter_topic(event.topic), event.key_bytes, event.value, headers

    def _backoff(self, attempts: int) -> float:
        s = self._settings
        delay: float = min(s.retry_backoff * 2.0 ** max(attempts - 1, 0), s.retry_backoff_max)
        return delay * random.uniform(0.8, 1.0)

    def _after_commit(self, state: PartitionState, next_offset: int) -> None:
        crashpoint("consumer.after_effect_commit")  # tests only: committed, broker offset not yet copied
        state.expected = next_offset
        self._broker_commits[state.tp] = next_offset

    def _broker_commit(self, *, force: bool = False) -> None:
        """Copy the database's offsets to the broker (for lag tooling only; never read back)."""
        now = time.monotonic()
        if not self._broker_commits or (not force and now - self._last_broker_commit < _BROKER_COMMIT_INTERVAL):
            return
        offsets = {
            tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._broker_commits.items() if tp in self._states
        }
        self._broker_commits.clear()
        self._last_broker_commit = now
        if not offsets:
            return
        try:
            if force:
                self._kafka.commit(offsets, timeout_ms=5000)
            else:
                self._kafka.commit_async(offsets, callback=_log_commit_result)
        except Exception as exc:  # advisory: the database holds the real offsets
            logger.info("group %s: broker offset commit failed (harmless, for lag tools only): %s", self.group, exc)

    def _update_lag(self) -> None:
        lag: dict[str, int] = {}
        for tp, state in self._states.items():
            if not state.positioned:
                continue
            try:
                high = self._kafka.highwater(tp)
            except Exception:
                continue
            if high is not None:
                lag[f"{tp.topic}/{tp.partition}"] = max(int(high) - state.expected, 0)
        self._metrics.set_lag(lag)

    def _poll_timeout_ms(self, max_wait: float) -> int:
        now = time.monotonic()
        wait = max_wait
        for state in self._states.values():
            if state.retry_at is not None:
                wait = min(wait, max(state.retry_at - now, 0.0))
        return max(int(wait * 1000), 0)

    def _due_retries(self) -> list[Any]:
        now = time.monotonic()
        due = [tp for tp, s in self._states.items() if s.retry_at is not None and s.retry_at <= now]
        for tp in due:
            self._states[tp].retry_at = None
        return due

    def _schedule_retry(self, state: PartitionState, offset: int) -> None:
        assert state.failure is not None
        delay = self._backoff(state.failure.attempts)
        state.retry_at = time.monotonic() + delay
        self._kafka.seek(state.tp, offset)
        self._kafka.pause(state.tp)
        logger.warning(
            "group %s: %s/%s@%s failed (attempt %s of %s), retrying in %.2f s: %s",
            self.group, state.tp.topic, state.tp.partition, offset, state.failure.attempts,
            self._settings.max_attempts, delay, state.failure.error,
        )  # fmt: skip

    def _usable(self, records: dict[Any, list[Any]]) -> list[tuple[PartitionState, list[ConsumedEvent]]]:
        """Decode the records of positioned, not-waiting partitions, dropping those already applied."""
        from consumers._records import decode_record

        out = []
        for tp, recs in records.items():
            state = self._states.get(tp)
            if state is None or not state.positioned or state.retry_at is not None:
                continue
            expected = state.expected
            if self._settings.client == "confluent":  # (topic, partition, offset, ...) tuples
                events = [decode_record(*r) for r in recs if r[2] >= expected]
            else:
                events = [
                    decode_record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)
                    for r in recs
                    if r.offset >= expected
                ]
            if events:
                out.append((state, events))
        return out


def _names(partitions: Iterable[Any]) -> str:
    return ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)) or "none"


def _log_commit_result(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        logger.debug("broker offset commit failed (harmless, for lag tools only): %s", response)


def topic_partition(topic: str, partition: int) -> Any:
    return TopicPartition(topic, partition)
