"""Crash recovery: torn tails, junk, bit flips, lost index files, corruption of acked data."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest

from streams.errors import CorruptLogError
from streams.protocol.records import parse_header
from streams.storage import Store

from .helpers import append, make_batch, open_store, read_all, record_offsets

TOPIC = "t"


def _set_recovery_point(data_dir: Path, partition: int, recovery_point: int) -> None:
    """Rewrite the checkpoint as a crash would have left it: RP lower than what is on disk."""
    path = data_dir / "meta" / "recovery-checkpoint.json"
    doc = json.loads(path.read_text())
    for entry in doc["partitions"]:
        if entry["topic"] == TOPIC and entry["partition"] == partition:
            entry["recovery_point"] = recovery_point
    path.write_text(json.dumps(doc))


def _open(data_dir: Path):
    return open_store(data_dir, index_interval_bytes=200)


def _segments(data_dir: Path, partition: int = 0) -> list[Path]:
    return sorted((data_dir / f"{TOPIC}-{partition}").glob("*.log"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """2 partitions; partition 0 has 30 batches of 2 records in ~4 segments, RP at offset 40."""
    data_dir = tmp_path_factory.mktemp("pristine") / "data"
    store = _open(data_dir)
    store.create_topic(TOPIC, 2, {"segment.bytes": "2000"})
    batches: list[bytes] = []
    for p in (0, 1):
        plog = store.log(TOPIC, p)
        for i in range(30):
            batch, header = make_batch(2, tag=i, value_size=40 + 3 * i)
            plog.append(batch, header, 1_000, 1 << 20)
            if p == 0:
                batches.append(bytes(batch))
    store.close()
    _set_recovery_point(data_dir, 0, 40)
    return data_dir, batches


def _copy(pristine: tuple[Path, list[bytes]], tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(pristine[0], dst)
    return dst


def _check_log_is_prefix(data_dir: Path, batches: list[bytes], complete: int) -> None:
    """After recovery the log holds exactly the first ``complete`` batches and accepts appends."""
    store = _open(data_dir)
    try:
        plog = store.log(TOPIC, 0)
        assert plog.offline_reason is None
        assert plog.log_end_offset == plog.high_watermark == 2 * complete
        assert read_all(plog) == b"".join(batches[:complete])
        assert append(plog, 3).base_offset == 2 * complete
        plog.sync()
        assert store.log(TOPIC, 1).log_end_offset == 60
    finally:
        store.close()
    store = _open(data_dir)  # and the repaired log reopens cleanly
    try:
        assert store.log(TOPIC, 0).log_end_offset == 2 * complete + 3
    finally:
        store.close()


def test_pristine_reopens(pristine, tmp_path: Path) -> None:
    data_dir = _copy(pristine, tmp_path)
    assert len(_segments(data_dir)) >= 4
    _check_log_is_prefix(data_dir, pristine[1], 30)


def test_torn_tail_at_random_cut_points(pristine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, batches = pristine
    rng = random.Random(7)
    last = _segments(pristine[0])[-1]
    tail_start = sum(len(b) for b in batches) - last.stat().st_size  # log position of the last segment
    sizes_before = [sum(len(b) for b in batches[:i]) for i in range(31)]
    cuts = sorted({rng.randrange(0, last.stat().st_size) for _ in range(25)} | {0, 1, 61})
    for n, cut in enumerate(cuts):
        data_dir = _copy(pristine, tmp_path / str(n))
        seg = _segments(data_dir)[-1]
        with seg.open("r+b") as f:
            f.truncate(cut)
        complete = max(i for i in range(31) if sizes_before[i] <= tail_start + cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streams.storage"):
            _check_log_is_prefix(data_dir, batches, complete)
        if sizes_before[complete] != tail_start + cut:
            assert "dropped" in caplog.text


def test_junk_appended_to_tail(pristine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = _copy(pristine, tmp_path)
    junk = random.Random(1).randbytes(777)
    with _segments(data_dir)[-1].open("ab") as f:
        f.write(junk)
    with caplog.at_level(logging.WARNING, logger="streams.storage"):
        _check_log_is_prefix(data_dir, pristine[1], 30)
    assert "dropped 777 bytes" in caplog.text


def test_zero_filled_tail(pristine, tmp_path: Path) -> None:
    data_dir = _copy(pristine, tmp_path)
    with _segments(data_dir)[-1].open("ab") as f:
        f.write(bytes(5000))  # what a filesystem can show after power loss
    _check_log_is_prefix(data_dir, pristine[1], 30)


@pytest.mark.parametrize("batch_index", [20, 25, 29])
@pytest.mark.parametrize("field_offset", [0, 9, 16, 17, 30, 70])
def test_flipped_byte_above_recovery_point_truncates(pristine, tmp_path: Path, batch_index, field_offset) -> None:
    data_dir = _copy(pristine, tmp_path)
    batches = pristine[1]
    _flip(data_dir, batches, batch_index, field_offset)
    _check_log_is_prefix(data_dir, batches, batch_index)


def _flip(data_dir: Path, batches: list[bytes], batch_index: int, field_offset: int) -> None:
    log_pos = sum(len(b) for b in batches[:batch_index]) + field_offset
    for seg in _segments(data_dir):
        size = seg.stat().st_size
        if log_pos < size:
            with seg.open("r+b") as f:
                f.seek(log_pos)
                byte = f.read(1)
                f.seek(log_pos)
                f.write(bytes([byte[0] ^ 0x40]))
            return
        log_pos -= size
    raise AssertionError("position beyond the log")


def test_missing_middle_segment_above_recovery_point(pristine, tmp_path: Path) -> None:
    data_dir = _copy(pristine, tmp_path)
    _set_recovery_point(data_dir, 0, 0)
    segs = _segments(data_dir)
    doomed = segs[2]
    doomed.unlink()
    complete = next(i for i, _ in enumerate(pristine[1]) if 2 * i == int(doomed.stem))
    _check_log_is_prefix(data_dir, pristine[1], complete)


@pytest.mark.parametrize("field_offset", [0, 8, 16, 23, 57])
def test_corruption_below_recovery_point_takes_partition_offline(pristine, tmp_path: Path, field_offset) -> None:
    data_dir = _copy(pristine, tmp_path)
    batches = pristine[1]
    _flip(data_dir, batches, 10, field_offset)  # offsets 20-21, below the recovery point 40
    for _ in range(2):  # stays offline across restarts: the checkpoint is not weakened
        store = _open(data_dir)
        try:
            plog = store.log(TOPIC, 0)
            assert plog.offline_reason is not None
            assert "offset 20" in plog.offline_reason
            assert "backup" in plog.offline_reason
            with pytest.raises(CorruptLogError, match=r"\.log is corrupt at position \d+ \(offset 20\)"):
                plog.read(0, 100)
            with pytest.raises(CorruptLogError):
                append(plog)
            assert plog.begin_sync() is None
            assert plog.enforce_retention(10**15, 0, 0) == 0
            other = store.log(TOPIC, 1)
            assert other.offline_reason is None
            assert other.log_end_offset == 60
            assert len(read_all(other)) > 0
        finally:
            store.close()
    # The operator's way out: delete the partition directory; offsets are not reused.
    shutil.rmtree(data_dir / f"{TOPIC}-0")
    store = _open(data_dir)
    try:
        plog = store.log(TOPIC, 0)
        assert plog.offline_reason is None
        assert plog.log_start_offset == plog.log_end_offset == 40
        assert append(plog).base_offset == 40
    finally:
        store.close()


def test_payload_corruption_below_recovery_point_is_found_on_read_not_at_open(pristine, tmp_path: Path) -> None:
    """Trusted data gets header checks only at open (start-up stays fast, as in Kafka), but it is
    CRC-checked before it is first served: a flipped payload byte takes the partition offline."""
    data_dir = _copy(pristine, tmp_path)
    _flip(data_dir, pristine[1], 5, 70)  # offsets 10-11
    store = _open(data_dir)
    try:
        plog = store.log(TOPIC, 0)
        assert plog.offline_reason is None
        assert plog.log_end_offset == 60
        with plog.read(0, 1) as first:  # batches before the damage are served
            assert record_offsets(first.read_bytes()) == [0, 1]
        with pytest.raises(CorruptLogError, match=r"corrupt at position \d+ \(offset 10\)"):
            read_all(plog, 0)
        assert plog.offline_reason is not None and "backup" in plog.offline_reason
    finally:
        store.close()


def test_scrub_finds_payload_corruption_before_anyone_reads_it(pristine, tmp_path: Path) -> None:
    data_dir = _copy(pristine, tmp_path)
    _flip(data_dir, pristine[1], 7, 80)
    store = _open(data_dir)
    try:
        plog = store.log(TOPIC, 0)
        other = store.log(TOPIC, 1)
        checked = 0
        while (step := plog.scrub(300)) and plog.offline_reason is None:
            checked += step
        assert plog.offline_reason is not None and "offset 14" in plog.offline_reason
        while other.scrub(300):
            pass
        assert other.offline_reason is None
        assert other.scrub(300) == 0  # everything verified: nothing left to do
        assert record_offsets(read_all(other)) == list(range(other.log_start_offset, other.high_watermark))
    finally:
        store.close()


def test_log_shorter_than_recovery_point_is_offline(pristine, tmp_path: Path) -> None:
    data_dir = _copy(pristine, tmp_path)
    _set_recovery_point(data_dir, 0, 60)
    seg = _segments(data_dir)[-1]
    with seg.open("r+b") as f:
        f.truncate(seg.stat().st_size - 10)
    store = _open(data_dir)
    try:
        assert store.log(TOPIC, 0).offline_reason is not None
    finally:
        store.close()


def test_missing_checkpoint_means_full_validation(pristine, tmp_path: Path) -> None:
    data_dir = _copy(pristine, tmp_path)
    (data_dir / "meta" / "recovery-checkpoint.json").unlink()
    _flip(data_dir, pristine[1], 3, 70)  # payload byte: only a full scan notices
    _check_log_is_prefix(data_dir, pristine[1], 3)


def _index_files(data_dir: Path) -> dict[str, bytes]:
    part = data_dir / f"{TOPIC}-0"
    return {p.name: p.read_bytes() for p in sorted(part.iterdir()) if p.suffix in (".index", ".timeindex")}


def test_damaged_indexes_are_rebuilt(pristine, tmp_path: Path) -> None:
    data_dir = _copy(pristine, tmp_path)
    good = _index_files(data_dir)
    assert any(len(v) > 0 for k, v in good.items() if k.endswith(".index"))
    assert any(len(v) > 0 for k, v in good.items() if k.endswith(".timeindex"))
    store = _open(data_dir)
    try:
        reads = {(o, m): _read(store, o, m) for o in (0, 7, 21, 40, 59) for m in (1, 300, 5000)}
    finally:
        store.close()
    part = data_dir / f"{TOPIC}-0"
    names = sorted(good)
    (part / names[0]).unlink()  # missing
    (part / names[1]).write_bytes(good[names[1]][:-3])  # torn
    (part / names[2]).write_bytes(b"\x00\x00\x00\x05\x00\x00\x00\x07" * 3)  # garbage, right size
    (part / names[3]).write_bytes(good[names[3]] + good[names[3]][-12:])  # duplicated last entry
    for name in names[4:]:
        raw = bytearray(good[name])
        if raw:
            raw[-1] ^= 0xFF  # last entry points elsewhere
        (part / name).write_bytes(bytes(raw))
    store = _open(data_dir)
    try:
        assert {k: _read(store, *k) for k in reads} == reads
    finally:
        store.close()
    assert _index_files(data_dir) == good


def _read(store: Store, offset: int, max_bytes: int) -> bytes:
    sl = store.log(TOPIC, 0).read(offset, max_bytes)
    assert sl is not None
    with sl:
        return sl.read_bytes()


def test_orphan_index_and_undeleted_segment(pristine, tmp_path: Path) -> None:
    data_dir = _copy(pristine, tmp_path)
    part = data_dir / f"{TOPIC}-0"
    (part / "00000000000000099999.index").write_bytes(b"\x00" * 8)
    store = _open(data_dir)
    first = _segments(data_dir)[0].read_bytes()
    try:
        plog = store.log(TOPIC, 0)
        second_base = plog._segments[1].base_offset
        plog.delete_records(second_base)
    finally:
        store.close()
    assert not (part / "00000000000000099999.index").exists()
    # A crash "undeletes" the first segment: the checkpointed log start still hides it.
    (part / "00000000000000000000.log").write_bytes(first)
    store = _open(data_dir)
    try:
        plog = store.log(TOPIC, 0)
        assert plog.log_start_offset == second_base
        assert plog._segments[0].base_offset == second_base
        assert parse_header(_read(store, second_base, 1)).base_offset == second_base
    finally:
        store.close()
    assert not (part / "00000000000000000000.log").exists()
