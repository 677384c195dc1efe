"""OffsetStore: committed offsets of consumer groups, on real files.

A crash is modelled two ways: a kill -9 (the directory is copied while the store is open, so
whatever reached the page cache survives) and a power loss (the copy is also cut anywhere past
the last fsync, optionally followed by junk).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import random
import shutil
import struct
import tempfile
import threading
from pathlib import Path

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import CorruptLogError, FatalStorageError, StorageError
from streams.storage import (
    CommittedOffset,
    DataDirLockedError,
    InvalidOffsetCommitError,
    OffsetCommitEntry,
    OffsetMetadataTooLargeError,
    OffsetStore,
    OffsetSyncTicket,
)
from streams.storage.offsets import CHECKPOINT_NAME, HEADER_SIZE, LOG_NAME

State = dict[str, dict[tuple[str, int], CommittedOffset]]


def open_offsets(directory: Path, **kwargs) -> OffsetStore:
    store = OffsetStore(directory, **kwargs)
    store.open()
    return store


def state(store: OffsetStore) -> State:
    return {g: store.fetch(g) for g in store.groups()}


def kill_copy(store: OffsetStore, dest: Path) -> Path:
    """The directory as a kill -9 would leave it (the page cache survives a process death)."""
    shutil.copytree(store.directory, dest)
    return dest


def frame(payload: bytes) -> bytes:
    """A record frame built independently of the implementation."""
    length = struct.pack(">I", len(payload))
    return length + struct.pack(">I", crc32c.crc32c(length + payload)) + payload


@pytest.fixture
def store(tmp_path: Path):
    s = open_offsets(tmp_path / "offsets")
    yield s
    s.close()


# -- basics ------------------------------------------------------------------------------------


def test_commit_fetch_round_trip(store: OffsetStore) -> None:
    seq = store.commit("g1", [OffsetCommitEntry("t", 0, 10, 3, "meta"), ("t", 1, 20, -1, None)], 1_000)
    assert seq == 0
    assert store.log_end_offset == 1 and store.high_watermark == 0
    assert store.fetch("g1") == {
        ("t", 0): CommittedOffset(10, 3, "meta", 1_000),
        ("t", 1): CommittedOffset(20, -1, None, 1_000),
    }
    assert store.fetch_partition("g1", "t", 1) == CommittedOffset(20, -1, None, 1_000)
    assert store.fetch_partition("g1", "t", 2) is None
    assert store.fetch_partition("nope", "t", 0) is None
    assert store.fetch("nope") == {}
    # later commits overwrite; later entries in one commit win
    assert store.commit("g1", [("t", 0, 11, 4, None), ("t", 0, 12, 4, "x")], 2_000) == 1
    assert store.fetch_partition("g1", "t", 0) == CommittedOffset(12, 4, "x", 2_000)
    assert store.groups() == {"g1"}
    assert store.entry_count == 2
    # the returned dict is a copy
    store.fetch("g1").clear()
    assert len(store.fetch("g1")) == 2


def test_any_unicode_names_and_metadata_survive_reopen(tmp_path: Path) -> None:
    names = ["", "grüppe", "组", "emoji-🎉", "nul\x00byte", "lone-\udc80-surrogate", '"quote\\']
    s = open_offsets(tmp_path / "o")
    for i, name in enumerate(names):
        s.commit(name, [(name, i, i, i, name)], i)
    s.close()
    s = open_offsets(tmp_path / "o")
    assert s.groups() == set(names)
    for i, name in enumerate(names):
        assert s.fetch(name) == {(name, i): CommittedOffset(i, i, name, i)}
    s.close()


@pytest.mark.parametrize(
    "entry",
    [
        ("t", -1, 0, -1, None),
        ("t", 1 << 31, 0, -1, None),
        ("t", 0, -2, -1, None),
        ("t", 0, 1 << 63, -1, None),
        ("t", 0, 0, -2, None),
        ("t", True, 0, -1, None),
        ("t", 0, 1.0, -1, None),
        (b"t", 0, 0, -1, None),
        ("t", 0, 0, -1, b"meta"),
    ],
)
def test_invalid_entries_are_refused_and_nothing_is_written(store: OffsetStore, entry) -> None:
    with pytest.raises(InvalidOffsetCommitError):
        store.commit("g", [("t", 0, 5, -1, None), entry], 1)
    assert store.log_end_offset == 0
    assert store.groups() == set()


def test_bounds_are_accepted(store: OffsetStore) -> None:
    store.commit("g", [("t", 0, -1, -1, None), ("t", (1 << 31) - 1, (1 << 63) - 1, (1 << 31) - 1, "")], 1)
    assert store.fetch_partition("g", "t", (1 << 31) - 1) == CommittedOffset((1 << 63) - 1, (1 << 31) - 1, "", 1)


def test_metadata_limit(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o", max_metadata_bytes=4)
    s.commit("g", [("t", 0, 1, -1, "abcd")], 1)
    with pytest.raises(OffsetMetadataTooLargeError, match=r"offset\.metadata\.max\.bytes"):
        s.commit("g", [("t", 0, 1, -1, "abcdé")], 1)
    s.close()


def test_bad_group_type_and_closed_store(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    with pytest.raises(InvalidOffsetCommitError):
        s.commit(7, [("t", 0, 1, -1, None)], 1)  # type: ignore[arg-type]
    s.close()
    s.close()  # idempotent
    with pytest.raises(StorageError, match="not open"):
        s.commit("g", [("t", 0, 1, -1, None)], 1)
    assert s.begin_sync() is None


def test_noops_write_nothing_and_return_a_waitable_seq(store: OffsetStore) -> None:
    assert store.commit("g", [], 1) == -1
    assert store.delete_group("g") == -1
    assert store.delete_offsets("g", [("t", 0)]) == -1
    assert store.remove_topic("t") == -1
    store.commit("g", [("t", 0, 1, -1, None)], 1)
    assert store.delete_offsets("g", [("t", 9)]) == 0  # waits for the pending commit, writes nothing
    assert store.log_end_offset == 1


def test_second_store_on_the_same_directory_is_refused(store: OffsetStore) -> None:
    with pytest.raises(DataDirLockedError, match="in use"):
        OffsetStore(store.directory).open()
    with pytest.raises(StorageError, match="already open"):
        store.open()


# -- durability interface ----------------------------------------------------------------------


def test_sync_ticket_runs_in_a_thread_while_commits_continue(store: OffsetStore) -> None:
    assert store.begin_sync() is None
    for i in range(50):
        store.commit("g", [("t", i % 3, i, -1, None)], i)
    ticket = store.begin_sync()
    assert ticket is not None and ticket.end_offset == 50
    with pytest.raises(RuntimeError, match="in flight"):
        store.begin_sync()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ticket.run()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    for i in range(50, 300):
        store.commit(f"g{i % 7}", [("t", i % 3, i, -1, None)], i)
        if i == 150:
            store.compact()  # a compaction meanwhile: the ticket keeps its own descriptor
    worker.join()
    assert not errors
    with pytest.raises(ValueError, match="not the sync in flight"):
        store.finish_sync(object())  # type: ignore[arg-type]
    store.finish_sync(ticket)
    assert store.high_watermark == 50
    assert store.log_end_offset == 300
    second = store.begin_sync()
    assert second is not None and second.end_offset == 300
    second.run()
    store.finish_sync(second)
    assert store.high_watermark == 300
    assert store.begin_sync() is None
    before = state(store)
    copy_dir = kill_copy(store, store.directory.parent / "copy")
    s2 = open_offsets(copy_dir)
    assert state(s2) == before
    s2.close()


def test_unfinished_ticket_is_fatal(store: OffsetStore) -> None:
    store.commit("g", [("t", 0, 1, -1, None)], 1)
    ticket = store.begin_sync()
    assert ticket is not None
    ticket.discard()
    with pytest.raises(FatalStorageError):
        store.finish_sync(ticket)
    assert store.high_watermark == 0


def test_failed_fsync_is_fatal() -> None:
    read_end, write_end = os.pipe()  # fdatasync of a pipe fails (EINVAL), as a dying disk would
    os.close(write_end)
    ticket = OffsetSyncTicket("offset store x", 1, read_end, None)
    with pytest.raises(FatalStorageError, match="must stop"):
        ticket.run()
    assert not ticket.completed


def test_flusher_drives_the_store(tmp_path: Path) -> None:
    from streams.server.config import FsyncPolicy
    from streams.server.flusher import Flusher

    store = open_offsets(tmp_path / "o")
    fatal: list[BaseException] = []

    async def main() -> None:
        flusher = Flusher(FsyncPolicy(), fatal.append)
        flusher.start()
        waits = []
        for i in range(200):
            seq = store.commit(f"g{i % 5}", [("t", i % 4, i, -1, None)], i)
            flusher.appended(store)
            waits.append(flusher.wait_durable(store, seq + 1))
            if i % 20 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*waits)
        assert store.high_watermark == store.log_end_offset == 200
        await flusher.stop()
        assert flusher.rounds < 200  # group commit

    asyncio.run(main())
    assert not fatal
    before = state(store)
    s2 = open_offsets(kill_copy(store, tmp_path / "copy"))
    assert state(s2) == before
    s2.close()
    store.close()


# -- restarts and crashes ----------------------------------------------------------------------


def test_reopen_after_close_keeps_everything(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    for i in range(100):
        s.commit(f"g{i % 10}", [(f"t{i % 3}", i % 5, i, i % 2, f"m{i}")], 1_000 + i)
    before = state(s)
    s.close()
    assert (tmp_path / "o" / CHECKPOINT_NAME).exists()
    s = open_offsets(tmp_path / "o")
    assert state(s) == before
    assert s.log_end_offset == s.high_watermark == 0  # sequence numbers restart
    s.commit("g0", [("t0", 0, 5, -1, None)], 5)
    s.close()


def test_kill_without_close_keeps_what_was_written(store: OffsetStore, tmp_path: Path) -> None:
    for i in range(30):
        store.commit(f"g{i % 4}", [("t", i % 3, i, -1, None)], i)
    store.sync()
    store.commit("late", [("t", 0, 1, -1, None)], 99)  # unsynced, but in the page cache
    before = state(store)
    s2 = open_offsets(kill_copy(store, tmp_path / "copy"))
    assert state(s2) == before
    s2.close()


def _build_history(store: OffsetStore, rng: random.Random, count: int) -> list[State]:
    """Random commits and tombstones; snapshot i is the state after record i."""
    snapshots = [state(store)]
    for i in range(count):
        end = store.log_end_offset
        roll = rng.random()
        group = f"g{rng.randrange(4)}"
        if roll < 0.75:
            store.commit(group, [(f"t{rng.randrange(3)}", rng.randrange(3), i, -1, "m" * rng.randrange(20))], i)
        elif roll < 0.85:
            store.delete_offsets(group, [(f"t{rng.randrange(3)}", rng.randrange(3))])
        elif roll < 0.93:
            store.delete_group(group)
        else:
            store.remove_topic(f"t{rng.randrange(3)}")
        if store.log_end_offset != end:
            snapshots.append(state(store))
    return snapshots


def test_torn_tail_at_many_cut_points(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(7)
    s = open_offsets(tmp_path / "o")
    snapshots = _build_history(s, rng, 40)
    s.sync()
    synced_records, synced_bytes = s.log_end_offset, s.size_bytes
    snapshots += _build_history(s, rng, 60)[1:]
    src = kill_copy(s, tmp_path / "src")
    s.close()
    total = (src / LOG_NAME).stat().st_size
    cuts = sorted({synced_bytes, total, *(rng.randrange(synced_bytes, total + 1) for _ in range(25))})
    seen_records = set()
    for n, cut in enumerate(cuts):
        for junk in (b"", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))), b"\0" * 4096):
            d = tmp_path / f"cut{n}-{len(junk)}"
            shutil.copytree(src, d)
            with (d / LOG_NAME).open("r+b") as f:
                f.truncate(cut)
                f.seek(0, 2)
                f.write(junk)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="streams.storage.offsets"):
                s2 = open_offsets(d)
            got = state(s2)
            assert (d / LOG_NAME).stat().st_size == s2.size_bytes  # the tail is gone from the file
            matches = [k for k in range(synced_records, len(snapshots)) if snapshots[k] == got]
            assert matches, f"cut {cut} with {len(junk)} junk bytes gave a state that never existed"
            seen_records.add(matches[-1])
            dropped = cut + len(junk) - s2.size_bytes
            if dropped:
                assert f"tail of {dropped} bytes" in caplog.text
            else:
                assert "tail" not in caplog.text
            # the truncation is real: new commits land after the survivors and stay
            s2.commit("after", [("t", 0, 1, -1, None)], 1)
            s2.close()
            s3 = open_offsets(d)
            assert state(s3) == {**got, "after": {("t", 0): CommittedOffset(1, -1, None, 1)}}
            s3.close()
            shutil.rmtree(d)
    assert synced_records in seen_records and len(snapshots) - 1 in seen_records


def test_crc_valid_garbage_in_the_tail_is_truncated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad_payloads = [
        b"not json",
        b"\xff\xfe",
        b"[1,2]",
        b'{"k":"commit","g":"g","o":[["t",0,"5",-1,null,1]]}',
        b'{"k":"commit","g":"g","o":[["t",-3,5,-1,null,1]]}',
        b'{"k":"commit","g":"g","o":[["t",0,5,-1,7,1]]}',
        b'{"k":"commit","g":1,"o":[]}',
        b'{"k":"delete","d":{"g":[["t"]]}}',
        b'{"k":"delete","d":{"g":5}}',
        b'{"k":"delete","d":[]}',
        b'{"k":"remove_topic","t":null}',
        b'{"k":"future_kind"}',
        b"[" * 100_000 + b"]" * 100_000,
    ]
    for i, payload in enumerate(bad_payloads):
        d = tmp_path / f"o{i}"
        s = open_offsets(d)
        s.commit("g", [("t", 0, 1, -1, None)], 1)
        s.sync()
        d2 = kill_copy(s, tmp_path / f"copy{i}")
        s.close()
        good_after = frame(b'{"k":"commit","g":"g","o":[["t",1,2,-1,null,1]]}')
        with (d2 / LOG_NAME).open("ab") as f:
            f.write(frame(payload) + good_after)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="streams.storage.offsets"):
            s2 = open_offsets(d2)
        assert state(s2) == {"g": {("t", 0): CommittedOffset(1, -1, None, 1)}}, payload[:60]
        assert "tail of" in caplog.text
        s2.close()


def test_hand_written_valid_records_replay(tmp_path: Path) -> None:
    """The documented format is the format: records written by hand are understood."""
    s = open_offsets(tmp_path / "o")
    s.close()
    records = [
        {"k": "commit", "g": "a", "o": [["x", 0, 5, 1, "m", 10], ["y", 1, 6, -1, None, 11]]},
        {"k": "commit", "g": "b", "o": [["x", 0, 7, -1, None, 12]]},
        {"k": "delete", "d": {"a": [["y", 1]]}},
        {"k": "commit", "g": "c", "o": [["z", 2, 8, -1, None, 13]]},
        {"k": "remove_topic", "t": "z"},
        {"k": "delete", "d": {"b": None, "unknown": None}},
    ]
    with (tmp_path / "o" / LOG_NAME).open("ab") as f:
        for rec in records:
            f.write(frame(json.dumps(rec).encode()))
    s = open_offsets(tmp_path / "o")
    assert state(s) == {"a": {("x", 0): CommittedOffset(5, 1, "m", 10)}}
    s.close()


def test_corruption_in_synced_data_is_refused(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    for i in range(20):
        s.commit("g", [("t", i, i, -1, None)], i)
    s.close()  # the checkpoint now vouches for the whole file
    path = tmp_path / "o" / LOG_NAME
    original = path.read_bytes()
    # a flipped byte in the middle of a record
    damaged = bytearray(original)
    damaged[len(original) // 2] ^= 0x40
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptLogError, match="acknowledged") as info:
        OffsetStore(tmp_path / "o").open()
    assert "move offsets.log" in str(info.value)
    # the file is left alone, and the lock is released
    assert path.read_bytes() == bytes(damaged)
    # a file shorter than its synced length
    path.write_bytes(original[:-10])
    with pytest.raises(CorruptLogError, match="synced"):
        OffsetStore(tmp_path / "o").open()
    # a damaged header
    path.write_bytes(b"X" + original[1:])
    with pytest.raises(CorruptLogError, match="header"):
        OffsetStore(tmp_path / "o").open()
    path.write_bytes(original[:10])
    with pytest.raises(CorruptLogError, match="header"):
        OffsetStore(tmp_path / "o").open()
    path.write_bytes(original)
    s = open_offsets(tmp_path / "o")
    assert len(s.fetch("g")) == 20
    s.close()


def test_crc_catches_damage_that_still_parses(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    s.commit("g", [("t", 0, 123456, -1, None)], 1)
    s.commit("g", [("t", 1, 5, -1, None)], 2)
    s.close()
    path = tmp_path / "o" / LOG_NAME
    data = path.read_bytes()
    assert data.count(b"123456") == 1
    path.write_bytes(data.replace(b"123456", b"923456"))  # still valid JSON, still a valid record
    with pytest.raises(CorruptLogError, match="CRC"):
        OffsetStore(tmp_path / "o").open()


def test_checkpoint_after_compaction_vouches_for_the_new_file(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    for i in range(20):
        s.commit("g", [("t", i, i, -1, None)], i)
    s.compact()
    s.sync()
    s.commit("g", [("t", 0, 777777, -1, None)], 99)  # after the compacted part
    s.close()
    path = tmp_path / "o" / LOG_NAME
    data = path.read_bytes()
    path.write_bytes(data.replace(b"777777", b"777778"))
    with pytest.raises(CorruptLogError, match="CRC"):
        OffsetStore(tmp_path / "o").open()


def test_compacted_part_is_trusted_without_a_checkpoint(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    for i in range(20):
        s.commit("g", [("t", i, i, -1, None)], i)
    s.compact()
    s.sync()
    copy_dir = kill_copy(s, tmp_path / "copy")  # the checkpoint is of an older file generation
    s.close()
    path = copy_dir / LOG_NAME
    damaged = bytearray(path.read_bytes())
    damaged[HEADER_SIZE + 20] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptLogError):
        OffsetStore(copy_dir).open()


def test_missing_log_with_a_checkpoint_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = open_offsets(tmp_path / "o")
    s.commit("g", [("t", 0, 1, -1, None)], 1)
    s.close()
    (tmp_path / "o" / LOG_NAME).unlink()
    with caplog.at_level(logging.WARNING, logger="streams.storage.offsets"):
        s = open_offsets(tmp_path / "o")
    assert "missing" in caplog.text
    assert s.groups() == set()
    s.close()


def test_unreadable_checkpoint_is_ignored(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    s.commit("g", [("t", 0, 1, -1, None)], 1)
    s.close()
    (tmp_path / "o" / CHECKPOINT_NAME).write_text("{nope")
    s = open_offsets(tmp_path / "o")
    assert s.fetch("g") == {("t", 0): CommittedOffset(1, -1, None, 1)}
    s.close()


# -- tombstones --------------------------------------------------------------------------------


def test_tombstones_survive_reopen_and_crash(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    for g in ("a", "b", "c", "d"):
        s.commit(g, [("x", 0, 1, -1, None), ("x", 1, 2, -1, None), ("y", 0, 3, -1, None)], 1)
    s.delete_group("a")
    assert s.delete_offsets("b", [("x", 1), ("x", 1), ("nope", 0)]) >= 0
    s.delete_offsets("c", [("x", 0), ("x", 1), ("y", 0)])  # every offset: the group goes
    s.remove_topic("x")
    expected = {"b": {("y", 0): CommittedOffset(3, -1, None, 1)}, "d": {("y", 0): CommittedOffset(3, -1, None, 1)}}
    assert state(s) == expected
    assert s.entry_count == 2
    s.sync()
    crashed = open_offsets(kill_copy(s, tmp_path / "copy"))
    assert state(crashed) == expected
    crashed.close()
    s.close()
    s = open_offsets(tmp_path / "o")
    assert state(s) == expected
    assert s.groups() == {"b", "d"}
    s.close()


# -- expiry ------------------------------------------------------------------------------------

DAY = 86_400_000


def test_expiry_semantics(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    s.commit("active", [("t", 0, 1, -1, None)], 0)
    s.commit("idle-then-empty", [("t", 0, 1, -1, None)], 0)
    s.commit("empty-old", [("t", 0, 1, -1, None), ("t", 1, 1, -1, None)], 0)
    s.commit("simple", [("t", 0, 1, -1, None)], 0)
    s.commit("simple", [("t", 1, 2, -1, None)], 7 * DAY)
    s.commit("recent", [("t", 0, 1, -1, None)], 7 * DAY)
    since = {"active": None, "idle-then-empty": 7 * DAY, "empty-old": 1, "simple": 0, "recent": 0}
    now = 7 * DAY + 10
    seq_before = s.log_end_offset
    gone = s.expire(now, 7 * DAY, since.__getitem__)
    assert sorted(gone) == ["empty-old"]
    assert s.log_end_offset == seq_before + 1  # one record for the whole expiry
    assert s.groups() == {"active", "idle-then-empty", "simple", "recent"}
    assert s.fetch("simple") == {("t", 1): CommittedOffset(2, -1, None, 7 * DAY)}  # per partition
    # exactly at the boundary: expired (Kafka: now - base >= retention)
    assert s.expire(14 * DAY - 1, 7 * DAY, since.__getitem__) == []
    assert sorted(s.expire(14 * DAY, 7 * DAY, since.__getitem__)) == ["idle-then-empty", "recent", "simple"]
    assert s.expire(14 * DAY, 7 * DAY, since.__getitem__) == []
    assert s.groups() == {"active"}
    with pytest.raises(ValueError, match="retention"):
        s.expire(now, -1, since.__getitem__)
    expected = state(s)
    s.close()
    s = open_offsets(tmp_path / "o")
    assert state(s) == expected
    s.close()


# -- compaction --------------------------------------------------------------------------------


def test_compaction_triggers_and_bounds_the_file(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o", compact_min_bytes=20_000)
    for i in range(5_000):
        s.commit(f"g{i % 20}", [(f"t{i % 3}", i % 4, i, -1, "meta")], i)
        if i % 100 == 0:
            s.sync()
    assert s.compactions >= 3
    assert s.size_bytes < 80_000
    s.sync()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".lock", LOG_NAME]
    before = state(s)
    assert s.entry_count == sum(len(v) for v in before.values()) == 20 * 3
    s.close()
    s = open_offsets(tmp_path / "o", compact_min_bytes=20_000)
    assert state(s) == before
    s.close()
    assert not list((tmp_path / "o").glob("*.tmp"))


def test_compaction_is_crash_safe_at_every_step(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    for i in range(300):
        s.commit(f"g{i % 7}", [(f"t{i % 3}", i % 5, i, -1, None)], i)
    s.delete_group("g3")
    s.sync()
    synced = state(s)
    synced_bytes = s.size_bytes
    s.commit("g0", [("t0", 0, 999, -1, None)], 999)  # unsynced, also in the compacted file
    latest = state(s)

    # step 1: the compacted temp file is written but not yet renamed (the sync has not run)
    assert s.compact()
    assert not s.compact()  # one compaction at a time: this one waits for its sync
    step1 = kill_copy(s, tmp_path / "step1")
    assert len(list(step1.glob("*.tmp"))) == 1
    s1 = open_offsets(step1)
    assert state(s1) == latest  # the old file has it all (page cache); the temp file is removed
    assert not list(step1.glob("*.tmp"))
    s1.close()

    # step 1 under power loss: the old file loses whatever was not synced
    power = kill_copy(s, tmp_path / "power")
    with (power / LOG_NAME).open("r+b") as f:
        f.truncate(synced_bytes)
    p = open_offsets(power)
    assert state(p) == synced
    p.close()

    # appends after the switch go to the new file; step 2: the sync renames it over the old one
    s.commit("g1", [("t1", 1, 1234, -1, None)], 1234)
    latest = state(s)
    ticket = s.begin_sync()
    assert ticket is not None
    ticket.run()
    step2 = kill_copy(s, tmp_path / "step2")  # renamed, finish_sync not yet called
    s.finish_sync(ticket)
    assert not list(step2.glob("*.tmp"))
    s2 = open_offsets(step2)
    assert state(s2) == latest
    s2.close()

    # the new file's unsynced tail is torn like any other
    s.commit("g2", [("t2", 2, 5, -1, None)], 5)
    torn = kill_copy(s, tmp_path / "torn")
    with (torn / LOG_NAME).open("r+b") as f:
        f.truncate(s.size_bytes - 3)
    t = open_offsets(torn)
    assert state(t) == latest
    t.close()

    s.close()
    s = open_offsets(tmp_path / "o")
    assert state(s) == {**latest, "g2": {**latest["g2"], ("t2", 2): CommittedOffset(5, -1, None, 5)}}
    s.close()


def test_close_finishes_a_pending_compaction(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o")
    for i in range(50):
        s.commit("g", [("t", i % 5, i, -1, None)], i)
    assert s.compact()
    before = state(s)
    s.close()
    assert not list((tmp_path / "o").glob("*.tmp"))
    s = open_offsets(tmp_path / "o")
    assert state(s) == before
    assert s.size_bytes < 1_000  # the compacted file is the one in place
    s.close()


def test_open_compacts_an_oversized_file(tmp_path: Path) -> None:
    s = open_offsets(tmp_path / "o", compact_min_bytes=1 << 30)
    for i in range(2_000):
        s.commit("g", [("t", 0, i, -1, None)], i)
    big = s.size_bytes
    s.close()
    s = open_offsets(tmp_path / "o", compact_min_bytes=4_096)
    assert s.compactions == 1 and s.size_bytes < big // 10
    assert s.high_watermark == s.log_end_offset  # the compaction was synced before open returned
    assert s.fetch("g") == {("t", 0): CommittedOffset(1999, -1, None, 1999)}
    s.close()


# -- property test -----------------------------------------------------------------------------

GROUPS = ["a", "b", "ü", ""]
TOPICS = ["x", "y"]
entry_st = st.tuples(
    st.sampled_from(TOPICS),
    st.integers(0, 2),
    st.integers(-1, 1 << 40),
    st.integers(-1, 5),
    st.one_of(st.none(), st.text(max_size=8)),
)
ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.sampled_from(GROUPS), st.lists(entry_st, max_size=4)),
        st.tuples(st.just("delete_group"), st.sampled_from(GROUPS)),
        st.tuples(
            st.just("delete_offsets"),
            st.sampled_from(GROUPS),
            st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 2)), max_size=3),
        ),
        st.tuples(st.just("remove_topic"), st.sampled_from(TOPICS)),
        st.tuples(
            st.just("expire"),
            st.integers(0, 30),
            st.dictionaries(st.sampled_from(GROUPS), st.one_of(st.none(), st.integers(0, 40))),
        ),
        st.tuples(st.just("sync")),
        st.tuples(st.just("compact")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("crash"), st.floats(0, 1), st.binary(max_size=40)),
    ),
    max_size=40,
)


class Model:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        self.store = self._open(root / "d0")
        self.state: State = {}
        self.clock = 0
        self.snapshots: list[State] = [{}]  # state after each record since the last sync point
        self.synced_bytes = self.store.size_bytes

    def _open(self, path: Path) -> OffsetStore:
        return open_offsets(path, compact_min_bytes=600, compact_factor=2.0)

    def mutated(self, end_before: int) -> None:
        if self.store.log_end_offset != end_before:
            assert self.store.log_end_offset == end_before + 1  # one record per call
            self.snapshots.append(copy.deepcopy(self.state))
        self.check()

    def check(self) -> None:
        assert state(self.store) == self.state
        assert self.store.entry_count == sum(len(v) for v in self.state.values())

    def commit(self, group: str, entries) -> None:
        self.clock += 1
        end = self.store.log_end_offset
        self.store.commit(group, entries, self.clock)
        for topic, partition, offset, epoch, metadata in entries:
            self.state.setdefault(group, {})[(topic, partition)] = CommittedOffset(offset, epoch, metadata, self.clock)
        self.mutated(end)

    def delete_group(self, group: str) -> None:
        end = self.store.log_end_offset
        self.store.delete_group(group)
        self.state.pop(group, None)
        self.mutated(end)

    def delete_offsets(self, group: str, keys) -> None:
        end = self.store.log_end_offset
        self.store.delete_offsets(group, keys)
        for key in keys:
            self.state.get(group, {}).pop(key, None)
        if group in self.state and not self.state[group]:
            del self.state[group]
        self.mutated(end)

    def remove_topic(self, topic: str) -> None:
        end = self.store.log_end_offset
        self.store.remove_topic(topic)
        for group in list(self.state):
            self.state[group] = {k: v for k, v in self.state[group].items() if k[0] != topic}
            if not self.state[group]:
                del self.state[group]
        self.mutated(end)

    def expire(self, retention: int, since: dict[str, int | None]) -> None:
        end = self.store.log_end_offset
        now = self.clock
        gone = self.store.expire(now, retention, since.get)
        expected_gone = []
        for group in list(self.state):
            base = since.get(group)
            if base is None:
                continue
            kept = {k: v for k, v in self.state[group].items() if now - max(base, v.commit_timestamp_ms) < retention}
            if kept:
                self.state[group] = kept
            else:
                del self.state[group]
                expected_gone.append(group)
        assert sorted(gone) == sorted(expected_gone)
        self.mutated(end)

    def sync(self) -> None:
        self.store.sync()
        self.synced()

    def synced(self) -> None:
        assert self.store.high_watermark == self.store.log_end_offset
        self.snapshots = [copy.deepcopy(self.state)]
        self.synced_bytes = self.store.size_bytes

    def compact(self) -> None:
        self.store.compact()
        self.check()

    def reopen(self) -> None:
        self.store.close()
        self.store = self._open(self.store.directory)
        self.check()
        self.synced()

    def crash(self, where: float, junk: bytes) -> None:
        self.n += 1
        dest = kill_copy(self.store, self.root / f"d{self.n}")
        self.store.close()
        path = dest / LOG_NAME
        total = path.stat().st_size
        cut = self.synced_bytes + int(where * (total - self.synced_bytes))
        with path.open("r+b") as f:
            f.truncate(cut)
            f.seek(0, 2)
            f.write(junk)
        self.store = self._open(dest)
        got = state(self.store)
        assert got in self.snapshots, "a power loss produced a state that never existed"
        self.state = got
        self.check()
        self.synced()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops_st)
def test_store_matches_a_dict_model(ops) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = Model(Path(tmp))
        try:
            for op in ops:
                getattr(model, op[0])(*op[1:])
            model.reopen()
        finally:
            model.store.close()
