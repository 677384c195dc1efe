"""Store: every topic and partition log under one data directory.

Layout of data directory ``DIR``::

    DIR/meta/.lock                      flock held while a Store has the directory open
    DIR/meta/topics/<topic>.json        {"version": 1, "name", "topic_id", "partitions", "configs"}
    DIR/meta/recovery-checkpoint.json   see recovery.py
    DIR/meta/producer-ids.json          {"version": 1, "next_block_start": N}
    DIR/<topic>-<partition>/            segments, see segment.py

Topic metadata is the source of truth, so every multi-step change is ordered to be safe at any
crash point: create writes the metadata (atomically) before making partition directories (open
creates missing ones); delete removes the metadata before the directories (open removes
directories no metadata claims, and leftover ``*-delete`` directories).

Producer ids are handed out from blocks whose end is persisted *before* any id of the block is
used, so an InitProducerId costs no fsync (one per block) and no id is reused after a crash.

Threading: like PartitionLog, a Store is used from one thread, except the ``run()`` of the
tickets it hands out (:class:`SyncTicket`, :class:`CheckpointTicket`).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import threading
import time
import types
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streams.errors import FatalStorageError, StorageError

from .config import StoreConfig, TopicConfig
from .errors import (
    InvalidPartitionsError,
    InvalidTopicError,
    TopicExistsError,
    UnknownTopicError,
)
from .files import DataDirLock, atomic_write, fsync_dir, remove_temp_files
from .log import PartitionLog
from .recovery import PartitionCheckpoint, encode_checkpoint, read_checkpoint

__all__ = ["CheckpointTicket", "Store", "TopicMeta", "validate_topic_name"]

log = logging.getLogger(__name__)

_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_DELETE_SUFFIX = "-delete"
_PROGRESS_EVERY_S = 5.0


def validate_topic_name(name: str) -> None:
    """Kafka's rules: 1-249 characters of [a-zA-Z0-9._-], not "." or ".."."""
    if name in (".", "..") or not _TOPIC_NAME.fullmatch(name):
        raise InvalidTopicError(
            f"invalid topic name {name!r}: use 1 to 249 characters from a-z, A-Z, 0-9, '.', '_' and '-' "
            "(and not '.' or '..')",
        )


