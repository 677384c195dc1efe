"""Batch builders and small utilities shared by the storage tests."""

from __future__ import annotations

from pathlib import Path

from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from streams.protocol.records import BatchHeader, parse_header, validate_batch
from streams.storage import PartitionLog, Store, StoreConfig

__all__ = ["append", "make_batch", "open_store", "read_all", "record_offsets"]


def make_batch(
    count: int = 1,
    *,
    value_size: int = 10,
    timestamp: int = 1_000,
    timestamps: list[int] | None = None,
    producer_id: int = -1,
    epoch: int = -1,
    sequence: int = -1,
    compression: int = 0,
    tag: int = 0,
) -> tuple[bytearray, BatchHeader]:
    """A RecordBatch v2 as a client would send it (base offset 0), plus its validated header."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=False,
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
        batch_size=1 << 24,
    )
    for i in range(count):
        ts = timestamps[i] if timestamps is not None else timestamp + i
        value = (b"%d:%d:" % (tag, i) + b"x" * value_size)[: max(value_size, 1)]
        builder.append(i, timestamp=ts, key=b"k%d" % i, value=value, headers=[])
    batch = bytearray(builder.build())
    return batch, validate_batch(batch)


def append(plog: PartitionLog, count: int = 1, now_ms: int = 1_000, **kwargs: object):
    batch, header = make_batch(count, **kwargs)  # type: ignore[arg-type]
    return plog.append(batch, header, now_ms, 1 << 30)


def open_store(path: Path, **kwargs: object) -> Store:
    store = Store(StoreConfig(path, **kwargs))  # type: ignore[arg-type]
    store.open()
    return store


def read_all(plog: PartitionLog, start: int | None = None, max_bytes: int = 1 << 30) -> bytes:
    """Every byte from ``start`` (default: log start) to the high watermark, via read()."""
    offset = plog.log_start_offset if start is None else start
    out = bytearray()
    while True:
        sl = plog.read(offset, max_bytes)
        if sl is None:
            return bytes(out)
        with sl:
            data = sl.read_bytes()
        out += data
        offset = sl.last_offset + 1


def record_offsets(data: bytes) -> list[int]:
    """Offsets of every record in a run of batches (decodes them, like a consumer)."""
    offsets: list[int] = []
    pos = 0
    while pos < len(data):
        header = parse_header(data, pos)
        batch = DefaultRecordBatch(data[pos : pos + header.size])
        assert batch.validate_crc()
        offsets.extend(r.offset for r in batch)
        pos += header.size
    return offsets
