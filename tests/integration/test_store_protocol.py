"""The store's request handling over raw TCP, at the level of single Kafka requests.

These pin down semantics that client libraries hide: the original offset for a retried idempotent
batch, sequence and epoch errors, responses in request order for pipelined requests, the batch
that contains a mid-batch fetch offset, at-least-one-batch under max_bytes, and the long poll.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import pytest
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.protocol.producer.transaction import InitProducerIdRequest, InitProducerIdResponse
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from tests.support.store import StoreProcess


class RawClient:
    """A Kafka connection that sends exactly the requests a test builds."""

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=15)
        self.correlation = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, request: Any, version: int) -> int:
        self.correlation += 1
        request.with_header(correlation_id=self.correlation, client_id="raw-test")
        data = bytes(request.encode(version=version, header=True))
        self.sock.sendall(struct.pack(">i", len(data)) + data)
        return self.correlation

    def _read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("store closed the connection")
            buf += chunk
        return bytes(buf)

    def receive(self, response_cls: Any, version: int) -> tuple[int, Any]:
        (size,) = struct.unpack(">i", self._read_exact(4))
        frame = self._read_exact(size)
        (correlation,) = struct.unpack_from(">i", frame)
        return correlation, response_cls.decode(frame[4:], version=version)

    def call(self, request: Any, response_cls: Any, version: int) -> Any:
        sent = self.send(request, version)
        got, response = self.receive(response_cls, version)
        assert got == sent
        return response


def batch(values: list[bytes], producer_id: int = -1, epoch: int = -1, sequence: int = -1, ts: int = 1_700_000_000_000) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=producer_id,
        producer_epoch=epoch, base_sequence=sequence, batch_size=1 << 20,
    )
    for i, value in enumerate(values):
        builder.append(i, timestamp=ts + i, key=b"key", value=value, headers=[])
    return bytes(builder.build())


def produce(topic: str, records: bytes, partition: int = 0, acks: int = -1) -> ProduceRequest:
    part = ProduceRequest.TopicProduceData.PartitionProduceData(index=partition, records=records)
    return ProduceRequest(transactional_id=None, acks=acks, timeout_ms=10_000,
                          topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[part])])


def fetch(topic: str, offset: int, max_bytes: int = 1 << 20, max_wait_ms: int = 0, min_bytes: int = 0) -> FetchRequest:
    part = FetchRequest.FetchTopic.FetchPartition(partition=0, current_leader_epoch=-1, fetch_offset=offset,
                                                  log_start_offset=-1, partition_max_bytes=max_bytes)
    return FetchRequest(replica_id=-1, max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=max_bytes,
                        isolation_level=0, session_id=0, session_epoch=-1,
                        topics=[FetchRequest.FetchTopic(topic=topic, partitions=[part])],
                        forgotten_topics_data=[], rack_id="")


def partition_result(response: Any) -> Any:
    return response.responses[0].partition_responses[0]


def fetched_offsets(response: Any) -> list[int]:
    records = response.responses[0].partitions[0].records
    out = []
    pos = 0
    while records and pos < len(records):
        (length,) = struct.unpack_from(">i", records, pos + 8)
        out.extend(r.offset for r in DefaultRecordBatch(records[pos : pos + 12 + length]))
        pos += 12 + length
    return out


@pytest.fixture
def client(store: StoreProcess):
    c = RawClient(store.bootstrap)
    # Metadata auto-creates the topic, as clients do before producing.
    c.call(MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="t")], allow_auto_topic_creation=True),
           MetadataResponse, 5)
    yield c
    c.close()


def test_idempotent_retry_gets_original_offsets_and_is_not_appended_twice(client: RawClient) -> None:
    init = client.call(InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000),
                       InitProducerIdResponse, 1)
    assert init.error_code == 0 and init.producer_id >= 0
    pid = init.producer_id
    first = partition_result(client.call(produce("t", batch([b"a", b"b"], pid, 0, 0)), ProduceResponse, 7))
    assert (first.error_code, first.base_offset) == (0, 0)
    second = partition_result(client.call(produce("t", batch([b"c"], pid, 0, 2)), ProduceResponse, 7))
    assert (second.error_code, second.base_offset) == (0, 2)
    retry = partition_result(client.call(produce("t", batch([b"a", b"b"], pid, 0, 0)), ProduceResponse, 7))
    assert (retry.error_code, retry.base_offset) == (0, 0)
    gap = partition_result(client.call(produce("t", batch([b"x"], pid, 0, 7)), ProduceResponse, 7))
    assert gap.error_code == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    fetched = client.call(fetch("t", 0), FetchResponse, 11)
    assert fetched_offsets(fetched) == [0, 1, 2]
    assert fetched.responses[0].partitions[0].high_watermark == 3
    init2 = client.call(InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000),
                        InitProducerIdResponse, 1)
    assert init2.producer_id != pid


def test_stale_epoch_is_fenced(client: RawClient) -> None:
    pid = client.call(InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=1),
                      InitProducerIdResponse, 1).producer_id
    assert partition_result(client.call(produce("t", batch([b"a"], pid, 3, 0)), ProduceResponse, 7)).error_code == 0
    stale = partition_result(client.call(produce("t", batch([b"b"], pid, 2, 1)), ProduceResponse, 7))
    assert stale.error_code == 47  # INVALID_PRODUCER_EPOCH


def test_pipelined_requests_are_answered_in_order(client: RawClient) -> None:
    sent = []
    for i in range(40):
        if i % 3 == 0:
            sent.append((client.send(fetch("t", 0, max_wait_ms=50, min_bytes=1 << 30), 11), FetchResponse, 11))
        else:
            sent.append((client.send(produce("t", batch([b"v%d" % i])), 7), ProduceResponse, 7))
    offsets = []
    for correlation, cls, version in sent:
        got, response = client.receive(cls, version)
        assert got == correlation
        if cls is ProduceResponse:
            offsets.append(partition_result(response).base_offset)
    assert offsets == sorted(offsets) == list(range(len(offsets)))


def test_fetch_mid_batch_returns_the_containing_batch_and_at_least_one_batch(client: RawClient) -> None:
    big = [b"x" * 1000 for _ in range(10)]
    assert partition_result(client.call(produce("t", batch(big)), ProduceResponse, 7)).base_offset == 0
    assert partition_result(client.call(produce("t", batch([b"y"])), ProduceResponse, 7)).base_offset == 10
    mid = client.call(fetch("t", 4, max_bytes=100), FetchResponse, 11)
    assert fetched_offsets(mid) == list(range(10))  # whole first batch, although larger than max_bytes
    tail = client.call(fetch("t", 10), FetchResponse, 11)
    assert fetched_offsets(tail) == [10]
    at_end = client.call(fetch("t", 11), FetchResponse, 11).responses[0].partitions[0]
    assert (at_end.error_code, at_end.records or b"") == (0, b"")
    beyond = client.call(fetch("t", 12), FetchResponse, 11).responses[0].partitions[0]
    assert beyond.error_code == 1  # OFFSET_OUT_OF_RANGE


def test_long_poll_fetch_wakes_up_on_new_data(client: RawClient, store: StoreProcess) -> None:
    correlation = client.send(fetch("t", 0, max_wait_ms=20_000, min_bytes=1), 11)

    def later() -> None:
        time.sleep(0.3)
        other = RawClient(store.bootstrap)
        try:
            other.call(produce("t", batch([b"late"])), ProduceResponse, 7)
        finally:
            other.close()

    thread = threading.Thread(target=later)
    started = time.monotonic()
    thread.start()
    got, response = client.receive(FetchResponse, 11)
    thread.join()
    assert got == correlation
    assert fetched_offsets(response) == [0]
    assert time.monotonic() - started < 15  # woke on data, not on the 20 s timeout


def test_acks_zero_gets_no_response_but_data_is_stored(client: RawClient) -> None:
    client.send(produce("t", batch([b"fire-and-forget"]), acks=0), 7)
    deadline = time.monotonic() + 10
    while True:
        response = client.call(fetch("t", 0, max_wait_ms=200, min_bytes=1), FetchResponse, 11)
        if fetched_offsets(response) == [0] or time.monotonic() > deadline:
            break
    assert fetched_offsets(response) == [0]


def test_corrupt_batch_gets_corrupt_message_and_connection_stays(client: RawClient) -> None:
    bad = bytearray(batch([b"a", b"b"]))
    bad[-1] ^= 0x55
    result = partition_result(client.call(produce("t", bytes(bad)), ProduceResponse, 8))
    assert result.error_code == 2  # CORRUPT_MESSAGE
    ok = partition_result(client.call(produce("t", batch([b"good"])), ProduceResponse, 8))
    assert (ok.error_code, ok.base_offset) == (0, 0)


def test_unknown_partition_and_invalid_acks(client: RawClient) -> None:
    unknown = partition_result(client.call(produce("t", batch([b"a"]), partition=5), ProduceResponse, 7))
    assert unknown.error_code == 3
    bad_acks = partition_result(client.call(produce("t", batch([b"a"]), acks=2), ProduceResponse, 7))
    assert bad_acks.error_code == 21
