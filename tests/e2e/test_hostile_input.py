"""G7 over TCP against a real store process: bad input gets a clear error and harms nothing else.

A Hypothesis fuzzer throws random frames, frames with valid headers and random bodies, and
mutations of real requests at the store — requests encoded by kafka-python's protocol classes
and frames captured from real librdkafka and kafka-python sessions through a recording proxy.
Dedicated tests cover oversized and negative length prefixes, truncated frames followed by
silence (closed after ``--idle-timeout``), and many hostile connections at once.

After the abuse: the process is alive, its memory stayed bounded, well-behaved clients still
produce and consume, data written before is byte-identical, and nothing appeared outside the
data directory.
"""

from __future__ import annotations

import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import crc32c
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.protocol.admin.topics import CreateTopicsRequest, DeleteTopicsRequest
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.protocol.consumer.offsets import ListOffsetsRequest
from kafka.protocol.metadata.api_versions import ApiVersionsRequest
from kafka.protocol.metadata.metadata import MetadataRequest
from kafka.protocol.producer.produce import ProduceRequest, ProduceResponse
from kafka.protocol.producer.transaction import InitProducerIdRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from tests.e2e._support import dir_digest, open_fds, partition_dir, rss_kb, wait_until
from tests.e2e._wire import NONE, WireClient, build_batch, encode_request
from tests.support.store import StoreProcess

pytestmark = pytest.mark.timeout(240)

MAX_REQUEST = 8 * 1024 * 1024  # the store's default --max-request-size
RSS_BOUND_KB = 200 * 1024
FUZZ_EXAMPLES = int(os.environ.get("E2E_FUZZ_EXAMPLES", "300"))
"""Examples per fuzz run; CI keeps the default (< 60 s), a nightly job can raise it."""
TOPIC_DIR_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}-\d+$")


# -- frames ---------------------------------------------------------------------------------------


def _produce(version: int, topic: str, records: bytes) -> ProduceRequest:
    part = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=records)
    return ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=1000,
        topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[part])],
    )


def _fetch(topic: str) -> FetchRequest:
    return FetchRequest(
        replica_id=-1,
        max_wait_ms=100,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            FetchRequest.FetchTopic(
                topic=topic,
                partitions=[
                    FetchRequest.FetchTopic.FetchPartition(
                        partition=0,
                        current_leader_epoch=-1,
                        fetch_offset=0,
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    )


def _encoded_requests() -> list[bytes]:
    """One valid frame per API and version the store serves (kafka-python's encoders)."""
    batch = build_batch([(b"k", b"v" * 50, [("h", b"x")]), (None, b"w", [])], timestamp=1_700_000_000_000)
    zbatch = build_batch([(b"k", b"z" * 300, [])], timestamp=1_700_000_000_000, compression=4)
    out = []
    for v in range(3, 9):
        out.append(encode_request(_produce(v, "fuzz", batch), v, v))
        out.append(encode_request(_produce(v, "fuzz", zbatch), v, v))
    for v in range(4, 12):
        out.append(encode_request(_fetch("fuzz"), v, v))
    for v in range(1, 6):
        req = ListOffsetsRequest(
            replica_id=-1,
            isolation_level=0,
            topics=[
                ListOffsetsRequest.ListOffsetsTopic(
                    name="fuzz",
                    partitions=[
                        ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                            partition_index=0, current_leader_epoch=-1, timestamp=-1
                        )
                    ],
                )
            ],
        )
        out.append(encode_request(req, v, v))
    for v in range(9):
        req = MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name="fuzz")], allow_auto_topic_creation=True
        )
        out.append(encode_request(req, v, v))
    for v in range(5):
        req = ApiVersionsRequest(client_software_name="fuzz", client_software_version="1.0")
        out.append(encode_request(req, v, v))
    for v in range(5):
        topic = CreateTopicsRequest.CreatableTopic(
            name="fuzz-created", num_partitions=2, replication_factor=1, assignments=[], configs=[]
        )
        out.append(encode_request(CreateTopicsRequest(topics=[topic], timeout_ms=1000, validate_only=False), v, v))
    for v in range(4):
        out.append(encode_request(DeleteTopicsRequest(topic_names=["fuzz-created"], timeout_ms=1000), v, v))
    for v in range(2):
        req = InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=1000)
        out.append(encode_request(req, v, v))
    return out


