"""A long-poll fetch is woken by data that became readable between its first read and the moment
its waiting task started (the server runs the long poll as a task of its own)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kafka.protocol.consumer.fetch import FetchRequest

from streams.protocol.apis import decode_request
from streams.server.broker import Broker, close_parts
from streams.server.config import ServerConfig
from streams.server.flusher import Flusher
from streams.storage import ReadSlice
from tests.unit.storage.helpers import append, open_store


def _fetch_request(topic: str, offset: int, max_wait_ms: int):
    req = FetchRequest(
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[FetchRequest.FetchTopic(topic=topic, partitions=[
            FetchRequest.FetchTopic.FetchPartition(
                partition=0, current_leader_epoch=-1, fetch_offset=offset, log_start_offset=-1, partition_max_bytes=1 << 20
            )
        ])],
        forgotten_topics_data=[],
    )  # fmt: skip
    req.with_header(correlation_id=1, client_id="t")
    return decode_request(bytes(req.encode(version=11, header=True)))


def test_data_made_durable_before_the_long_poll_task_starts_wakes_it(tmp_path: Path) -> None:
    async def scenario() -> int:
        store = open_store(tmp_path / "data")
        store.create_topic("t", 1)
        plog = store.log("t", 0)
        failures: list[BaseException] = []
        flusher = Flusher(ServerConfig(data_dir=tmp_path / "data").fsync, failures.append)
        flusher.start()
        broker = Broker(ServerConfig(data_dir=tmp_path / "data"), store, flusher, "cluster")
        try:
            reply = broker.fetch(_fetch_request("t", 0, max_wait_ms=30_000))
            assert asyncio.iscoroutine(reply), "an empty partition should make the fetch wait"
            # What a busy loop can do before the server's long-poll task first runs: a producer's
            # batch is appended and its fsync round completes.
            result = append(plog, 3)
            flusher.appended(plog)
            await flusher.wait_durable(plog, result.last_offset + 1)
            parts = await asyncio.wait_for(reply, timeout=10)  # not the fetch's own 30 s
            assert not failures
            slices = [p for p in parts if isinstance(p, ReadSlice)]
            last = max(s.last_offset for s in slices)
            close_parts(parts)
            return last
        finally:
            await flusher.stop()
            store.close()

    assert asyncio.run(scenario()) == 2  # the three records (offsets 0-2) came back
