"""Append, read, group commit and reopen of a PartitionLog, on real files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from streams.errors import FatalStorageError, StorageError
from streams.protocol.records import parse_header
from streams.storage import OffsetOutOfRangeError, PartitionLog, ReadSlice, RecordTooLargeError, Store

from .helpers import append, make_batch, open_store, read_all, record_offsets


def _fill(store: Store, batches: int = 40, count: int = 3, configs: dict[str, str] | None = None):
    store.create_topic("t", 1, configs)
    plog = store.log("t", 0)
    expected = bytearray()
    for i in range(batches):
        batch, header = make_batch(count, tag=i, value_size=20 + i)
        result = plog.append(batch, header, 1_000, 1 << 20)
        assert result.base_offset == i * count
        assert result.last_offset == i * count + count - 1
        expected += batch  # patched in place: exactly what is on disk
    plog.sync()
    return plog, bytes(expected)


def _slice(plog: PartitionLog, offset: int, max_bytes: int) -> ReadSlice:
    sl = plog.read(offset, max_bytes)
    assert sl is not None
    return sl


def test_round_trip_across_segment_rolls(store: Store) -> None:
    plog, expected = _fill(store, configs={"segment.bytes": "500"})
    assert plog.segment_count > 5
    assert plog.log_end_offset == plog.high_watermark == 120
    assert read_all(plog) == expected
    assert record_offsets(read_all(plog)) == list(range(120))
    # Every offset can be a fetch start; the slice starts at the containing batch.
    for offset in range(120):
        with _slice(plog, offset, 1) as sl:
            data = sl.read_bytes()
        header = parse_header(data)
        assert header.base_offset <= offset <= header.last_offset
        assert sl.first_offset == header.base_offset
        assert sl.last_offset == header.last_offset
        assert len(data) == header.size


def test_read_mid_batch_returns_containing_batch(store: Store) -> None:
    plog, _ = _fill(store, batches=5, count=10)
    with _slice(plog, 25, 1 << 20) as sl:
        assert sl.first_offset == 20
        assert sl.last_offset == 49
        assert record_offsets(sl.read_bytes())[0] == 20


def test_at_least_one_batch_and_max_bytes_respected(store: Store) -> None:
    plog, expected = _fill(store, batches=50, count=2)
    with _slice(plog, 0, 1) as sl:
        assert sl.first_offset == 0 and sl.last_offset == 1
        assert sl.length == parse_header(expected).size
    # Reads of any size return whole batches and never exceed max_bytes (beyond the first batch).
    for max_bytes in (100, 250, 1000, 4000, 4097, 9999):
        offset = 0
        seen = bytearray()
        while (sl := plog.read(offset, max_bytes)) is not None:
            with sl:
                data = sl.read_bytes()
            first = parse_header(data).size
            assert len(data) <= max(max_bytes, first)
            seen += data
            offset = sl.last_offset + 1
        assert bytes(seen) == expected


def test_index_is_used_for_long_reads(tmp_path: Path) -> None:
    store = open_store(tmp_path, index_interval_bytes=256)
    try:
        plog, expected = _fill(store, batches=200, count=1)
        seg = plog._segments[0]
        assert len(seg.index) > 20
        for offset in (0, 7, 55, 123, 199):
            for max_bytes in (300, 1000, 5000):
                with _slice(plog, offset, max_bytes) as sl:
                    data = sl.read_bytes()
                offs = record_offsets(data)
                assert offs[0] == offset and offs[-1] == sl.last_offset
                pos = expected.index(data)
                nxt = pos + len(data)
                # maximal: the next batch would not have fit
                if nxt < len(expected):
                    assert len(data) + parse_header(expected, nxt).size > max_bytes
    finally:
        store.close()


def test_high_watermark_gates_reads(store: Store) -> None:
    store.create_topic("t", 1)
    plog = store.log("t", 0)
    append(plog, 5)
    assert plog.log_end_offset == 5 and plog.high_watermark == 0
    assert plog.read(0, 1 << 20) is None
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(1, 1 << 20)
    ticket = plog.begin_sync()
    assert ticket is not None
    append(plog, 5)  # arrives while the sync runs: not covered by this ticket
    ticket.run()
    assert plog.high_watermark == 0  # only finish_sync moves it
    plog.finish_sync(ticket)
    assert plog.high_watermark == 5
    with _slice(plog, 0, 1 << 20) as sl:
        assert sl.last_offset == 4  # the second batch is not durable yet
    assert plog.read(5, 1 << 20) is None
    plog.sync()
    assert plog.high_watermark == 10
    assert plog.begin_sync() is None


def test_sync_ticket_in_thread_while_appending(store: Store) -> None:
    store.create_topic("t", 1, {"segment.bytes": "2000"})
    plog = store.log("t", 0)
    expected = bytearray()
    for round_ in range(30):
        ticket = plog.begin_sync()
        errors: list[BaseException] = []
        thread = None
        if ticket is not None:
            def run(t=ticket, errors=errors) -> None:
                try:
                    t.run()
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)
            thread = threading.Thread(target=run)
            thread.start()
        for i in range(5):  # keep appending (and rolling) while the fsync runs
            batch, header = make_batch(2, tag=round_ * 10 + i, value_size=50)
            plog.append(batch, header, 1_000, 1 << 20)
            expected += batch
        if ticket is not None and thread is not None:
            thread.join()
            assert not errors
            before = plog.high_watermark
            plog.finish_sync(ticket)
            assert plog.high_watermark == ticket.end_offset >= before
        if round_ == 10:
            assert plog.enforce_retention(10**12, 1, -1) > 0  # delete segments under a ticket's feet
            expected = bytearray(expected[-sum(s.size for s in plog._segments) :])
    plog.sync()
    assert plog.segment_count > 3
    assert read_all(plog) == bytes(expected)


def test_one_ticket_in_flight(store: Store) -> None:
    store.create_topic("t", 1)
    plog = store.log("t", 0)
    append(plog)
    ticket = plog.begin_sync()
    assert ticket is not None
    append(plog)
    with pytest.raises(RuntimeError):
        plog.begin_sync()
    ticket.run()
    plog.finish_sync(ticket)
    with pytest.raises(ValueError):
        plog.finish_sync(ticket)


def test_failed_fsync_is_fatal(store: Store) -> None:
    store.create_topic("t", 1)
    plog = store.log("t", 0)
    append(plog)
    ticket = plog.begin_sync()
    assert ticket is not None
    read_end, write_end = os.pipe()
    os.close(write_end)
    ticket._fds.append(read_end)  # fdatasync on a pipe fails (EINVAL), like a failing disk
    with pytest.raises(FatalStorageError, match="fsync"):
        ticket.run()
    with pytest.raises(FatalStorageError):
        plog.finish_sync(ticket)
    assert plog.high_watermark == 0


def test_reopen_gives_identical_bytes(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    plog, expected = _fill(store, configs={"segment.bytes": "700"})
    store.close()
    store = open_store(tmp_path)
    try:
        plog = store.log("t", 0)
        assert plog.high_watermark == plog.log_end_offset == 120
        assert read_all(plog) == expected
        result = append(plog, 2)
        assert result.base_offset == 120
    finally:
        store.close()


def test_record_too_large(store: Store) -> None:
    store.create_topic("t", 1)
    plog = store.log("t", 0)
    batch, header = make_batch(1, value_size=500)
    with pytest.raises(RecordTooLargeError, match=r"max\.message\.bytes"):
        plog.append(batch, header, 0, 100)
    assert plog.log_end_offset == 0


def test_offset_out_of_range_and_closed(store: Store) -> None:
    plog, _ = _fill(store, batches=2)
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(-1, 10)
    with pytest.raises(OffsetOutOfRangeError):
        plog.read(7, 10)
    assert plog.read(6, 10) is None
    store.delete_topic("t")
    with pytest.raises(StorageError, match="closed"):
        plog.read(0, 10)


def test_read_slice_survives_segment_deletion(store: Store) -> None:
    plog, expected = _fill(store, configs={"segment.bytes": "300"})
    sl = _slice(plog, 0, 1 << 20)
    assert plog.delete_records(60) == 60
    with sl:
        assert sl.read_bytes() == expected[: sl.length]


def test_segment_ms_roll(store: Store) -> None:
    store.create_topic("t", 1, {"segment.ms": "1000"})
    plog = store.log("t", 0)
    append(plog, now_ms=10_000)
    append(plog, now_ms=10_500)
    assert plog.segment_count == 1
    append(plog, now_ms=11_001)
    assert plog.segment_count == 2
    plog.sync()
    assert record_offsets(read_all(plog)) == [0, 1, 2]


def test_offset_for_timestamp(tmp_path: Path) -> None:
    store = open_store(tmp_path, index_interval_bytes=100)
    try:
        store.create_topic("t", 1, {"segment.bytes": "600"})
        plog = store.log("t", 0)
        # 30 batches of 4 records, timestamps 1000, 1010, ... one per record, compressed half the time.
        ts = 1_000
        for i in range(30):
            stamps = [ts + 10 * j for j in range(4)]
            append(plog, 4, timestamps=stamps, compression=1 if i % 2 else 0)
            ts += 40
        plog.sync()
        assert plog.segment_count > 3
        assert plog.offset_for_timestamp(0) == (0, 1_000)
        assert plog.offset_for_timestamp(1_000) == (0, 1_000)
        assert plog.offset_for_timestamp(1_001) == (1, 1_010)
        assert plog.offset_for_timestamp(1_000 + 10 * 77) == (77, 1_770)
        assert plog.offset_for_timestamp(1_000 + 10 * 77 - 3) == (77, 1_770)
        assert plog.offset_for_timestamp(1_000 + 10 * 119) == (119, 2_190)
        assert plog.offset_for_timestamp(2_191) is None
        plog.delete_records(50)
        assert plog.offset_for_timestamp(0) == (50, 1_500)
    finally:
        store.close()


def test_offset_for_timestamp_non_monotonic(store: Store) -> None:
    store.create_topic("t", 1)
    plog = store.log("t", 0)
    append(plog, 3, timestamps=[500, 900, 100])
    append(plog, 2, timestamps=[200, 950])
    plog.sync()
    assert plog.offset_for_timestamp(600) == (1, 900)
    assert plog.offset_for_timestamp(920) == (4, 950)
    assert plog.offset_for_timestamp(150) == (0, 500)


def test_failed_write_leaves_nothing_behind(store: Store) -> None:
    """A write that fails midway (here EFBIG from RLIMIT_FSIZE, like ENOSPC) is undone and retriable."""
    import resource

    store.create_topic("t", 1)
    plog = store.log("t", 0)
    append(plog, 2)
    seg = plog._segments[-1]
    size_before = seg.size
    batch, header = make_batch(5, value_size=400)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size_before + 100, hard))
    try:
        with pytest.raises(StorageError, match="not appended, retry") as info:
            plog.append(batch, header, 1_000, 1 << 20)
        assert not isinstance(info.value, FatalStorageError)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert os.fstat(seg.fd).st_size == size_before == seg.size
    assert plog.log_end_offset == 2
    batch, header = make_batch(5, value_size=400)
    assert plog.append(batch, header, 1_000, 1 << 20).base_offset == 2
    plog.sync()
    assert record_offsets(read_all(plog)) == list(range(7))
