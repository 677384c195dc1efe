"""The relay's producers: the same records through librdkafka (confluent-kafka) or kafka-python.

Both are configured for the relay's guarantees: acks=all with idempotence (a retried batch is
appended once, in order), and the Java client's murmur2 partitioner, so one key maps to one
partition whichever client, relay or broker (the store or Kafka) is used. A publish round sends a
batch of records and waits until each one is acknowledged or has failed; the relay deletes only
what was acknowledged.

Why librdkafka is the default: per record, kafka-python spends ~15-20 µs of Python (about 54,000
records/s on one core), librdkafka a few µs, which the drain target (100,000 events/s) needs.
``enable.gapless.guarantee`` makes librdkafka fail fatally rather than let a later record of a
partition be appended after an earlier one failed; the relay then builds a new producer and
re-publishes from the first unacknowledged row, so per-key order holds (duplicates may appear).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from relay.errors import ConfigError, PublishError

__all__ = [
    "ConfluentPublisher",
    "KafkaPythonPublisher",
    "OutgoingRecord",
    "Pending",
    "Publisher",
    "RoundResult",
    "make_publisher",
]

log = logging.getLogger(__name__)


class _KnownConfigWarnings(logging.Filter):
    """librdkafka warns that enable.gapless.guarantee is experimental on every start; we chose it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "enable.gapless.guarantee is experimental" not in record.getMessage()


_librdkafka_log = logging.getLogger("relay.librdkafka")
_librdkafka_log.addFilter(_KnownConfigWarnings())


class OutgoingRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    timestamp_ms: int


@dataclass
class RoundResult:
    """Per record of a round: ``None`` if acknowledged, else why not; ``broken``: make a new producer."""

    errors: list[str | None]
    broken: bool = False

    @property
    def failed(self) -> int:
        return sum(1 for e in self.errors if e is not None)


_NOT_SENT = "not acknowledged: the round was abandoned (shutdown)"


class Pending:
    """The outcomes of one sent batch, filled in by the producer's delivery reports."""

    __slots__ = ("errors", "remaining")

    def __init__(self, n: int) -> None:
        self.errors: list[str | None] = [_NOT_SENT] * n
        self.remaining = n

    def delivered(self, index: int, err: Any, msg: Any) -> None:
        """librdkafka's on_delivery callback (bound with functools.partial)."""
        if err is None:
            self.errors[index] = None
        else:
            self.errors[index] = str(err)
        self.remaining -= 1


class Publisher(Protocol):
    """Sends batches in order and reports each record's outcome.

    ``send`` returns at once (the records are queued in order behind earlier batches); ``wait``
    blocks until every record of that batch is acknowledged or failed, or ``should_stop`` says
    to abandon it. Records are never timed out by the client (delivery timeout infinite by
    default): an unreachable broker makes ``wait`` wait, which is what keeps a later batch from
    being appended after an earlier one expired.
    """

    name: str

    def send(self, records: Sequence[OutgoingRecord]) -> Pending: ...

    def wait(self, pending: Pending, *, should_stop: Callable[[], bool]) -> RoundResult: ...

    def close(self, timeout: float) -> None: ...


