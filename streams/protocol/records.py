"""RecordBatch v2 headers: parse, validate and patch without decoding the records.

The store appends producer batches byte for byte. Only ``BaseOffset`` (bytes 0-7) and
``PartitionLeaderEpoch`` (bytes 12-15) are rewritten; both lie outside the CRC-32C, which covers
bytes 21 to the end of the batch, so a patched batch keeps its producer's checksum.

Layout (Kafka ``DefaultRecordBatch``)::

     0 BaseOffset int64          8 Length int32 (bytes after this field)
    12 PartitionLeaderEpoch      16 Magic int8 (= 2)
    17 CRC uint32 (CRC-32C of bytes [21, end))
    21 Attributes int16          23 LastOffsetDelta int32
    27 BaseTimestamp int64       35 MaxTimestamp int64
    43 ProducerId int64          51 ProducerEpoch int16
    53 BaseSequence int32        57 RecordCount int32
    61 records ...
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

from .compression import DecompressionError, decompress

__all__ = [
    "BATCH_OVERHEAD",
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "NO_PRODUCER_ID",
    "BatchHeader",
    "InvalidBatch",
    "iter_batches",
    "parse_header",
    "patch_base_offset",
    "validate_batch",
    "validate_records",
]

HEADER_SIZE = 61
"""Bytes of a v2 batch header, up to the first record."""
LOG_OVERHEAD = 12
"""BaseOffset + Length: the part of a batch that ``Length`` does not count."""
BATCH_OVERHEAD = HEADER_SIZE
NO_PRODUCER_ID = -1

_HEADER = struct.Struct(">qiibIhiqqqhii")
_CODEC_MASK = 0x07
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20
_KNOWN_CODECS = frozenset({0, 1, 2, 3, 4})  # none, gzip, snappy, lz4, zstd


class InvalidBatch(ValueError):
    """A record batch failed validation; ``corrupt`` tells a CRC/length problem from a policy one."""

    def __init__(self, message: str, *, corrupt: bool = True) -> None:
        super().__init__(message)
        self.corrupt = corrupt


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies, header included."""
        return self.length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> int:
        return self.attributes & _CODEC_MASK

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & _TIMESTAMP_TYPE_BIT)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)

    @property
    def last_sequence(self) -> int:
        """Sequence of the batch's last record, wrapping at INT32_MAX as Kafka does."""
        if self.base_sequence < 0:
            return -1
        return (self.base_sequence + self.last_offset_delta) % 0x80000000


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Read the fixed header at ``pos``; checks only that the header itself is there."""
    if len(buf) - pos < HEADER_SIZE:
        raise InvalidBatch(f"record batch header truncated: {len(buf) - pos} of {HEADER_SIZE} bytes")
    return BatchHeader(*_HEADER.unpack_from(buf, pos))


def validate_batch(buf: bytes | bytearray | memoryview, pos: int = 0, *, end: int | None = None) -> BatchHeader:
    """Check length bounds, magic and CRC-32C of the batch at ``pos``; return its header.

    ``end`` bounds the batch (defaults to the end of ``buf``); a declared length that runs past
    it is a torn or hostile batch and is rejected before anything is read beyond the header.
    """
    limit = len(buf) if end is None else end
    header = parse_header(buf, pos)
    if header.length < HEADER_SIZE - LOG_OVERHEAD:
        raise InvalidBatch(f"record batch length {header.length} is smaller than a batch header")
    if pos + header.size > limit:
        raise InvalidBatch(f"record batch declares {header.size} bytes but only {limit - pos} remain")
    if header.magic != 2:
        raise InvalidBatch(f"record batch magic {header.magic} is not supported (only magic 2)")
    view = memoryview(buf)[pos + 21 : pos + header.size]
    actual = crc32c.crc32c(view)
    view.release()
    if actual != header.crc:
        raise InvalidBatch(f"record batch CRC-32C mismatch: stored {header.crc:#010x}, computed {actual:#010x}")
    if header.record_count <= 0 or header.last_offset_delta != header.record_count - 1:
        raise InvalidBatch(
            f"record batch has record count {header.record_count} and last offset delta "
            f"{header.last_offset_delta}; they must agree",
        )
    if header.compression not in _KNOWN_CODECS:
        raise InvalidBatch(f"record batch uses unknown compression codec {header.compression}")
    return header


def iter_batches(buf: bytes | bytearray | memoryview) -> list[BatchHeader]:
    """Validate every batch of a produce payload; the batches must fill ``buf`` exactly."""
    headers: list[BatchHeader] = []
    pos = 0
    size = len(buf)
    while pos < size:
        header = validate_batch(buf, pos)
        headers.append(header)
        pos += header.size
    if not headers:
        raise InvalidBatch("produce request carries no record batch")
    return headers


def patch_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int, leader_epoch: int = 0) -> None:
    """Assign the batch's offsets in place (outside the CRC, so the checksum stays valid)."""
    struct.pack_into(">q", buf, pos, base_offset)
    struct.pack_into(">i", buf, pos + 12, leader_epoch)


