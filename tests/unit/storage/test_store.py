"""Store: topics, configs, partitions, producer ids, the data-dir lock, metadata crash safety."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from streams.errors import StorageError
from streams.storage import (
    DataDirLockedError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    Store,
    StoreConfig,
    TopicConfig,
    TopicExistsError,
    UnknownTopicError,
)
from streams.storage.files import atomic_write

from .helpers import append, open_store, read_all


def test_create_describe_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path / "new" / "dir")  # created on demand
    meta = store.create_topic("orders.v1", 3, {"retention.ms": "60000", "cleanup.policy": "delete"})
    assert isinstance(meta.topic_id, uuid.UUID)
    assert meta.partitions == 3
    assert meta.config.retention_ms == 60000
    assert meta.config.segment_bytes == TopicConfig().segment_bytes
    assert meta.configs["retention.ms"] == "60000"
    assert meta.configs["max.message.bytes"] == "1048588"
    assert dict(meta.overrides) == {"retention.ms": "60000", "cleanup.policy": "delete"}
    append(store.log("orders.v1", 2), 2)
    store.close()
    store = open_store(tmp_path / "new" / "dir")
    try:
        again = store.topics()["orders.v1"]
        assert again == meta
        assert store.log("orders.v1", 2).log_end_offset == 2
        assert len(list(store.logs())) == 3
    finally:
        store.close()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "x" * 250, "ünïcode", "a:b"])
def test_invalid_topic_names(store: Store, name: str) -> None:
    with pytest.raises(InvalidTopicError, match="a-z"):
        store.create_topic(name, 1)


def test_valid_edge_names_and_collisions(store: Store) -> None:
    long = store.create_topic("x" * 249, 1)
    append(store.log(long.name, 0), 1)
    store.create_partitions(long.name, 3)
    store.delete_topic(long.name)
    store.create_topic("a.b", 1)
    store.create_topic("-_.", 1)
    with pytest.raises(TopicExistsError):
        store.create_topic("a.b", 1)
    with pytest.raises(InvalidTopicError, match="collides"):
        store.create_topic("a_b", 1)


@pytest.mark.parametrize(
    ("configs", "match"),
    [
        ({"cleanup.policy": "compact"}, "compaction is not implemented"),
        ({"message.timestamp.type": "LogAppendTime"}, "CreateTime"),
        ({"retention.ms": "-2"}, "out of range"),
        ({"segment.bytes": "abc"}, "not an integer"),
        ({"segment.bytes": "13"}, "out of range"),
        ({"compression.type": "zstd"}, "unknown topic config"),
    ],
)
def test_invalid_configs(store: Store, configs: dict[str, str], match: str) -> None:
    with pytest.raises(InvalidConfigError, match=match):
        store.create_topic("t", 1, configs)
    assert "t" not in store.topics()
    assert not (store.data_dir / "t-0").exists()


def test_partition_counts(store: Store) -> None:
    with pytest.raises(InvalidPartitionsError):
        store.create_topic("t", 0)
    assert store.create_topic("d").partitions == 1  # the store default
    store.create_topic("t", 2)
    with pytest.raises(InvalidPartitionsError, match="larger"):
        store.create_partitions("t", 2)
    append(store.log("t", 0), 4)
    assert store.create_partitions("t", 5).partitions == 5
    assert store.log("t", 4).log_end_offset == 0
    assert store.log("t", 0).log_end_offset == 4
    with pytest.raises(UnknownTopicError, match=r"partitions 0\.\.4"):
        store.log("t", 5)
    with pytest.raises(UnknownTopicError):
        store.log("nope", 0)


def test_alter_configs(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.create_topic("t", 2, {"retention.ms": "1000"})
    meta = store.alter_topic_configs("t", {"segment.bytes": "5000"})
    assert meta.config.retention_ms == 1000 and meta.config.segment_bytes == 5000
    assert store.log("t", 1).config.segment_bytes == 5000
    meta = store.alter_topic_configs("t", {"retention.ms": None})
    assert meta.config.retention_ms == TopicConfig().retention_ms
    meta = store.alter_topic_configs("t", {"max.message.bytes": "100"}, incremental=False)
    assert dict(meta.overrides) == {"max.message.bytes": "100"}
    with pytest.raises(InvalidConfigError):
        store.alter_topic_configs("t", {"cleanup.policy": "compact"})
    assert store.topics()["t"] == meta
    store.close()
    store = open_store(tmp_path)
    try:
        assert dict(store.topics()["t"].overrides) == {"max.message.bytes": "100"}
    finally:
        store.close()


def test_defaults_apply_to_topics_without_overrides(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.create_topic("t", 1)
    store.close()
    store = open_store(tmp_path, topic_defaults=TopicConfig(retention_ms=5))
    try:
        assert store.topics()["t"].config.retention_ms == 5
    finally:
        store.close()


def test_delete_and_recreate_topic(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    old = store.create_topic("t", 2)
    plog = store.log("t", 0)
    append(plog, 5)
    plog.sync()
    store.write_checkpoint()
    store.delete_topic("t")
    assert "t" not in store.topics()
    assert not (tmp_path / "t-0").exists()
    with pytest.raises(UnknownTopicError):
        store.delete_topic("t")
    new = store.create_topic("t", 1)
    assert new.topic_id != old.topic_id
    assert store.log("t", 0).log_end_offset == 0  # no inherited data or recovery point
    store.close()
    store = open_store(tmp_path)
    try:
        assert store.log("t", 0).log_end_offset == 0
        assert store.topics()["t"].topic_id == new.topic_id
    finally:
        store.close()


def test_crash_during_topic_delete_or_create(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.create_topic("gone", 2)
    store.create_topic("kept", 2)
    append(store.log("kept", 0), 3)
    store.close()
    # delete_topic crashed after removing the metadata, before removing the directories:
    (tmp_path / "meta" / "topics" / "gone.json").unlink()
    # ... and another one crashed between rename and rmtree:
    (tmp_path / "kept-1").rename(tmp_path / "kept-1.abcd-delete")
    # create_topic crashed after the metadata, before the directories: "kept-1" is missing.
    (tmp_path / "lost+found").mkdir()  # not ours: must be left alone
    store = open_store(tmp_path)
    try:
        assert set(store.topics()) == {"kept"}
        assert not (tmp_path / "gone-0").exists()
        assert not (tmp_path / "kept-1.abcd-delete").exists()
        assert (tmp_path / "kept-1").is_dir()
        assert (tmp_path / "lost+found").is_dir()
        assert store.log("kept", 0).log_end_offset == 3
    finally:
        store.close()


def test_unreadable_metadata_is_reported(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.create_topic("t", 1)
    store.close()
    (tmp_path / "meta" / "topics" / "t.json").write_text("{not json")
    with pytest.raises(StorageError, match=r"t\.json is unreadable"):
        open_store(tmp_path)
    open_store(tmp_path / "other").close()  # and the failed open released its lock
    (tmp_path / "meta" / "topics" / "t.json").unlink()
    open_store(tmp_path).close()


def test_data_dir_lock(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with pytest.raises(DataDirLockedError, match=str(tmp_path)):
        open_store(tmp_path)
    store.close()
    open_store(tmp_path).close()


def test_producer_ids_unique_across_unclean_restarts(tmp_path: Path) -> None:
    seen: set[int] = set()
    for _ in range(3):
        store = open_store(tmp_path, producer_id_block_size=10)
        ids = [store.allocate_producer_id() for _ in range(25)]
        assert len(set(ids)) == 25
        assert not seen & set(ids)
        seen |= set(ids)
        store._lock.release()  # a crash: no close(), the kernel drops the lock
        for plog in store.logs():
            plog.close()
    doc = json.loads((tmp_path / "meta" / "producer-ids.json").read_text())
    assert doc["next_block_start"] > max(seen)


def test_checkpoint_contents(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    meta = store.create_topic("t", 1)
    plog = store.log("t", 0)
    append(plog, 4)
    store.write_checkpoint()
    path = tmp_path / "meta" / "recovery-checkpoint.json"
    entry = json.loads(path.read_text())["partitions"][0]
    assert entry == {
        "topic": "t",
        "topic_id": str(meta.topic_id),
        "partition": 0,
        "recovery_point": 0,  # nothing fsynced yet
        "log_start_offset": 0,
    }
    plog.sync()
    ticket = store.prepare_checkpoint()
    assert ticket is not None
    assert store.prepare_checkpoint() is None  # unchanged
    stale = ticket
    plog.delete_records(2)  # writes a newer checkpoint immediately
    stale.run()  # an older ticket finishing late must not roll it back
    entry = json.loads(path.read_text())["partitions"][0]
    assert entry["recovery_point"] == 4 and entry["log_start_offset"] == 2
    store.close()


def test_failed_checkpoint_write_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint that could not be written (a full disk) is written by the next attempt even
    though nothing changed in between."""
    store = open_store(tmp_path)
    store.create_topic("t", 1)
    plog = store.log("t", 0)
    append(plog, 3)
    plog.sync()
    ticket = store.prepare_checkpoint()
    assert ticket is not None

    def no_space(path: object, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("streams.storage.store.atomic_write", no_space)
    with pytest.raises(OSError):
        ticket.run()
    monkeypatch.undo()
    retry = store.prepare_checkpoint()
    assert retry is not None
    retry.run()
    entry = json.loads((tmp_path / "meta" / "recovery-checkpoint.json").read_text())["partitions"][0]
    assert entry["recovery_point"] == 3
    store.close()


def test_store_misuse(tmp_path: Path) -> None:
    store = Store(StoreConfig(tmp_path))
    with pytest.raises(StorageError, match="open"):
        store.create_topic("t", 1)
    with pytest.raises(InvalidConfigError):
        StoreConfig(tmp_path, default_partitions=0)


def test_atomic_write_replaces_and_cleans(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_read_after_reopen_with_context_manager(tmp_path: Path) -> None:
    with Store(StoreConfig(tmp_path)) as store:
        store.create_topic("t", 1)
        append(store.log("t", 0), 3)
    with Store(StoreConfig(tmp_path)) as store:
        plog = store.log("t", 0)
        assert plog.high_watermark == 3 and len(read_all(plog)) > 0
