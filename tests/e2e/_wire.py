"""A tiny blocking Kafka wire client for end-to-end checks that need exact bytes and error codes.

Real clients hide what these tests must see: per-partition error codes (KAFKA_STORAGE_ERROR), the
raw bytes of the record batches a Fetch returns (byte-for-byte comparisons with the segment
files) and the exact offset a produce got. Requests and responses are encoded and decoded by
kafka-python's protocol classes (generated from Kafka's JSON schemas), so nothing here is a
second codec; only the 4-byte frame and the v0 response header are handled by hand.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka.protocol.admin.topics import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

__all__ = [
    "KAFKA_STORAGE_ERROR",
    "NONE",
    "Batch",
    "Record",
    "WireClient",
    "WireError",
    "build_batch",
    "decode_records",
    "encode_request",
    "init_producer_id",
    "split_batches",
]

NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
KAFKA_STORAGE_ERROR = 56

_HEADER = struct.Struct(">qi")  # BaseOffset, Length (the part of a RecordBatch header we need)


class WireError(RuntimeError):
    """The connection closed, timed out or returned something that does not decode."""


@dataclass(frozen=True)
class Record:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Batch:
    base_offset: int
    last_offset: int
    position: int  # byte position in the buffer it was split from
    raw: bytes


def encode_request(req: Any, version: int, correlation_id: int, client_id: str = "e2e-wire") -> bytes:
    """A complete request frame: 4-byte length prefix, request header, body."""
    req.with_header(correlation_id=correlation_id, client_id=client_id)
    body = bytes(req.encode(version=version, header=True))
    return struct.pack(">i", len(body)) + body


def build_batch(
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
    *,
    timestamp: int,
    compression: int = 0,
) -> bytes:
    """One RecordBatch v2 (offsets from 0; the broker assigns the real ones), timestamps ``timestamp + i``."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 24,
    )
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, timestamp=timestamp + i, key=key, value=value, headers=list(headers))
    return bytes(builder.build())


def split_batches(raw: bytes | bytearray | memoryview, *, allow_partial: bool = False) -> list[Batch]:
    """Cut a run of RecordBatch v2 bytes (a Fetch payload or a ``.log`` file) into whole batches.

    A Fetch may legally end with a partial batch (``max_bytes``); segment files may not.
    """
    raw = bytes(raw)
    out: list[Batch] = []
    pos = 0
    while pos < len(raw):
        if len(raw) - pos < 61:
            if allow_partial:
                break
            raise AssertionError(f"{len(raw) - pos} trailing bytes at position {pos} are not a whole batch")
        base, length = _HEADER.unpack_from(raw, pos)
        size = length + 12
        if size < 61 or pos + size > len(raw):
            if allow_partial:
                break
            raise AssertionError(f"batch at position {pos} declares {size} bytes, {len(raw) - pos} remain")
        last_delta = struct.unpack_from(">i", raw, pos + 23)[0]
        out.append(Batch(base, base + last_delta, pos, raw[pos : pos + size]))
        pos += size
    return out


def decode_records(raw: bytes) -> list[Record]:
    """Every record of whole batches in ``raw``, CRC-checked (kafka-python's decoder)."""
    out: list[Record] = []
    records = MemoryRecords(raw)
    while True:
        batch = records.next_batch()
        if batch is None:
            break
        if hasattr(batch, "validate_crc"):
            assert batch.validate_crc(), f"batch at offset {batch.base_offset} fails its CRC"
        for rec in batch:
            out.append(
                Record(
                    rec.offset,
                    rec.timestamp,
                    rec.key,
                    rec.value,
                    tuple((k, bytes(v) if v is not None else b"") for k, v in rec.headers),
                )
            )
    return out


