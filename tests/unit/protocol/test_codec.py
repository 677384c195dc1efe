"""The protocol codec against bytes produced by kafka-python's client-side encoders, and hostile bytes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.metadata import MetadataRequest
from kafka.protocol.producer.produce import ProduceRequest
from kafka.record.default_records import DefaultRecordBatchBuilder

from streams.protocol.apis import (
    SUPPORTED_APIS,
    ApiKey,
    UnsupportedApi,
    api_versions_error_response,
    decode_request,
)
from streams.protocol.frames import FrameError, FrameReader
from streams.protocol.header import MalformedRequest
from streams.protocol.records import InvalidBatch, iter_batches, patch_base_offset, validate_batch, validate_records


def _batch(n: int = 3, codec: int = 0, producer_id: int = -1) -> bytearray:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1,
        batch_size=1 << 20,
    )
    for i in range(n):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=b"v" * 100, headers=[("h", b"x")])
    return bytearray(builder.build())


def _produce_frame(version: int, records: bytes, correlation_id: int = 9) -> bytes:
    part = ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=records)
    req = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=1000,
        topic_data=[ProduceRequest.TopicProduceData(name="orders", partition_data=[part])],
    )
    req.with_header(correlation_id=correlation_id, client_id="test")
    return bytes(req.encode(version=version, header=True))


@pytest.mark.parametrize("version", [3, 5, 7, 8])
def test_produce_request_decodes_with_records_untouched(version: int) -> None:
    batch = _batch()
    decoded = decode_request(_produce_frame(version, bytes(batch)))
    assert decoded.header.correlation_id == 9
    assert decoded.header.client_id == "test"
    assert decoded.body.acks == -1
    records = decoded.body.topic_data[0].partition_data[0].records
    assert records == bytes(batch)


def test_every_advertised_version_of_every_api_decodes_a_client_request() -> None:
    for spec in SUPPORTED_APIS.values():
        for version in range(spec.serve_min, spec.max_version + 1):
            req = spec.request()
            req.with_header(correlation_id=version, client_id="c")
            frame = bytes(req.encode(version=version, header=True))
            decoded = decode_request(frame)
            assert decoded.spec is spec and decoded.version == version


def test_produce_v0_to_v2_is_refused_although_advertised() -> None:
    frame = struct.pack(">hhih", ApiKey.PRODUCE, 2, 1, -1) + b"\x00" * 10
    with pytest.raises(UnsupportedApi):
        decode_request(frame)


def test_flexible_api_versions_v3_header_and_body() -> None:
    req = ApiVersionsRequest(client_software_name="librdkafka", client_software_version="2.16")
    req.with_header(correlation_id=1, client_id="rdkafka")
    decoded = decode_request(bytes(req.encode(version=3, header=True)))
    assert decoded.body.client_software_name == "librdkafka"


def test_unknown_api_versions_version_gets_v0_error_reply() -> None:
    frame = struct.pack(">hhih", ApiKey.API_VERSIONS, 99, 42, -1)
    with pytest.raises(UnsupportedApi) as info:
        decode_request(frame)
    assert info.value.header.correlation_id == 42
    reply = api_versions_error_response(42)
    size, corr = struct.unpack_from(">ii", reply)
    assert size == len(reply) - 4 and corr == 42
    body = ApiVersionsResponse.decode(reply[8:], version=0)
    assert body.error_code == 35
    assert {k.api_key for k in body.api_keys} == set(SUPPORTED_APIS)


def test_truncated_string_is_detected_by_position() -> None:
    req = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name="a-long-topic-name")])
    req.with_header(correlation_id=1, client_id="c")
    frame = bytes(req.encode(version=1, header=True))
    for cut in range(len(frame) - 1, 9, -1):
        with pytest.raises(MalformedRequest):
            decode_request(frame[:cut])


def test_frame_reader_splits_across_feeds_and_refuses_oversized() -> None:
    reader = FrameReader(100)
    data = struct.pack(">i", 3) + b"abc" + struct.pack(">i", 2) + b"de"
    got = []
    for byte in data:
        got += reader.feed(bytes([byte]))
    assert [bytes(f) for f in got] == [b"abc", b"de"]
    with pytest.raises(FrameError):
        reader.feed(struct.pack(">i", 101))
    with pytest.raises(FrameError):
        FrameReader(100).feed(struct.pack(">i", -5))


def test_batch_validation_and_patch_keep_crc_valid() -> None:
    batch = _batch(5, codec=3)  # lz4
    header = validate_batch(batch)
    assert header.record_count == 5 and header.compression == 3
    patch_base_offset(batch, 0, 12345)
    patched = validate_batch(batch)
    assert patched.base_offset == 12345 and patched.last_offset == 12349
    two = batch + _batch(2)
    assert [h.record_count for h in iter_batches(two)] == [5, 2]


def test_batch_validation_rejects_corruption() -> None:
    batch = _batch()
    flipped = bytearray(batch)
    flipped[-1] ^= 0xFF
    with pytest.raises(InvalidBatch, match="CRC"):
        validate_batch(flipped)
    with pytest.raises(InvalidBatch, match="remain"):
        validate_batch(batch[:-1])
    wrong_magic = bytearray(batch)
    wrong_magic[16] = 1
    with pytest.raises(InvalidBatch, match="magic"):
        validate_batch(wrong_magic)
    with pytest.raises(InvalidBatch):
        iter_batches(batch + b"\x00" * 7)


_KEYS = sorted(SUPPORTED_APIS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    api=st.sampled_from(_KEYS),
    version=st.integers(min_value=-2, max_value=14),
    body=st.binary(max_size=300),
)
def test_random_bodies_never_escape_as_anything_but_malformed(api: int, version: int, body: bytes) -> None:
    frame = struct.pack(">hhih", api, version, 7, 1) + b"c" + body
    try:
        decode_request(frame)
    except MalformedRequest:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_client_frames_never_escape(data: st.DataObject) -> None:
    frame = bytearray(_produce_frame(7, bytes(_batch(2))))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    try:
        decoded = decode_request(bytes(frame[:cut]))
    except MalformedRequest:
        return
    if decoded.spec.key != ApiKey.PRODUCE:  # a mutated header may name another API that decodes
        return
    for topic in decoded.body.topic_data:
        for part in topic.partition_data:
            if part.records:
                buf = bytearray(part.records)
                try:
                    pos = 0
                    for header in iter_batches(buf):
                        validate_records(buf, pos, header, 1 << 20)
                        pos += header.size
                except InvalidBatch:
                    pass


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_records_of_every_codec_validate(codec: int) -> None:
    batch = _batch(50, codec=codec)
    validate_records(batch, 0, validate_batch(batch), 1 << 20)


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_decompression_is_bounded(codec: int) -> None:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=1 << 24)
    for i in range(64):
        builder.append(i, timestamp=0, key=None, value=b"\x00" * 16384, headers=[])
    batch = bytearray(builder.build())
    header = validate_batch(batch)
    assert header.size < 64 * 1024  # compresses well
    with pytest.raises(InvalidBatch, match="more than"):
        validate_records(batch, 0, header, 100_000)


def _recrc(batch: bytearray) -> None:
    import crc32c

    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))


def test_crc_valid_batch_with_lying_record_count_or_garbage_records_is_rejected() -> None:
    batch = _batch(3)
    struct.pack_into(">i", batch, 23, 4)
    struct.pack_into(">i", batch, 57, 5)
    _recrc(batch)
    with pytest.raises(InvalidBatch, match="claims 5 records but holds 3"):
        validate_records(batch, 0, validate_batch(batch), 1 << 20)
    garbage = _batch(3)
    garbage[61:] = bytes(range(256)) * ((len(garbage) - 61) // 256) + b"\x01" * ((len(garbage) - 61) % 256)
    _recrc(garbage)
    with pytest.raises(InvalidBatch):
        validate_records(garbage, 0, validate_batch(garbage), 1 << 20)
    compressed = _batch(3, codec=4)
    compressed[70] ^= 0xFF
    _recrc(compressed)
    with pytest.raises(InvalidBatch):
        validate_records(compressed, 0, validate_batch(compressed), 1 << 20)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), codec=st.sampled_from([0, 1, 2, 3, 4]))
def test_crc_valid_mutations_of_records_raise_only_invalid_batch(data: st.DataObject, codec: int) -> None:
    batch = _batch(data.draw(st.integers(1, 5)), codec=codec)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(61, len(batch) - 1))
        batch[pos] = data.draw(st.integers(0, 255))
    _recrc(batch)
    try:
        validate_records(batch, 0, validate_batch(batch), 1 << 20)
    except InvalidBatch:
        pass


def test_null_in_a_non_nullable_array_is_malformed() -> None:
    from kafka.protocol.consumer.offsets import ListOffsetsRequest

    topic = ListOffsetsRequest.ListOffsetsTopic(name="t", partitions=None)
    req = ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[topic])
    req.with_header(correlation_id=1, client_id="x")
    with pytest.raises(MalformedRequest, match="non-nullable field Partitions is null"):
        decode_request(bytes(req.encode(version=5, header=True)))
    # Metadata's topic list is nullable (null = all topics) and stays accepted.
    meta = MetadataRequest(topics=None)
    meta.with_header(correlation_id=2, client_id="x")
    assert decode_request(bytes(meta.encode(version=5, header=True))).body.topics is None
