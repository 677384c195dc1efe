"""Retention by time and size, and DeleteRecords."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.storage import OffsetOutOfRangeError, Store

from .helpers import append, open_store, read_all, record_offsets


def _log_with_segments(store: Store, batches: int = 20, configs: dict[str, str] | None = None):
    store.create_topic("t", 1, {"segment.bytes": "400", **(configs or {})})
    plog = store.log("t", 0)
    for i in range(batches):
        append(plog, 2, timestamp=1_000 * (i + 1), value_size=60)  # batch i: max ts 1000*(i+1)+1
    plog.sync()
    return plog


def test_retention_by_time(store: Store) -> None:
    plog = _log_with_segments(store)
    segments = [(s.base_offset, s.max_timestamp) for s in plog._segments]
    assert len(segments) > 4
    now = 100_000
    cutoff = segments[2][1] + 1  # segments 0..2 are older than this
    assert plog.enforce_retention(now, now - cutoff, -1) == 3
    assert plog.log_start_offset == segments[3][0]
    assert record_offsets(read_all(plog))[0] == segments[3][0]
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(0, 100)
    # Infinite retention deletes nothing; the active segment is never deleted.
    assert plog.enforce_retention(now, -1, -1) == 0
    remaining = plog.segment_count
    assert plog.enforce_retention(10**12, 0, -1) == remaining - 1
    assert plog.segment_count == 1
    assert plog.log_start_offset == plog._segments[0].base_offset


def test_retention_by_size(store: Store) -> None:
    plog = _log_with_segments(store)
    total = plog.size_bytes
    oldest = plog._segments[0].size
    assert plog.enforce_retention(0, -1, total - oldest + 1) == 0  # removing one would go below
    assert plog.enforce_retention(0, -1, total - oldest) == 1
    assert plog.size_bytes == total - oldest
    deleted = plog.enforce_retention(0, -1, 1)
    assert plog.segment_count == 1 and deleted > 0


def test_retention_never_touches_unsynced_data(store: Store) -> None:
    store.create_topic("t", 1, {"segment.bytes": "400"})
    plog = store.log("t", 0)
    for _ in range(20):
        append(plog, 2, value_size=60)
    assert plog.segment_count > 3 and plog.high_watermark == 0
    assert plog.enforce_retention(10**12, 0, 0) == 0
    plog.sync()
    count = plog.segment_count
    assert plog.enforce_retention(10**12, 0, 0) == count - 1
    assert plog.segment_count == 1


def test_store_retention_uses_topic_config(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        plog = _log_with_segments(store, configs={"retention.ms": "1000"})
        store.create_topic("keep", 1, {"segment.bytes": "400"})
        keep = store.log("keep", 0)
        for _ in range(20):
            append(keep, 2, value_size=60, timestamp=10**9 - 1000)
        keep.sync()
        before = keep.segment_count
        assert store.enforce_retention(10**9) > 0
        assert plog.segment_count == 1
        assert keep.segment_count == before  # 7 days default
    finally:
        store.close()


def test_delete_records(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    plog = _log_with_segments(store)
    bases = [s.base_offset for s in plog._segments]
    assert plog.delete_records(5) == 5
    assert plog._segments[0].base_offset == max(b for b in bases if b <= 5)  # whole segments only
    assert record_offsets(read_all(plog))[:2] == [4, 5]  # the containing batch; consumer skips 4
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(3, 100)
    second = plog._segments[1].base_offset
    assert plog.delete_records(second + 1) == second + 1
    assert plog._segments[0].base_offset == second
    assert plog.delete_records(2) == second + 1  # never moves backwards
    with pytest.raises(OffsetOutOfRangeError):
        plog.delete_records(plog.high_watermark + 1)
    append(plog, 1)  # unsynced: the high watermark bounds DeleteRecords
    with pytest.raises(OffsetOutOfRangeError):
        plog.delete_records(plog.log_end_offset)
    assert plog.delete_records(-1) == plog.high_watermark
    hw = plog.high_watermark
    # Persisted immediately: survives a crash (no clean close: the lock is just dropped).
    store._lock.release()
    store2 = open_store(tmp_path)
    try:
        plog2 = store2.log("t", 0)
        assert plog2.log_start_offset == hw
        assert plog2.read(hw, 100) is None or plog2.high_watermark > hw
    finally:
        store2.close()
