"""Raw-socket checks of the wire protocol edges that real clients rely on, against Kafka and the store.

ApiVersions v3 (librdkafka's first request, flexible) must get a real answer; a version the broker
does not know (v9) must get Kafka's v0-format error reply (error 35 plus the versions it does
support), so the client can retry. Bad frames must close only the connection they arrived on.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.protocol.producer.transaction import InitProducerIdRequest, InitProducerIdResponse
from kafka.record.memory_records import MemoryRecordsBuilder

from tests.compat._util import TIMEOUT, consume, consumer, create_topic, produce_all, producer, read_partitions
from tests.compat.conftest import Target
from tests.support.store import StoreProcess

API_VERSIONS = 18
UNSUPPORTED_VERSION = 35

README = Path(__file__).resolve().parents[2] / "README.md"
_API_KEYS = {
    "Produce": 0, "Fetch": 1, "ListOffsets": 2, "Metadata": 3, "OffsetCommit": 8, "OffsetFetch": 9,
    "FindCoordinator": 10, "JoinGroup": 11, "Heartbeat": 12, "LeaveGroup": 13, "SyncGroup": 14,
    "DescribeGroups": 15, "ListGroups": 16, "ApiVersions": 18, "CreateTopics": 19, "DeleteTopics": 20,
    "DeleteRecords": 21, "InitProducerId": 22, "DescribeConfigs": 32, "AlterConfigs": 33, "CreatePartitions": 37,
    "DeleteGroups": 42, "IncrementalAlterConfigs": 44, "DescribeCluster": 60,
}


def documented_api_versions() -> dict[int, tuple[int, int]]:
    """The store's advertised versions as the README's "Protocol support" table states them.

    Produce's row gives the served range (3-8) and says 0-2 are advertised too; the wire must
    match the documentation exactly, so a new API or version needs a README line.
    """
    out: dict[int, tuple[int, int]] = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or cells[0] in ("API", "---"):
            continue
        names = [n.strip() for n in cells[0].split("/")]
        ranges = re.findall(r"(\d+)[\u2013-](\d+)", cells[1])
        if not names or not all(n in _API_KEYS for n in names) or len(ranges) < len(names):
            continue
        for name, (lo, hi) in zip(names, ranges, strict=False):
            out[_API_KEYS[name]] = (int(lo), int(hi))
    if 0 in out and "0\u20132 advertised" in README.read_text():
        out[0] = (0, out[0][1])
    assert out, f"no protocol table found in {README}"
    return out


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            size = self.uvarint()  # (not `self.pos += self.uvarint()`: that reads pos before the call)
            self.pos += size

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def _header_v2(api_key: int, version: int, correlation_id: int, client_id: bytes = b"compat-raw") -> bytes:
    # Request header v2: the client id stays a (non-compact) nullable string, then tagged fields.
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id + _uvarint(0)


def _frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    return _recv_exact(sock, size)


@pytest.fixture
def conn(broker: Target) -> Iterator[socket.socket]:
    host, port = broker.bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        yield sock


def _api_versions_v0(sock: socket.socket, correlation_id: int) -> dict[int, tuple[int, int]]:
    body = struct.pack(">hhih", API_VERSIONS, 0, correlation_id, 3) + b"raw"
    sock.sendall(_frame(body))
    r = Reader(_recv_frame(sock))
    assert r.take(">i") == (correlation_id,)
    assert r.take(">h") == (0,)
    (count,) = r.take(">i")
    versions = {}
    for _ in range(count):
        key, lo, hi = r.take(">hhh")
        versions[key] = (lo, hi)
    assert r.at_end()
    return versions


def test_api_versions_v3_flexible(broker: Target, conn: socket.socket) -> None:
    body = _header_v2(API_VERSIONS, 3, 4242)
    for text in (b"librdkafka", b"2.0.2"):  # client_software_name, client_software_version
        body += _uvarint(len(text) + 1) + text
    body += _uvarint(0)
    conn.sendall(_frame(body))
    r = Reader(_recv_frame(conn))
    # ApiVersions responses keep header v0 (no tagged fields) even for flexible versions (KIP-511).
    assert r.take(">i") == (4242,)
    assert r.take(">h") == (0,)
    count = r.uvarint() - 1
    versions: dict[int, tuple[int, int]] = {}
    for _ in range(count):
        key, lo, hi = r.take(">hhh")
        r.skip_tagged_fields()
        versions[key] = (lo, hi)
    assert r.take(">i") == (0,)  # throttle_time_ms
    r.skip_tagged_fields()  # Kafka puts its feature flags here
    assert r.at_end()
    assert versions[API_VERSIONS][0] == 0 and versions[API_VERSIONS][1] >= 3
    # The same answer as a v0 request on the same connection (which stays usable).
    assert _api_versions_v0(conn, 4243) == versions
    if not broker.is_store:
        # Everything the store documents, Kafka 4.2 advertises too.
        for key, (lo, hi) in documented_api_versions().items():
            assert versions[key][0] <= lo and versions[key][1] >= hi, key


def test_advertised_versions_match_readme(store: StoreProcess) -> None:
    host, port = store.bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        advertised = _api_versions_v0(sock, 9)
    assert advertised == documented_api_versions()


def test_api_versions_unsupported_version_gets_v0_error(broker: Target, conn: socket.socket) -> None:
    body = _header_v2(API_VERSIONS, 9, 77) + _uvarint(1) + _uvarint(1) + _uvarint(0)
    conn.sendall(_frame(body))
    r = Reader(_recv_frame(conn))
    assert r.take(">i") == (77,)
    assert r.take(">h") == (UNSUPPORTED_VERSION,)
    (count,) = r.take(">i")  # v0 layout: a plain int32 array length, entries without tagged fields
    versions = {}
    for _ in range(count):
        key, lo, hi = r.take(">hhh")
        versions[key] = (lo, hi)
    assert r.at_end(), "a v0 ApiVersions response ends after the api list (no throttle time, no tags)"
    # Kafka lists only ApiVersions itself in this reply; the store lists every API it serves.
    # Both tell the client the highest ApiVersions version to retry with.
    assert versions[API_VERSIONS] == (0, 4)
    if broker.is_store:
        # The store's error reply carries its full list, the same as a successful v0 answer.
        assert versions == _api_versions_v0(conn, 79)
    # The connection stays open: the client retries on it.
    assert _api_versions_v0(conn, 78)[API_VERSIONS] == (0, 4)


def _metadata_v1_unknown_topic_body() -> bytes:
    # A Metadata v1 request header followed by a topic array that claims 1000 entries but has none.
    return struct.pack(">hhih", 3, 1, 5, 3) + b"raw" + struct.pack(">i", 1000)


BAD_INPUTS = {
    "oversized-length": struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 64,
    "negative-length": struct.pack(">i", -5) + b"\x00" * 16,
    "garbage-api-key": _frame(b"\xff" * 24),
    "unknown-api-key": _frame(struct.pack(">hhih", 999, 0, 1, 3) + b"raw"),
    "unsupported-metadata-version": _frame(struct.pack(">hhih", 3, 99, 1, 3) + b"raw"),
    "body-shorter-than-declared-fields": _frame(_metadata_v1_unknown_topic_body()),
    "truncated-frame-then-eof": struct.pack(">i", 100) + b"\x00\x03\x00\x01" + b"\x00" * 20,
}


def _expect_closed(sock: socket.socket) -> bytes:
    """Read until the broker closes the connection; return whatever it sent first."""
    received = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(received)
            received += chunk
    except ConnectionResetError:
        return bytes(received)


def test_bad_frames_close_only_their_connection(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=1)
    p = producer(broker.bootstrap)
    c = consumer(broker.bootstrap)
    host, port = broker.bootstrap.rsplit(":", 1)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        for index, (name, payload) in enumerate(BAD_INPUTS.items()):
            with socket.create_connection((host, int(port)), timeout=TIMEOUT) as bad:
                bad.sendall(payload)
                if name == "truncated-frame-then-eof":
                    bad.shutdown(socket.SHUT_WR)
                try:
                    answer = _expect_closed(bad)
                except TimeoutError:
                    pytest.fail(f"{broker}: the connection stayed open after {name}")
                assert answer == b"", f"{name}: unexpected reply {answer[:64]!r}"
            # The established clients are unaffected: produce and consume the next record.
            (report,) = produce_all(p, topic, [{"partition": 0, "value": name.encode()}])
            assert (report.error, report.offset) == (None, index), name
            assert [(r.offset, r.value) for r in consume(c, 1)] == [(index, name.encode())]
        # A fresh connection still gets served normally.
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as fresh:
            assert API_VERSIONS in _api_versions_v0(fresh, 1)
    finally:
        c.close()


# -- idempotent produce, byte by byte ---------------------------------------------------------


def _request(sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """Send a non-flexible request (header v1) and return the response body after its header."""
    header = struct.pack(">hhih", api_key, version, correlation_id, 3) + b"raw"
    sock.sendall(_frame(header + body))
    response = _recv_frame(sock)
    assert struct.unpack_from(">i", response)[0] == correlation_id
    return response[4:]


def _batch(producer_id: int, epoch: int, sequence: int, values: list[bytes]) -> bytes:
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20, producer_id=producer_id,
                                   producer_epoch=epoch, base_sequence=sequence)
    for i, value in enumerate(values):
        builder.append(timestamp=BASE_TS + i, key=None, value=value, headers=[])
    builder.close()
    return bytes(builder.buffer())


def _produce(sock: socket.socket, correlation_id: int, topic: str, records: bytes) -> tuple[int, int]:
    request = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=int(TIMEOUT * 1000),
        topic_data=[
            ProduceRequest.TopicProduceData(
                name=topic, partition_data=[ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=records)]
            )
        ],
    )
    response = ProduceResponse.decode(_request(sock, 0, 8, correlation_id, bytes(request.encode(version=8))), version=8)
    (topic_response,) = response.responses
    (part,) = topic_response.partition_responses
    return part.error_code, part.base_offset


BASE_TS = 1_740_000_000_000


def test_idempotent_produce_duplicate_and_sequence_gap(broker: Target, topic: str, conn: socket.socket) -> None:
    # What an idempotent producer's retries rely on: a resent batch (same producer id, epoch and
    # sequence) is acknowledged with its original offsets and not appended twice; a gap in the
    # sequence is refused with OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    create_topic(broker.bootstrap, topic, partitions=1)
    request = bytes(InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=-1).encode(version=1))
    deadline = time.monotonic() + TIMEOUT
    while True:
        init = InitProducerIdResponse.decode(_request(conn, 22, 1, 1, request), version=1)
        # A fresh Kafka answers COORDINATOR_LOAD_IN_PROGRESS (14) / NOT_AVAILABLE (15) at first.
        if init.error_code not in (14, 15) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert init.error_code == 0 and init.producer_id >= 0 and init.producer_epoch >= 0
    pid, epoch = init.producer_id, init.producer_epoch
    first = _batch(pid, epoch, 0, [b"a", b"b"])
    assert _produce(conn, 2, topic, first) == (0, 0)
    assert _produce(conn, 3, topic, first) == (0, 0)  # the duplicate: success, original offset
    assert _produce(conn, 4, topic, _batch(pid, epoch, 2, [b"c"])) == (0, 2)
    assert _produce(conn, 5, topic, _batch(pid, epoch, 2, [b"c"])) == (0, 2)  # duplicate of the last one
    error, _ = _produce(conn, 6, topic, _batch(pid, epoch, 7, [b"gap"]))
    assert error == 45
    assert _produce(conn, 7, topic, _batch(pid, epoch, 3, [b"d"])) == (0, 3)  # the right next one still works
    got = read_partitions(broker.bootstrap, topic, {0: 4})
    assert [(r.offset, r.value, r.timestamp) for r in got] == [
        (0, b"a", BASE_TS), (1, b"b", BASE_TS + 1), (2, b"c", BASE_TS), (3, b"d", BASE_TS)
    ]
