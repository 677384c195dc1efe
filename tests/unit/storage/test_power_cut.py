"""The write ledger and the power-cut model (tests/chaos/powercut.py) against the real Store.

A "crash" here closes the store's files without syncing (what SIGKILL does: the page cache
keeps every write); a "power cut" then applies tests/chaos/powercut.py to the data dir.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import _faults
from streams.storage import OffsetStore, Store
from tests.chaos.powercut import power_cut, read_ledger

from .helpers import append, open_store, read_all

TOPIC = "t"


class _Worst(random.Random):
    """Every choice at its first option: forget every unsynced directory entry, keep writes."""

    def random(self) -> float:
        return 0.0


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "ledger.jsonl"
    _faults.arm_ledger(path, tmp_path / "data")
    yield path
    _faults.arm_ledger(None, tmp_path)


def _crash(store: Store) -> None:
    """Like SIGKILL: close every file without a sync or a checkpoint; the page cache keeps all."""
    for plog in store.logs():
        plog.close()
    store._lock.release()


def test_ledger_knows_what_each_sync_covered(ledger: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path / "data")
    store.create_topic(TOPIC, 1)
    plog = store.log(TOPIC, 0)
    append(plog, 2)
    plog.sync()
    append(plog, 3)  # not synced
    _crash(store)
    state = read_ledger(ledger)
    seg = (tmp_path / "data" / f"{TOPIC}-0" / f"{0:020d}.log").resolve()
    pending = [w for writes in state.pending.values() for w in writes if w.path == str(seg)]
    assert [(w.off, w.size_before) for w in pending] == [(pending[0].size_before, pending[0].size_before)]
    assert pending[0].off > 0
    assert f"{TOPIC}-0" in state.durable_dirs[str((tmp_path / "data").resolve())]


def test_power_cut_takes_back_exactly_the_unsynced_tail(ledger: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = open_store(data)
    store.create_topic(TOPIC, 1)
    plog = store.log(TOPIC, 0)
    append(plog, 2)
    plog.sync()
    synced = read_all(plog)
    append(plog, 3)
    _crash(store)
    report = power_cut(data, ledger, random.Random(1))
    store = open_store(data)
    try:
        plog = store.log(TOPIC, 0)
        assert plog.offline_reason is None
        assert read_all(plog).startswith(synced)
        assert plog.log_end_offset in (2, 5), report.decisions
    finally:
        store.close()


def test_segment_recovered_after_a_crash_survives_a_later_power_cut(ledger: Path, tmp_path: Path) -> None:
    """Recovery must make the directory entries of what it serves durable, not only the data.

    A roll creates a segment whose directory entry is fsynced by the next sync; a kill -9
    before that sync leaves an entry only the page cache knows. The next incarnation recovers
    the segment, fdatasyncs it and serves it (the high watermark is the log end), so consumers
    see those offsets. Without a partition-directory fsync at open, a power cut then forgets
    the segment: the offsets consumers saw are gone (and the partition goes offline, since the
    checkpoint already covers them).
    """
    data = tmp_path / "data"
    store = open_store(data)
    store.create_topic(TOPIC, 1, {"segment.bytes": "2000"})
    plog = store.log(TOPIC, 0)
    for _ in range(5):
        append(plog, 2, value_size=300)
    plog.sync()
    for _ in range(10):  # rolls into new segments, unsynced
        append(plog, 2, value_size=300)
    assert plog.segment_count > 2
    _crash(store)

    store = open_store(data)  # recovery after kill -9: serves everything the page cache had
    visible = read_all(store.log(TOPIC, 0))
    end = store.log(TOPIC, 0).log_end_offset
    assert end == 30
    store.close()

    report = power_cut(data, ledger, _Worst())
    store = open_store(data)
    try:
        plog = store.log(TOPIC, 0)
        assert plog.offline_reason is None, report.decisions
        assert plog.log_end_offset == end, report.decisions
        assert read_all(plog) == visible
    finally:
        store.close()


class _DropAll(random.Random):
    """Every choice at its last option: keep every directory entry, take back every unsynced write."""

    def random(self) -> float:
        return 0.999


def _crash_offsets(store: OffsetStore) -> None:
    """Like SIGKILL for an OffsetStore: close its files without a sync or a checkpoint."""
    os.close(store._fd)
    store._fd = -1
    store._open = False
    store._release_lock()


def test_committed_offset_recovered_after_a_crash_survives_a_later_power_cut(ledger: Path, tmp_path: Path) -> None:
    """An offset commit replayed after a kill -9 is served by OffsetFetch, so it must be synced first."""
    directory = tmp_path / "data" / "meta" / "offsets"
    store = OffsetStore(directory)
    store.open()
    store.commit("g", [("t", 0, 5, -1, None)], 1_000)
    store.sync()
    store.commit("g", [("t", 0, 9, -1, None)], 1_000)  # never synced by this incarnation
    _crash_offsets(store)

    store = OffsetStore(directory)
    store.open()
    seen = store.fetch_partition("g", "t", 0)
    assert seen is not None and seen.offset == 9
    _crash_offsets(store)

    report = power_cut(tmp_path / "data", ledger, _DropAll())
    store = OffsetStore(directory)
    store.open()
    try:
        after = store.fetch_partition("g", "t", 0)
        assert after is not None and after.offset == 9, report.decisions
    finally:
        store.close()