class CaptureProxy:
    """A TCP proxy that records every client->server frame (4-byte length prefix included)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream: tuple[str, int] | None = None
        self.frames: list[bytes] = []
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            assert self.upstream is not None
            server = socket.create_connection(self.upstream)
            self._socks += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        buf = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if record:
                    buf += data
                    while len(buf) >= 4 and len(buf) >= 4 + struct.unpack_from(">i", buf)[0]:
                        size = 4 + struct.unpack_from(">i", buf)[0]
                        with self._lock:
                            self.frames.append(buf[:size])
                        buf = buf[size:]
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for s in self._socks:
            s.close()


@pytest.fixture(scope="module")
def captured_frames(tmp_path_factory) -> Iterator[list[bytes]]:
    """Frames real clients (librdkafka, kafka-python) sent in a produce/consume session."""
    proxy = CaptureProxy()
    store = StoreProcess(
        work_dir=tmp_path_factory.mktemp("capture"),
        extra_args=["--advertised-listener", f"127.0.0.1:{proxy.port}"],
    )
    try:
        store.start()
        proxy.upstream = ("127.0.0.1", store.port)  # the ready file names the bound port, not the proxy's
        bootstrap = f"127.0.0.1:{proxy.port}"
        rk = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "compression.type": "lz4", "linger.ms": 5}
        )
        for i in range(20):
            rk.produce("captured", key=b"k%d" % i, value=b"v" * i, headers=[("h", b"%d" % i)])
        assert rk.flush(30) == 0
        rc = Consumer({"bootstrap.servers": bootstrap, "group.id": "capture", "enable.auto.commit": False})
        rc.assign([CTopicPartition("captured", 0, OFFSET_BEGINNING)])
        got = 0
        deadline = time.monotonic() + 20
        while got < 20 and time.monotonic() < deadline:
            msg = rc.poll(0.2)
            got += msg is not None and msg.error() is None
        rc.close()
        kp = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", acks="all")
        for i in range(10):
            kp.send("captured", key=b"kp", value=b"x" * i, headers=[("a", b"b")])
        kp.flush(30)
        kp.close(5)
        kc = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=2000
        )
        kc.assign([TopicPartition("captured", 0)])
        list(kc)
        kc.close()
        frames = list(proxy.frames)
    finally:
        proxy.close()
        store.cleanup()
    api_keys = {struct.unpack_from(">h", f, 4)[0] for f in frames}
    assert {0, 1, 3, 18} <= api_keys, f"capture saw only API keys {api_keys}"
    yield frames


# -- strategies -----------------------------------------------------------------------------------

_EXTREME_INT32 = [0, 1, -1, -2, 0x7FFFFFFF, -0x80000000, 0xFFFF, 0x7FFF, 0x8000, 61, 1 << 20]


def _body_start(frame: bytes | bytearray) -> int:
    """Where the request body starts (after the v1 request header), or 4 if that is unclear."""
    if len(frame) < 14:
        return 4
    (client_len,) = struct.unpack_from(">h", frame, 12)
    return min(14 + max(client_len, 0), len(frame) - 1)


@st.composite
def _mutated(draw, bases: list[bytes]) -> bytes:
    """A real request with a few mutations, mostly in the body, mostly with a consistent prefix."""
    frame = bytearray(draw(st.sampled_from(bases)))
    lowest = 0 if draw(st.integers(0, 4)) == 0 else _body_start(frame)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "int32", "int16", "truncate", "insert", "delete", "junk-tail"]))
        if len(frame) <= lowest:
            break
        pos = draw(st.integers(lowest, len(frame) - 1))
        if kind == "flip":
            frame[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int32":
            frame[pos : pos + 4] = struct.pack(">i", draw(st.sampled_from(_EXTREME_INT32)))
        elif kind == "int16":
            frame[pos : pos + 2] = struct.pack(">h", draw(st.sampled_from([0, -1, -2, 0x7FFF, -0x8000])))
        elif kind == "truncate":
            del frame[pos:]
        elif kind == "insert":
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del frame[pos : pos + draw(st.integers(1, 16))]
        else:
            frame += draw(st.binary(min_size=1, max_size=200))
    if draw(st.integers(0, 4)) and len(frame) >= 4:
        frame[0:4] = struct.pack(">i", len(frame) - 4)  # keep the frame well-framed: the body is the target
    return bytes(frame)


def _recrc(batch: bytearray) -> None:
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))


@st.composite
def _produce_with_bad_batch(draw) -> bytes:
    """A well-formed Produce request whose record batch is damaged, with its CRC fixed or not."""
    codec = draw(st.sampled_from([0, 1, 3, 4]))
    records = [(b"k%d" % i, b"v" * draw(st.integers(0, 300)), [("h", b"x")] * (i % 2)) for i in range(3)]
    batch = bytearray(build_batch(records, timestamp=1_700_000_000_000, compression=codec))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(batch) - 1))
        kind = draw(st.sampled_from(["flip", "int32", "truncate", "junk-tail"]))
        if kind == "flip":
            batch[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int32":
            batch[pos : pos + 4] = struct.pack(">i", draw(st.sampled_from(_EXTREME_INT32)))
        elif kind == "truncate":
            del batch[max(pos, 1) :]
        else:
            batch += draw(st.binary(min_size=1, max_size=100))
    if draw(st.booleans()) and len(batch) > 21:
        _recrc(batch)
    version = draw(st.integers(3, 8))
    return encode_request(_produce(version, "fuzz", bytes(batch)), version, 7)


@st.composite
def _valid_header_random_body(draw) -> bytes:
    api_key = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 18, 19, 20, 22]), st.integers(-(2**15), 2**15 - 1)))
    version = draw(st.one_of(st.integers(0, 12), st.integers(-(2**15), 2**15 - 1)))
    client = draw(st.one_of(st.just(b""), st.binary(max_size=20)))
    body = struct.pack(">hhih", api_key, version, draw(st.integers(0, 2**31 - 1)), len(client)) + client
    body += draw(st.binary(max_size=600))
    return struct.pack(">i", len(body)) + body


def _hostile(bases: list[bytes]):
    raw = st.binary(min_size=1, max_size=2000)
    framed_garbage = st.binary(max_size=1000).map(lambda b: struct.pack(">i", len(b)) + b)
    several = st.lists(st.one_of(_mutated(bases), st.sampled_from(bases)), min_size=2, max_size=5).map(b"".join)
    return st.one_of(
        raw, framed_garbage, _valid_header_random_body(), _mutated(bases), several, _produce_with_bad_batch()
    )


# -- helpers --------------------------------------------------------------------------------------


def _addr(store: StoreProcess) -> tuple[str, int]:
    return store.host, store.port


def _exchange(store: StoreProcess, payload: bytes) -> bytes:
    """Send ``payload``, half-close, and read until the store closes; fail if it never does."""
    with socket.create_connection(_addr(store), timeout=5) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the store already closed the connection: fine
        out = b""
        sock.settimeout(35)  # the longest a request may legitimately wait is a 30 s long poll
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"the store neither answered nor closed for {payload[:80]!r}") from None
            except OSError:
                return out
            if not data:
                return out
            out += data


def _assert_frames_sane(reply: bytes) -> None:
    pos = 0
    while len(reply) - pos >= 4:
        (size,) = struct.unpack_from(">i", reply, pos)
        assert 4 <= size <= 64 << 20, f"response frame length {size} is not sane"
        pos += 4 + size


def _precious(store: StoreProcess) -> tuple[list[bytes], dict]:
    with WireClient(store.bootstrap) as client:
        _, batches = client.fetch_all("precious", 0)
    return [b.raw for b in batches], dir_digest(partition_dir(store.data_dir, "precious", 0))


def _seed_precious(store: StoreProcess) -> None:
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("precious", 1) == NONE
        for i in range(20):
            batch = build_batch([(b"p", b"precious-%d" % i, [("n", b"%d" % i)])], timestamp=1_700_000_000_000 + i)
            assert client.produce("precious", 0, batch) == (NONE, i)


def _files_outside(root: Path, data_dir: Path) -> set[str]:
    out = set()
    for dirpath, _, filenames in os.walk(root):
        if Path(dirpath).is_relative_to(data_dir):
            continue
        out |= {str(Path(dirpath, f).relative_to(root)) for f in filenames}
    return out


def _well_behaved_round_trip(store: StoreProcess, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=store.bootstrap, acks="all", request_timeout_ms=10_000)
    try:
        metas = [producer.send(topic, key=b"ok", value=b"ok-%d" % i).get(timeout=30) for i in range(10)]
    finally:
        producer.close(timeout=10)
    consumer = KafkaConsumer(
        bootstrap_servers=store.bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    try:
        consumer.assign([TopicPartition(topic, metas[0].partition)])
        values = []
        for m in consumer:  # stops after consumer_timeout_ms without records
            values.append(m.value)
            if len(values) == len(metas):
                break
    finally:
        consumer.close()
    assert values == [b"ok-%d" % i for i in range(10)]


def _after_abuse(store: StoreProcess, rss_before: int, precious: tuple, outside_before: set[str], root: Path) -> None:
    assert store.is_running(), f"the store died (exit {store.returncode}); log {store.log_path}"
    assert store.pid is not None
    grown = rss_kb(store.pid) - rss_before
    assert grown < RSS_BOUND_KB, f"RSS grew by {grown} kB during the abuse"
    _well_behaved_round_trip(store, "after-abuse")
    assert _precious(store) == precious, "data written before the abuse changed"
    assert _files_outside(root, store.data_dir) == outside_before, "files appeared outside the data dir"
    for entry in store.data_dir.iterdir():
        assert entry.name == "meta" or TOPIC_DIR_RE.match(entry.name), f"unexpected entry {entry} in the data dir"


def _internal_errors(log_text: str) -> list[tuple[str, str]]:
    """(request, exception line) of every handler that raised (the store logs a traceback)."""
    out = []
    for m in re.finditer(r"unexpected error handling (\w+ v-?\d+).*?\n(?:[ \t].*\n|Traceback.*\n)*(.*)", log_text):
        out.append((m[1], m[2]))
    return out


# -- tests ----------------------------------------------------------------------------------------


def test_fuzzed_frames_harm_nothing(store_factory, tmp_path, captured_frames) -> None:
    store = store_factory()
    _seed_precious(store)
    precious = _precious(store)
    outside = _files_outside(tmp_path, store.data_dir)
    assert store.pid is not None
    rss_before = rss_kb(store.pid)
    bases = _encoded_requests() + captured_frames
    replies = 0

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payload=_hostile(bases))
    def fuzz(payload: bytes) -> None:
        nonlocal replies
        reply = _exchange(store, payload)
        replies += bool(reply)
        _assert_frames_sane(reply)
        assert store.is_running(), f"the store died on {payload[:200]!r}"

    fuzz()
    assert replies, "no fuzzed request was ever answered: the mutations never reached the handlers"
    _after_abuse(store, rss_before, precious, outside, tmp_path)
    internal = _internal_errors(store.log_text())
    assert not internal, f"handlers raised on hostile input (see {store.log_path}): {sorted(set(internal))}"


@pytest.mark.parametrize("prefix", [2**31 - 1, 2 * 1024**3 - 4, MAX_REQUEST + 1, -1, -(2**31), -5])
def test_oversized_or_negative_length_prefix_closes_the_connection(store_factory, prefix) -> None:
    store = store_factory()
    with socket.create_connection(_addr(store), timeout=10) as sock:
        sock.sendall(struct.pack(">i", prefix) + b"\x00\x12\x00\x00")
        try:
            data = sock.recv(100)  # no half-close: the store must close on its own, at once
        except ConnectionResetError:
            data = b""
        assert data == b"", f"the store answered a frame of {prefix} bytes: {data!r}"
    wait_until(lambda: f"request frame of {prefix} bytes" in store.log_text(), 10, "the store's log line")
    with WireClient(store.bootstrap) as client:
        assert client.api_versions()


def test_truncated_frames_followed_by_silence_are_closed_after_the_idle_timeout(store_factory) -> None:
    store = store_factory(["--idle-timeout", "2"])
    socks = []
    try:
        for i in range(40):
            sock = socket.create_connection(_addr(store), timeout=30)
            frame = encode_request(MetadataRequest(topics=None), 1, i)
            cut = [0, 2, 4, 7, len(frame) // 2, len(frame) - 1][i % 6]
            sock.sendall(frame[:cut])  # 0: connect and say nothing at all
            socks.append(sock)
        # Meanwhile a well-behaved client is served.
        with WireClient(store.bootstrap) as client:
            assert client.api_versions()
        for sock in socks:
            try:
                assert sock.recv(100) == b"", "the store answered a truncated frame"
            except ConnectionResetError:
                pass
            except TimeoutError:
                raise AssertionError("a half-open connection was not closed within 30 s (--idle-timeout 2)") from None
    finally:
        for sock in socks:
            sock.close()
    assert store.is_running()


def test_many_hostile_connections_at_once(store_factory, tmp_path, captured_frames) -> None:
    store = store_factory(["--idle-timeout", "3"])
    _seed_precious(store)
    precious = _precious(store)
    outside = _files_outside(tmp_path, store.data_dir)
    assert store.pid is not None
    rss_before = rss_kb(store.pid)
    fds_before = open_fds(store.pid)
    bases = _encoded_requests() + captured_frames
    socks = []
    try:
        for i in range(300):
            sock = socket.create_connection(_addr(store), timeout=30)
            base = bases[i % len(bases)]
            payload = [base[: len(base) // 2], os.urandom(50), base + base[:10], base * 3][i % 4]
            try:
                sock.sendall(payload)
            except OSError:
                pass
            socks.append(sock)
        _well_behaved_round_trip(store, "during-abuse")
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: open_fds(store.pid) <= fds_before + 10, 30, "the store to release the connections' descriptors")
    _after_abuse(store, rss_before, precious, outside, tmp_path)


def test_partial_max_size_frames_on_many_connections_keep_memory_bounded(store_factory) -> None:
    store = store_factory(["--idle-timeout", "30"])
    assert store.pid is not None
    rss_before = rss_kb(store.pid)
    socks = []
    chunk = os.urandom(1 << 20)
    try:
        for _ in range(48):
            sock = socket.create_connection(_addr(store), timeout=30)
            sock.sendall(struct.pack(">i", MAX_REQUEST) + b"\x00\x00\x00\x08\x00\x00\x00\x01\xff\xff")
            sock.setblocking(False)
            socks.append(sock)
        # Feed all of them at once, without blocking: once the store's buffer budget is spent it
        # stops reading connections that are mid-frame (backpressure), so sends stall for good.
        remaining = {sock: memoryview(chunk * 7) for sock in socks}
        while remaining:
            _, writable, _ = select.select([], list(remaining), [], 0.5)
            if not writable:
                break  # nobody is being read any more
            for sock in writable:
                try:
                    remaining[sock] = remaining[sock][sock.send(remaining[sock][: 1 << 20]) :]
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    remaining[sock] = memoryview(b"")  # the store hung up: that bounds memory too
                if not remaining[sock]:
                    del remaining[sock]
        # The last bytes may still be in socket buffers: watch the peak for a moment.
        grown = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and grown < RSS_BOUND_KB:
            grown = max(grown, rss_kb(store.pid) - rss_before)
            time.sleep(0.1)
        with WireClient(store.bootstrap) as client:
            assert client.api_versions()
    finally:
        for sock in socks:
            sock.close()
    assert store.is_running()
    assert grown < RSS_BOUND_KB, f"48 connections with 7 MiB partial frames grew RSS by {grown // 1024} MiB"


@pytest.mark.parametrize("lie", ["undecodable-records", "record-count-too-high"])
def test_crc_valid_batch_with_bad_records_is_refused_and_does_not_poison_the_partition(store_factory, lie) -> None:
    store = store_factory()
    batch = bytearray(build_batch([(b"k", b"v" * 30, [])], timestamp=1_700_000_000_000))
    if lie == "undecodable-records":
        batch[61:] = os.urandom(len(batch) - 61)
    else:
        struct.pack_into(">i", batch, 23, 2)  # last offset delta
        struct.pack_into(">i", batch, 57, 3)  # record count: 3 claimed, 1 present
    _recrc(batch)
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("poison", 1) == NONE
        error, _ = client.produce("poison", 0, bytes(batch))
        ok_error, ok_offset = client.produce(
            "poison", 0, build_batch([(b"k", b"fine", [])], timestamp=1_700_000_000_000)
        )
    assert ok_error == NONE
    consumer = KafkaConsumer(
        bootstrap_servers=store.bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        consumer.assign([TopicPartition("poison", 0)])
        values = [m.value for m in consumer]  # raises CorruptRecordError on a poisoned partition
    finally:
        consumer.close()
    assert values == [b"fine"]
    assert error in (2, 87), f"the store accepted the batch (error {error}); the fine record landed at {ok_offset}"


def _batch_with_producer(producer_id: int, epoch: int, sequence: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
        batch_size=1 << 20,
    )
    builder.append(0, timestamp=1_700_000_000_000, key=b"k", value=b"odd producer fields", headers=[])
    return bytes(builder.build())


@pytest.mark.parametrize(
    ("producer_id", "epoch", "sequence", "invalid"),
    [
        pytest.param(5, 0, -1, True, id="pid-without-sequence"),
        pytest.param(-1_099_511_627_777, 0, -1, True, id="negative-pid"),
        pytest.param(7, -1, 0, False, id="epoch-minus-1"),
        pytest.param(2**63 - 1, 32767, 2**31 - 1, False, id="extreme-values"),
    ],
)
def test_bad_producer_fields_get_an_error_code_not_a_dropped_connection(
    store_factory, producer_id, epoch, sequence, invalid
) -> None:
    """Found by the fuzzer: a batch with a producer id but no sequence made the handler raise,
    which closed the connection without an answer for *any* partition of the request."""
    store = store_factory()
    good = build_batch([(b"k", b"good", [])], timestamp=1_700_000_000_000)
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("pids", 2) == NONE
        parts = [
            ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=good),
            ProduceRequest.TopicProduceData.PartitionProduceData(
                index=1, records=_batch_with_producer(producer_id, epoch, sequence)
            ),
        ]
        req = ProduceRequest(
            transactional_id=None,
            acks=-1,
            timeout_ms=5000,
            topic_data=[ProduceRequest.TopicProduceData(name="pids", partition_data=parts)],
        )
        resp = client.call(req, ProduceResponse, 8)  # raises WireError if the store hangs up
        answers = {p.index: (p.error_code, p.base_offset) for p in resp.responses[0].partition_responses}
        assert answers[0] == (NONE, 0), answers
        if invalid:
            assert answers[1][0] != NONE, f"an invalid producer batch was accepted: {answers}"
        assert client.api_versions()  # the connection is still usable
    internal = _internal_errors(store.log_text())
    assert not internal, f"the handler raised: {internal} (see {store.log_path})"


def test_disconnect_while_produce_waits_for_fsync_leaves_no_asyncio_errors(store_factory) -> None:
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("hangup", 1) == NONE
    payload = encode_request(_produce(8, "hangup", build_batch([(b"k", b"v", [])], timestamp=1)), 8, 1)
    for _ in range(100):
        with socket.create_connection(_addr(store), timeout=10) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
    with WireClient(store.bootstrap) as client:
        hw, batches = client.fetch_all("hangup", 0)  # also: every appended batch is whole and readable
    assert hw == len(batches) <= 100
    assert store.stop() == 0
    errors = [line for line in store.log_text().splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert not errors, f"{len(errors)} error lines, e.g. {errors[:2]}"