class WireClient:
    """One TCP connection; ``call`` sends a request and returns its decoded response."""

    def __init__(self, bootstrap: str, timeout: float = 15.0, client_id: str = "e2e-wire") -> None:
        host, _, port = bootstrap.rpartition(":")
        self.client_id = client_id
        self.timeout = timeout
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._correlation = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            try:
                chunk = self.sock.recv(min(n, 1 << 20))
            except TimeoutError as exc:
                raise WireError(f"no response within {self.timeout} s") from exc
            except OSError as exc:
                raise WireError(f"connection failed: {exc}") from exc
            if not chunk:
                raise WireError("the store closed the connection")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def call(self, req: Any, response_cls: Any, version: int) -> Any:
        self._correlation += 1
        correlation = self._correlation
        try:
            self.sock.sendall(encode_request(req, version, correlation, self.client_id))
        except OSError as exc:
            raise WireError(f"send failed: {exc}") from exc
        (size,) = struct.unpack(">i", self._recv_exact(4))
        payload = self._recv_exact(size)
        (got,) = struct.unpack_from(">i", payload)
        if got != correlation:
            raise WireError(f"response correlation id {got}, expected {correlation}")
        try:
            return response_cls.decode(payload[4:], version=version)
        except Exception as exc:
            raise WireError(f"undecodable {response_cls.__name__} v{version}: {exc!r}") from exc

    # -- APIs -----------------------------------------------------------------------------

    def api_versions(self) -> dict[int, tuple[int, int]]:
        resp = self.call(ApiVersionsRequest(), ApiVersionsResponse, 0)
        assert resp.error_code == 0, resp
        return {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}

    def create_topic(self, name: str, partitions: int, configs: dict[str, str] | None = None) -> int:
        topic = CreateTopicsRequest.CreatableTopic(
            name=name,
            num_partitions=partitions,
            replication_factor=1,
            assignments=[],
            configs=[
                CreateTopicsRequest.CreatableTopic.CreatableTopicConfig(name=k, value=v)
                for k, v in (configs or {}).items()
            ],
        )
        resp = self.call(
            CreateTopicsRequest(topics=[topic], timeout_ms=10_000, validate_only=False), CreateTopicsResponse, 4
        )
        return int(resp.topics[0].error_code)

    def metadata(self, topics: Iterable[str] | None, version: int = 8) -> dict[str, tuple[int, dict[int, int]]]:
        """{topic: (topic error, {partition: partition error})}."""
        req_topics = None if topics is None else [MetadataRequest.MetadataRequestTopic(name=t) for t in topics]
        req = MetadataRequest(topics=req_topics, allow_auto_topic_creation=False)
        resp = self.call(req, MetadataResponse, version)
        return {t.name: (t.error_code, {p.partition_index: p.error_code for p in t.partitions}) for t in resp.topics}

    def produce(self, topic: str, partition: int, records: bytes, acks: int = -1, version: int = 8) -> tuple[int, int]:
        """(error code, base offset) for one partition's records."""
        part = ProduceRequest.TopicProduceData.PartitionProduceData(index=partition, records=records)
        req = ProduceRequest(
            transactional_id=None,
            acks=acks,
            timeout_ms=10_000,
            topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[part])],
        )
        resp = self.call(req, ProduceResponse, version)
        p = resp.responses[0].partition_responses[0]
        return int(p.error_code), int(p.base_offset)

    def fetch(
        self, topic: str, partition: int, offset: int, max_bytes: int = 8 << 20, version: int = 11
    ) -> tuple[int, int, bytes]:
        """(error code, high watermark, record bytes) — sessionless, no waiting."""
        req = FetchRequest(
            replica_id=-1,
            max_wait_ms=0,
            min_bytes=0,
            max_bytes=max_bytes,
            isolation_level=0,
            session_id=0,
            session_epoch=-1,
            topics=[
                FetchRequest.FetchTopic(
                    topic=topic,
                    partitions=[
                        FetchRequest.FetchTopic.FetchPartition(
                            partition=partition,
                            current_leader_epoch=-1,
                            fetch_offset=offset,
                            log_start_offset=-1,
                            partition_max_bytes=max_bytes,
                        )
                    ],
                )
            ],
            forgotten_topics_data=[],
            rack_id="",
        )
        resp = self.call(req, FetchResponse, version)
        p = resp.responses[0].partitions[0]
        return int(p.error_code), int(p.high_watermark), bytes(p.records or b"")

    def fetch_all(self, topic: str, partition: int, start: int = 0) -> tuple[int, list[Batch]]:
        """Every batch from ``start`` up to the high watermark: (high watermark, batches)."""
        batches: list[Batch] = []
        offset = start
        while True:
            error, hw, raw = self.fetch(topic, partition, offset)
            if error != NONE:
                raise WireError(f"fetch {topic}-{partition}@{offset} failed with error {error}")
            got = split_batches(raw, allow_partial=True)
            for b in got:
                if b.last_offset >= offset:
                    batches.append(b)
            if not got or got[-1].last_offset + 1 >= hw:
                if offset < hw and not got:
                    raise WireError(f"fetch {topic}-{partition}@{offset} returned nothing below hw {hw}")
                return hw, batches
            offset = got[-1].last_offset + 1

    def list_offset(self, topic: str, partition: int, timestamp: int, version: int = 5) -> tuple[int, int, int]:
        """(error code, offset, timestamp); -1 latest, -2 earliest."""
        req = ListOffsetsRequest(
            replica_id=-1,
            isolation_level=0,
            topics=[
                ListOffsetsRequest.ListOffsetsTopic(
                    name=topic,
                    partitions=[
                        ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                            partition_index=partition, current_leader_epoch=-1, timestamp=timestamp
                        )
                    ],
                )
            ],
        )
        resp = self.call(req, ListOffsetsResponse, version)
        p = resp.topics[0].partitions[0]
        return int(p.error_code), int(p.offset), int(p.timestamp)


def init_producer_id(client: WireClient, version: int = 1) -> tuple[int, int, int]:
    """(error code, producer id, epoch) of an InitProducerId without a transactional id."""
    from kafka.protocol.producer.transaction import InitProducerIdRequest, InitProducerIdResponse

    req = InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000)
    resp = client.call(req, InitProducerIdResponse, version)
    return int(resp.error_code), int(resp.producer_id), int(resp.producer_epoch)