def _read_varint(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int]:
    """A zigzag varint (Kafka's record fields); raises IndexError/ValueError on bad input."""
    value = shift = 0
    while True:
        if pos >= end:
            raise IndexError("varint runs past the record")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _walk_records(buf: bytes | bytearray | memoryview, pos: int, end: int, count: int) -> None:
    """Check the record framing: ``count`` records whose lengths tile ``[pos, end)`` exactly and
    whose offset deltas are 0, 1, 2... (what a consumer relies on to decode them).

    This runs for every produced record, so varints of up to two bytes (lengths below 8 KiB,
    offset deltas below 8192) are decoded inline; longer ones use :func:`_read_varint`.
    """
    index = 0
    read = _read_varint
    while pos < end:
        b0 = buf[pos]
        if b0 < 0x80:
            raw = b0
            pos += 1
        elif pos + 1 < end and (b1 := buf[pos + 1]) < 0x80:
            raw = (b0 & 0x7F) | (b1 << 7)
            pos += 2
        else:
            length, pos = read(buf, pos, end)
            raw = -1
        if raw >= 0:
            length = (raw >> 1) ^ -(raw & 1)
        if length <= 0 or pos + length > end:
            raise InvalidBatch(f"record {index} declares length {length}, past the batch end", corrupt=False)
        record_end = pos + length
        p = pos + 1  # skip the attributes byte
        while p < record_end and buf[p] >= 0x80:  # skip the timestamp delta
            p += 1
        p += 1
        if p < record_end and (b0 := buf[p]) < 0x80:
            delta = (b0 >> 1) ^ -(b0 & 1)
        elif p + 1 < record_end and (b1 := buf[p + 1]) < 0x80:
            raw = (b0 & 0x7F) | (b1 << 7)
            delta = (raw >> 1) ^ -(raw & 1)
        else:
            delta, _ = read(buf, p, record_end)
        if delta != index:
            raise InvalidBatch(f"record {index} has offset delta {delta}", corrupt=False)
        pos = record_end
        index += 1
    if index != count:
        raise InvalidBatch(f"batch claims {count} records but holds {index}", corrupt=False)


def validate_records(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader, max_uncompressed: int) -> None:
    """Check that the records inside a (CRC-valid) batch are well framed, as Kafka's LogValidator
    does, so that no consumer is ever served a batch it cannot decode. Compressed batches are
    decompressed (bounded by ``max_uncompressed``) for the check only; nothing is re-encoded."""
    start = pos + HEADER_SIZE
    end = pos + header.size
    try:
        if header.compression:
            data = decompress(header.compression, memoryview(buf)[start:end], max_uncompressed)
            _walk_records(data, 0, len(data), header.record_count)
        else:
            _walk_records(buf, start, end, header.record_count)
    except DecompressionError as exc:
        raise InvalidBatch(str(exc), corrupt=True) from exc
    except (IndexError, ValueError) as exc:
        if isinstance(exc, InvalidBatch):
            raise
        raise InvalidBatch(f"records do not decode: {exc}", corrupt=False) from exc