class ConfluentPublisher:
    """librdkafka through confluent-kafka."""

    name = "confluent"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        delivery_timeout: float | None,
        options: Mapping[str, str] = {},
    ) -> None:
        import confluent_kafka

        self._kafka = confluent_kafka
        self._fatal: str | None = None
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": client_id,
            "enable.idempotence": True,
            "enable.gapless.guarantee": True,
            "acks": "all",
            # The Java client's partitioner (murmur2; random partition for a null key).
            "partitioner": "murmur2_random",
            # No linger: a batch is handed over whole, so there is nothing to wait for; records
            # queued while a request is in flight still go out together. linger.ms=1 measured
            # p50 4.9 ms commit-to-consumer at 500/s against 2.3 ms without (bench/relay.py).
            "linger.ms": 0,
            "batch.size": 1_000_000,
            "message.timeout.ms": 0 if delivery_timeout is None else int(delivery_timeout * 1000),
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_097_151,
            "message.max.bytes": 16_777_216,
            "error_cb": self._on_error,
            "logger": _librdkafka_log,
        }
        conf.update(options)
        try:
            self._producer = confluent_kafka.Producer(conf)
        except (confluent_kafka.KafkaException, ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot create the confluent-kafka producer: {exc} (check --producer-option values)"
            ) from exc

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._fatal = str(err)
            log.error("producer fatal error: %s; a new producer will be made", err)
        else:
            log.warning("producer: %s", err)

    def send(self, records: Sequence[OutgoingRecord]) -> Pending:
        pending = Pending(len(records))
        producer = self._producer
        produce = producer.produce
        delivered = pending.delivered
        partial = functools.partial
        for i, r in enumerate(records):
            while True:
                try:
                    produce(
                        r.topic,
                        r.value,
                        r.key,
                        headers=r.headers,
                        timestamp=r.timestamp_ms,
                        on_delivery=partial(delivered, i),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
                except self._kafka.KafkaException as exc:
                    pending.errors[i] = str(exc)
                    pending.remaining -= 1
                    break
        producer.poll(0)
        return pending

    def wait(self, pending: Pending, *, should_stop: Callable[[], bool]) -> RoundResult:
        producer = self._producer
        while pending.remaining > 0:
            producer.poll(0.1)
            if pending.remaining and (should_stop() or self._fatal):
                if self._fatal:
                    producer.poll(0.5)  # collect the failures the fatal error causes
                break
        return RoundResult(pending.errors, broken=self._fatal is not None)

    def close(self, timeout: float) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            self._producer.purge()
            log.warning(
                "closed the producer with %d record(s) unacknowledged; their rows stay in the outbox", remaining
            )


class _FuturesPending(Pending):
    __slots__ = ("futures",)

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.futures: list[tuple[int, Any]] = []


class KafkaPythonPublisher:
    """kafka-python (pure Python; slower, no native dependency)."""

    name = "kafka-python"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        delivery_timeout: float | None,
        options: Mapping[str, str] = {},
    ) -> None:
        import kafka
        import kafka.errors

        self._errors = kafka.errors
        # kafka-python needs a finite delivery timeout; a day stands in for "never".
        delivery_ms = 86_400_000 if delivery_timeout is None else int(delivery_timeout * 1000)
        conf: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers.split(","),
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 0,  # as above: p50 7.0 -> 4.2 ms at 500/s
            "batch_size": 1_000_000,
            "max_request_size": 16_777_216,
            "delivery_timeout_ms": delivery_ms,
            "request_timeout_ms": max(500, min(30_000, delivery_ms // 2)),
        }
        for key, value in options.items():
            conf[key.replace(".", "_")] = _coerce(value)
        try:
            self._producer = kafka.KafkaProducer(**conf)
        except (ValueError, TypeError, AssertionError, kafka.errors.KafkaConfigurationError) as exc:
            raise ConfigError(
                f"cannot create the kafka-python producer: {exc} (check --producer-option values)"
            ) from exc
        except kafka.errors.KafkaError as exc:
            raise PublishError(f"cannot create the kafka-python producer: {exc} (is the broker reachable?)") from exc
        self._broken = False

    def send(self, records: Sequence[OutgoingRecord]) -> Pending:
        pending = _FuturesPending(len(records))
        send = self._producer.send
        for i, r in enumerate(records):
            try:
                pending.futures.append(
                    (i, send(r.topic, value=r.value, key=r.key, headers=r.headers, timestamp_ms=r.timestamp_ms))
                )
            except self._errors.KafkaError as exc:
                pending.errors[i] = str(exc)
                self._broken = True
                break
        return pending

    def wait(self, pending: Pending, *, should_stop: Callable[[], bool]) -> RoundResult:
        assert isinstance(pending, _FuturesPending)
        for i, future in pending.futures:
            while not future.is_done and not should_stop():
                try:
                    future.get(timeout=0.2)
                except self._errors.KafkaTimeoutError:
                    continue
                except Exception:  # the failure is read from the future below
                    break
            if not future.is_done:
                break
            if future.succeeded():
                pending.errors[i] = None
            else:
                pending.errors[i] = str(future.exception)
                self._broken = True
        return RoundResult(pending.errors, broken=self._broken)

    def close(self, timeout: float) -> None:
        """Flush for up to ``timeout`` seconds, then drop what is left.

        kafka-python's own ``close`` flushes first and, when the flush times out, raises without
        stopping its sender thread, which would go on sending the records of a fenced relay; so
        on a timeout the sender is stopped here (its unsent batches fail) and the close repeated.
        """
        try:
            self._producer.close(timeout=timeout)
        except self._errors.KafkaTimeoutError:
            sender = getattr(self._producer, "_sender", None)
            if sender is None:
                raise
            sender.force_close()  # the thread fails its unsent batches and exits
            sender.join(5.0)
            if sender.is_alive():
                log.warning("kafka-python's sender thread did not stop within 5 s of a forced close")
                return
            self._producer.close(timeout=0)


def _coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(value)
    except ValueError:
        return value


def make_publisher(
    kind: str,
    bootstrap_servers: str,
    *,
    client_id: str,
    delivery_timeout: float | None,
    options: Mapping[str, str] = {},
) -> Publisher:
    """``auto`` is librdkafka when confluent-kafka is installed, else kafka-python."""
    if kind == "auto":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            kind = "kafka-python"
            log.info("confluent-kafka is not installed: publishing with kafka-python (slower)")
        else:
            kind = "confluent"
    if kind == "confluent":
        return ConfluentPublisher(
            bootstrap_servers, client_id=client_id, delivery_timeout=delivery_timeout, options=options
        )
    if kind == "kafka-python":
        return KafkaPythonPublisher(
            bootstrap_servers, client_id=client_id, delivery_timeout=delivery_timeout, options=options
        )
    raise ConfigError(f"unknown producer {kind!r}")
