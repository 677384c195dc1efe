"""A consumer whose brokers cannot answer the offset lookups of a new assignment keeps running.

Found by the chaos campaign (--kafka-cluster, two of three brokers down): ``beginning_offsets``
raised KafkaTimeoutError out of ``run()`` and the worker exited 1. The partitions must stay
paused and unpositioned, and be positioned by a later tick. Real PostgreSQL, a real kafka-python
client; the "broker" is a loopback port nobody listens on (``api_version`` set, so the client
does not probe it at construction).
"""

from __future__ import annotations

import asyncio
import uuid

from kafka import TopicPartition

from consumers import AsyncConsumer, Consumer
from tests.support._proc import free_port

OFFLINE = {"api_version": (2, 5), "request_timeout_ms": 1000, "reconnect_backoff_max_ms": 200}


def _options(database_url: str) -> dict[str, object]:
    return {
        "group": f"g-{uuid.uuid4().hex[:8]}",
        "topics": ["t"],
        "bootstrap_servers": f"127.0.0.1:{free_port()}",
        "database_url": database_url,
        "kafka_config": OFFLINE,
    }


def test_sync_consumer_retries_positioning_when_brokers_are_unreachable(database_url: str) -> None:
    consumer = Consumer(**_options(database_url))  # type: ignore[arg-type]
    tp = TopicPartition("t", 0)
    consumer._conn = consumer._connect()
    try:
        consumer._new_kafka_consumer()
        consumer._queue_rebalance("assigned", {tp})
        consumer._tick()  # raised KafkaTimeoutError before the fix
        assert not consumer._states[tp].positioned
        assert consumer._take_rebalances() == [tp], "the partition is positioned again on the next tick"
    finally:
        consumer._kafka.close()
        consumer._conn.close()


def test_async_consumer_retries_positioning_when_brokers_are_unreachable(database_url: str) -> None:
    consumer = AsyncConsumer(**_options(database_url))  # type: ignore[arg-type]
    tp = TopicPartition("t", 0)

    async def scenario() -> None:
        consumer._conn = await consumer._connect()
        try:
            consumer._new_kafka_consumer()
            consumer._queue_rebalance("assigned", {tp})
            await consumer._tick()
            assert not consumer._states[tp].positioned
            assert consumer._take_rebalances() == [tp]
        finally:
            consumer._kafka.close()
            await consumer._conn.close()

    asyncio.run(scenario())
