"""The Kafka client backends of the consumer SDK.

``client="kafka-python"`` (default) uses kafka-python's ``KafkaConsumer`` directly. ``client="confluent"``
uses confluent-kafka (librdkafka) through :class:`ConfluentClient`, which offers the small part of
``KafkaConsumer``'s interface the SDK calls (subscribe with a rebalance listener, poll, pause/resume,
seek, watermarks, commits, close) with kafka-python's ``TopicPartition`` as partition keys, so the
rest of the SDK does not care which one runs. librdkafka fetches, heartbeats and parses records in
its own threads without the GIL: fewer Python instructions per record and lower latency.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import kafka.errors as ke
from kafka import TopicPartition

__all__ = ["CLIENTS", "ConfluentClient", "RawRecord"]

#: The backends ``client=`` accepts.
CLIENTS = ("kafka-python", "confluent")

#: What :meth:`ConfluentClient.poll` returns per record: the arguments of ``decode_record``.
RawRecord = tuple[Any, ...]

#: librdkafka settings the SDK manages (the counterpart of kafka-python's reserved options).
CONFLUENT_RESERVED = frozenset({"group.id", "enable.auto.commit", "auto.offset.reset", "bootstrap.servers"})

logger = logging.getLogger("consumers")


def _transient(error: Any) -> bool:
    from confluent_kafka import KafkaError

    transient_codes = {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
    return bool(error.retriable()) or error.code() in transient_codes


def _raise(exc: BaseException) -> None:
    """A confluent-kafka exception as the kafka-python error the SDK's retry logic understands."""
    error = exc.args[0] if exc.args else None
    if error is not None and hasattr(error, "code"):
        if _transient(error) and not error.fatal():
            raise ke.KafkaConnectionError(str(error)) from exc
        raise ke.KafkaError(str(error)) from exc
    raise ke.KafkaError(str(exc)) from exc


class ConfluentClient:
    """A confluent-kafka group consumer behind the part of ``KafkaConsumer``'s interface the SDK uses."""

    def __init__(self, config: dict[str, Any]) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer(config)
        self._listener: Any = None

    # -- group membership -----------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str], listener: Any) -> None:
        self._listener = listener
        self._consumer.subscribe(
            list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        # Take the assignment but fetch nothing until the SDK seeks each partition to the offset
        # stored in the database and resumes it.
        consumer.assign(partitions)
        if partitions:
            consumer.pause(partitions)
        self._listener.on_partitions_assigned({TopicPartition(p.topic, p.partition) for p in partitions})

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._listener.on_partitions_revoked({TopicPartition(p.topic, p.partition) for p in partitions})

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._listener.on_partitions_lost({TopicPartition(p.topic, p.partition) for p in partitions})

    # -- records --------------------------------------------------------------------------------

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[TopicPartition, list[RawRecord]]:
        """Wait up to ``timeout_ms`` for a first record, then take what is already fetched (up to
        ``max_records``): never wait for a full batch (librdkafka's ``consume(n, t)`` would)."""
        try:
            first = self._consumer.poll(max(timeout_ms, 0) / 1000)
            if first is None:
                return {}
            messages = [first]
            if max_records > 1:
                messages += self._consumer.consume(max_records - 1, 0)
        except Exception as exc:
            from confluent_kafka import KafkaException

            if isinstance(exc, KafkaException):
                _raise(exc)
            raise
        out: dict[TopicPartition, list[RawRecord]] = {}
        batches: dict[tuple[Any, Any], list[RawRecord]] = {}
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise ke.KafkaError(f"fatal client error: {error}")
                logger.debug("librdkafka: %s", error)
                continue
            topic, partition = m.topic(), m.partition()
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[topic, partition] = out[TopicPartition(topic, partition)] = []
            batch.append((topic, partition, m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers()))
        return out

    # -- positions ------------------------------------------------------------------------------

    def pause(self, *partitions: TopicPartition) -> None:
        if partitions:
            self._consumer.pause([_ck(tp) for tp in partitions])

    def resume(self, *partitions: TopicPartition) -> None:
        if partitions:
            self._consumer.resume([_ck(tp) for tp in partitions])

    def seek(self, partition: TopicPartition, offset: int) -> None:
        from confluent_kafka import KafkaException

        try:
            self._consumer.seek(_ck(partition, offset))
        except KafkaException as exc:
            _raise(exc)

    def _watermarks(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        from confluent_kafka import KafkaException

        out = {}
        for tp in partitions:
            try:
                out[tp] = self._consumer.get_watermark_offsets(_ck(tp), timeout=10, cached=False)
            except KafkaException as exc:
                _raise(exc)
        return out

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: low for tp, (low, _high) in self._watermarks(partitions).items()}

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: high for tp, (_low, high) in self._watermarks(partitions).items()}

    def highwater(self, partition: TopicPartition) -> int | None:
        marks = self._consumer.get_watermark_offsets(_ck(partition), cached=True)
        if marks is None or marks[1] < 0:
            return None
        return int(marks[1])

    # -- broker offsets (advisory) --------------------------------------------------------------

    def commit(self, offsets: dict[TopicPartition, Any], timeout_ms: int = 5000) -> None:
        from confluent_kafka import KafkaException

        try:
            self._consumer.commit(offsets=[_ck(tp, meta.offset) for tp, meta in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            _raise(exc)

    def commit_async(self, offsets: dict[TopicPartition, Any], callback: Callable[..., Any] | None = None) -> None:
        self._consumer.commit(offsets=[_ck(tp, meta.offset) for tp, meta in offsets.items()], asynchronous=True)

    def close(self, autocommit: bool = False) -> None:
        self._consumer.close()


def _ck(tp: TopicPartition, offset: int | None = None) -> Any:
    from confluent_kafka import TopicPartition as CKTopicPartition

    if offset is None:
        return CKTopicPartition(tp.topic, tp.partition)
    return CKTopicPartition(tp.topic, tp.partition, offset)


def confluent_config(
    *,
    bootstrap_servers: str | tuple[str, ...],
    group: str,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    max_poll_interval_ms: int,
    client_id: str | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """librdkafka settings for the SDK's group member (``extra`` is the user's ``kafka_config``)."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers if isinstance(bootstrap_servers, str) else ",".join(bootstrap_servers),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": heartbeat_interval_ms,
        "max.poll.interval.ms": max_poll_interval_ms,
        "partition.assignment.strategy": "range,roundrobin",
        "logger": logging.getLogger("consumers.librdkafka"),
    }
    if client_id is not None:
        config["client.id"] = client_id
    config.update(extra)
    return config