@dataclass(frozen=True, slots=True)
class TopicMeta:
    """A topic as stored: identity, partition count and configuration."""

    name: str
    topic_id: uuid.UUID
    partitions: int
    config: TopicConfig
    overrides: Mapping[str, str] = field(default_factory=dict)
    """Only the explicitly set configs (DescribeConfigs reports these as topic-level)."""

    @property
    def configs(self) -> dict[str, str]:
        """Every effective config under its Kafka name, defaults included."""
        return self.config.to_kafka()

    def to_json(self) -> bytes:
        doc = {
            "version": 1,
            "name": self.name,
            "topic_id": str(self.topic_id),
            "partitions": self.partitions,
            "configs": dict(self.overrides),
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


class CheckpointTicket:
    """A recovery checkpoint captured on the loop thread; ``run()`` may write it from a worker.

    Tickets are numbered; a ticket older than one already written is dropped, so a slow worker
    can never put an older log start offset back (which would resurrect deleted records).
    """

    def __init__(self, store: Store, data: bytes, seq: int) -> None:
        self._store = store
        self.data = data
        self.seq = seq

    def run(self) -> None:
        self._store._commit_checkpoint(self)


class Store:
    """All topics and logs of one data directory; see the module docstring for the layout."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.meta_dir = self.data_dir / "meta"
        self.topics_dir = self.meta_dir / "topics"
        self.checkpoint_path = self.meta_dir / "recovery-checkpoint.json"
        self.producer_ids_path = self.meta_dir / "producer-ids.json"
        self._lock = DataDirLock(self.meta_dir / ".lock", self.data_dir)
        self._topics: dict[str, TopicMeta] = {}
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._open = False
        self._next_pid = 0
        self._pid_block_end = 0
        self._pid_persisted = 0
        self._ckpt_lock = threading.Lock()
        self._ckpt_seq = 0
        self._ckpt_written_seq = 0
        self._ckpt_last: bytes | None = None
        self._loaded_checkpoint: dict[tuple[str, int], PartitionCheckpoint] = {}

    # -- open / close ------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, load metadata, recover every partition, write a checkpoint."""
        if self._open:
            raise StorageError(f"store {self.data_dir} is already open")
        self.topics_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._open_locked()
        except BaseException:
            for plog in self._logs.values():
                plog.close()
            self._logs.clear()
            self._topics.clear()
            self._lock.release()
            raise
        self._open = True

    def _open_locked(self) -> None:
        started = time.monotonic()
        remove_temp_files(self.meta_dir)
        remove_temp_files(self.topics_dir)
        for path in sorted(self.topics_dir.glob("*.json")):
            meta = self._read_meta(path)
            self._topics[meta.name] = meta
        self._loaded_checkpoint = read_checkpoint(self.checkpoint_path)
        self._load_producer_ids()
        self._clean_data_dir()
        total = sum(m.partitions for m in self._topics.values())
        log.info("opening store %s: %d topic(s), %d partition(s)", self.data_dir, len(self._topics), total)
        done = 0
        last_report = time.monotonic()
        for meta in self._topics.values():
            for p in range(meta.partitions):
                self._open_log(meta, p)
                done += 1
                if time.monotonic() - last_report > _PROGRESS_EVERY_S:
                    log.info("recovery progress: %d of %d partitions open", done, total)
                    last_report = time.monotonic()
        self._write_checkpoint_now()
        offline = [plog.name for plog in self._logs.values() if plog.offline_reason is not None]
        if offline:
            log.error("store %s: %d partition(s) offline: %s", self.data_dir, len(offline), ", ".join(offline))
        log.info("store %s ready in %.1f s", self.data_dir, time.monotonic() - started)

    def _read_meta(self, path: Path) -> TopicMeta:
        try:
            doc = json.loads(path.read_bytes())
            name = str(doc["name"])
            validate_topic_name(name)
            if f"{name}.json" != path.name:
                raise ValueError(f"file name does not match topic name {name!r}")
            overrides = {str(k): str(v) for k, v in doc["configs"].items()}
            return TopicMeta(
                name,
                uuid.UUID(doc["topic_id"]),
                int(doc["partitions"]),
                self.config.topic_defaults.with_overrides(overrides),
                types.MappingProxyType(overrides),
            )
        except (ValueError, KeyError, TypeError, AttributeError, StorageError) as exc:
            raise StorageError(
                f"topic metadata {path} is unreadable ({exc}); restore it from a backup, or delete it "
                "and the topic's partition directories to drop the topic",
            ) from exc

    def _clean_data_dir(self) -> None:
        for entry in sorted(self.data_dir.iterdir()):
            if entry == self.meta_dir or not entry.is_dir():
                continue
            if entry.name.endswith(_DELETE_SUFFIX):
                log.info("removing %s left over by a topic deletion", entry)
                shutil.rmtree(entry, ignore_errors=True)
                continue
            topic, sep, p = entry.name.rpartition("-")
            if not sep or not p.isdigit() or f"{topic}-{int(p)}" != entry.name:
                log.warning("ignoring directory %s: not a partition directory", entry)
                continue
            meta = self._topics.get(topic)
            if meta is None or int(p) >= meta.partitions:
                log.info("removing partition directory %s: no topic metadata claims it", entry)
                shutil.rmtree(entry, ignore_errors=True)
        fsync_dir(self.data_dir)

    def _partition_dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def _open_log(self, meta: TopicMeta, partition: int) -> PartitionLog:
        path = self._partition_dir(meta.name, partition)
        checkpoint = self._loaded_checkpoint.get((str(meta.topic_id), partition))
        if not path.is_dir():
            if checkpoint is not None and checkpoint.recovery_point > 0:
                log.warning("partition directory %s is missing; it restarts empty", path)
            path.mkdir()
            fsync_dir(self.data_dir)
        cp = checkpoint or PartitionCheckpoint(0, 0)
        try:
            plog = PartitionLog(
                meta.name,
                partition,
                path,
                meta.config,
                recovery_point=cp.recovery_point,
                log_start_offset=cp.log_start_offset,
                index_interval_bytes=self.config.index_interval_bytes,
                max_producers=self.config.max_producers_per_partition,
                on_log_start_change=self.write_checkpoint,
            )
        except OSError as exc:
            raise StorageError(f"cannot open partition directory {path}: {exc}") from exc
        self._logs[(meta.name, partition)] = plog
        return plog

    def close(self) -> None:
        """Sync every log, write the checkpoint, close the files and release the directory."""
        if not self._open:
            return
        failure: BaseException | None = None
        try:
            for plog in self._logs.values():
                try:
                    plog.sync()
                except (FatalStorageError, RuntimeError) as exc:
                    log.error("final sync of %s failed: %s", plog.name, exc)
                    failure = failure or exc
            self._write_checkpoint_now()
        finally:
            for plog in self._logs.values():
                plog.close()
            self._logs.clear()
            self._topics.clear()
            self._open = False
            self._lock.release()
        if failure is not None:
            raise failure

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._open:
            raise StorageError(f"store {self.data_dir} is not open; call open() first")

    # -- topics ------------------------------------------------------------------------------

    def topics(self) -> Mapping[str, TopicMeta]:
        """Read-only view of every topic by name (no copy: cheap enough for every request)."""
        return types.MappingProxyType(self._topics)

    def topic(self, name: str) -> TopicMeta:
        meta = self._topics.get(name)
        if meta is None:
            raise UnknownTopicError(f"topic {name!r} does not exist; create it first")
        return meta

    def _write_meta(self, meta: TopicMeta) -> None:
        atomic_write(self.topics_dir / f"{meta.name}.json", meta.to_json())

    def create_topic(
        self, name: str, partitions: int | None = None, configs: Mapping[str, str] | None = None
    ) -> TopicMeta:
        """Create a topic (``partitions`` defaults to the store's default_partitions)."""
        self._check_open()
        validate_topic_name(name)
        if name in self._topics:
            raise TopicExistsError(f"topic {name!r} already exists")
        collision = name.replace(".", "_")
        for other in self._topics:
            if other.replace(".", "_") == collision:
                raise InvalidTopicError(
                    f"topic {name!r} collides with existing topic {other!r} ('.' and '_' are "
                    "interchangeable in metric names); pick another name",
                )
        count = self.config.default_partitions if partitions is None else partitions
        if count < 1:
            raise InvalidPartitionsError(f"topic {name!r} needs at least 1 partition, got {count}")
        overrides = {k: str(v) for k, v in (configs or {}).items()}
        config = self.config.topic_defaults.with_overrides(overrides)
        meta = TopicMeta(name, uuid.uuid4(), count, config, types.MappingProxyType(overrides))
        self._write_meta(meta)
        self._topics[name] = meta
        self._add_partitions(meta, 0)
        log.info("created topic %s with %d partition(s)", name, count)
        return meta

    def _add_partitions(self, meta: TopicMeta, first: int) -> None:
        for p in range(first, meta.partitions):
            path = self._partition_dir(meta.name, p)
            if path.exists():
                log.warning("removing stale directory %s before creating the partition", path)
                self._remove_dir(path)
            path.mkdir()
        fsync_dir(self.data_dir)
        for p in range(first, meta.partitions):
            self._open_log(meta, p)

    def _remove_dir(self, path: Path) -> None:
        # Like Kafka, shorten the name so the suffix fits the 255-byte file name limit.
        doomed = path.with_name(f"{path.name[:200]}.{secrets.token_hex(4)}{_DELETE_SUFFIX}")
        path.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def delete_topic(self, name: str) -> None:
        """Delete a topic and all its data."""
        self._check_open()
        meta = self.topic(name)
        (self.topics_dir / f"{name}.json").unlink()
        fsync_dir(self.topics_dir)
        del self._topics[name]
        for p in range(meta.partitions):
            plog = self._logs.pop((name, p), None)
            if plog is not None:
                plog.close()
            path = self._partition_dir(name, p)
            try:
                self._remove_dir(path)
            except OSError as exc:
                log.warning("could not remove %s (%s); it is removed at the next open", path, exc)
        log.info("deleted topic %s", name)

    def alter_topic_configs(
        self, name: str, configs: Mapping[str, str | None], *, incremental: bool = True
    ) -> TopicMeta:
        """Change a topic's config overrides.

        ``incremental=True`` (IncrementalAlterConfigs): set the given keys, a None value removes
        the override. ``incremental=False`` (AlterConfigs): the given keys replace all overrides.
        """
        self._check_open()
        meta = self.topic(name)
        overrides = dict(meta.overrides) if incremental else {}
        for key, value in configs.items():
            if value is None:
                overrides.pop(key, None)
            else:
                overrides[key] = str(value)
        config = self.config.topic_defaults.with_overrides(overrides)
        new = TopicMeta(name, meta.topic_id, meta.partitions, config, types.MappingProxyType(overrides))
        self._write_meta(new)
        self._topics[name] = new
        for p in range(new.partitions):
            self._logs[(name, p)].config = config
        return new

    def create_partitions(self, name: str, new_total: int) -> TopicMeta:
        """Grow a topic to ``new_total`` partitions (Kafka never shrinks a topic)."""
        self._check_open()
        meta = self.topic(name)
        if new_total <= meta.partitions:
            raise InvalidPartitionsError(
                f"topic {name!r} has {meta.partitions} partition(s); the new total must be larger "
                f"than that, got {new_total}",
            )
        new = TopicMeta(name, meta.topic_id, new_total, meta.config, meta.overrides)
        self._write_meta(new)
        self._topics[name] = new
        self._add_partitions(new, meta.partitions)
        log.info("topic %s now has %d partitions", name, new_total)
        return new

    # -- logs --------------------------------------------------------------------------------

    def log(self, topic: str, partition: int) -> PartitionLog:
        plog = self._logs.get((topic, partition))
        if plog is None:
            meta = self.topic(topic)
            raise UnknownTopicError(
                f"topic {topic!r} has partitions 0..{meta.partitions - 1}, not partition {partition}",
            )
        return plog

    def logs(self) -> Iterator[PartitionLog]:
        return iter(list(self._logs.values()))

    def enforce_retention(self, now_ms: int) -> int:
        """Apply every topic's retention.ms/retention.bytes; returns the segments deleted."""
        self._check_open()
        deleted = 0
        for (topic, _), plog in list(self._logs.items()):
            config = self._topics[topic].config
            deleted += plog.enforce_retention(now_ms, config.retention_ms, config.retention_bytes)
        return deleted

    # -- producer ids ------------------------------------------------------------------------

    def _load_producer_ids(self) -> None:
        try:
            doc = json.loads(self.producer_ids_path.read_bytes())
            self._pid_persisted = int(doc["next_block_start"])
        except FileNotFoundError:
            self._pid_persisted = 0
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"{self.producer_ids_path} is unreadable ({exc}); restore it, or replace it with "
                '{"version": 1, "next_block_start": N} where N is larger than any producer id ever issued',
            ) from exc
        self._next_pid = self._pid_block_end = self._pid_persisted

    def allocate_producer_id(self) -> int:
        """A producer id never handed out before by this data directory, even across crashes."""
        self._check_open()
        if self._next_pid >= self._pid_block_end:
            start = self._pid_persisted
            end = start + self.config.producer_id_block_size
            atomic_write(self.producer_ids_path, json.dumps({"version": 1, "next_block_start": end}).encode())
            self._pid_persisted = end
            self._next_pid, self._pid_block_end = start, end
        pid = self._next_pid
        self._next_pid += 1
        return pid

    # -- checkpoint --------------------------------------------------------------------------

    def _checkpoint_data(self) -> bytes:
        entries = []
        for (topic, partition), plog in self._logs.items():
            meta = self._topics[topic]
            cp = PartitionCheckpoint(plog.recovery_point, plog.log_start_offset)
            entries.append((topic, str(meta.topic_id), partition, cp))
        return encode_checkpoint(entries)

    def prepare_checkpoint(self, *, force: bool = False) -> CheckpointTicket | None:
        """Capture the recovery checkpoint; None if it equals the last one (unless ``force``)."""
        data = self._checkpoint_data()
        if not force and data == self._ckpt_last:
            return None
        self._ckpt_last = data
        self._ckpt_seq += 1
        return CheckpointTicket(self, data, self._ckpt_seq)

    def _commit_checkpoint(self, ticket: CheckpointTicket) -> None:
        with self._ckpt_lock:
            if ticket.seq <= self._ckpt_written_seq:
                return
            try:
                atomic_write(self.checkpoint_path, ticket.data)
            except OSError:
                self._ckpt_last = None  # not written: the next prepare_checkpoint() must try again
                raise
            self._ckpt_written_seq = ticket.seq

    def write_checkpoint(self) -> None:
        """Write the recovery checkpoint now, synchronously (if anything changed)."""
        self._check_open()
        self._write_checkpoint_now()

    def _write_checkpoint_now(self) -> None:
        ticket = self.prepare_checkpoint()
        if ticket is not None:
            ticket.run()
