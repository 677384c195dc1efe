"""OffsetStore: the durable committed offsets of consumer groups (OffsetCommit / OffsetFetch).

Directory layout (the broker uses ``DATA_DIR/meta/offsets/``)::

    offsets.log       a header, then append-only records (format below)
    checkpoint.json   {"version": 1, "generation": "<16 hex>", "synced_bytes": N}, written at close
    .lock             flock held while an OffsetStore has the directory open
    *.tmp             leftovers of an interrupted compaction or atomic_write; removed at open

``offsets.log`` (integers big-endian)::

    header  (32 bytes)  magic b"SOFF" | u16 version=1 | u16 flags=0 | u64 generation
                        | u64 compacted_length | u32 compacted_entries | u32 crc32c(previous 28 bytes)
    record  (repeated)  u32 length | u32 crc32c(length bytes + payload) | payload (``length`` bytes)

``generation`` is random per file; ``compacted_length`` is the size of the file as compaction
wrote it (header included): that part was fsynced before the file got its name, so it is trusted.
The CRC covers the length, so zero-filled blocks (what a crash may leave) never parse as a record.
A payload is compact ASCII JSON (non-ASCII and lone surrogates as ``\\u`` escapes), one of::

    {"k": "commit", "g": group, "o": [[topic, partition, offset, leader_epoch, metadata|null, commit_ms], ...]}
    {"k": "delete", "d": {group: null | [[topic, partition], ...], ...}}   null: every offset of the group
    {"k": "remove_topic", "t": topic}                                        drop the topic in every group

Each mutating call appends exactly one record, so a crash applies a call entirely or not at all
(an expiry of many groups is one ``delete`` record). Replay applies records in order with the
same code the live calls use.

Durability: a mutating call writes its record and updates the in-memory view at once, and
returns the record's sequence number ``seq``; it is durable once ``high_watermark > seq``. The
durability interface has the shape of :class:`~streams.storage.log.PartitionLog`'s
(``log_end_offset``, ``high_watermark``, ``begin_sync``, ``finish_sync``), so the server's
group-commit ``Flusher`` drives it like a partition. Sequence numbers start at 0 at every open.

Recovery at open: everything below the *trusted length* — ``max(compacted_length, the
checkpoint's synced_bytes if its generation matches)`` — must be valid, or the open fails with
:class:`~streams.errors.CorruptLogError` (acknowledged offsets are never dropped silently). Past
it, the first record that does not parse (bad length, bad CRC, or a CRC-valid payload that is not
a valid record) starts a torn tail: it is truncated, with a WARNING saying how many bytes went.
The checkpoint is written at close only, so after a kill -9 the records appended since the last
clean close or compaction count as tail: corruption there is indistinguishable from a torn write
and is truncated, not reported.

Compaction: when the file exceeds ``max(compact_min_bytes, compact_factor x the estimated size
of the live entries)`` (live entries x the bytes per entry the last compaction wrote), the live
state is written (on the loop thread, without fsync: about 1 µs of CPU per entry) to a temp file,
which becomes the file appends go to. The next sync ticket fdatasyncs it, renames it over
``offsets.log`` and fsyncs the directory, in its worker thread; the high watermark only passes
records written after the last sync once that rename is durable. A crash before the rename
leaves the old file (holding everything synced so far) and a temp file that open removes; after
it, the new file. Either way a complete file.

Threading: every method runs on one thread (the event loop), except ``OffsetSyncTicket.run``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import crc32c

from streams.errors import CorruptLogError, FatalStorageError, StorageError

from .errors import DataDirLockedError
from .files import (
    TEMP_SUFFIX,
    atomic_write,
    fdatasync,
    fsync,
    fsync_dir,
    pread_exact,
    pwrite_all,
    remove_temp_files,
    replace,
    truncate,
)

__all__ = [
    "CommittedOffset",
    "InvalidOffsetCommitError",
    "OffsetCommitEntry",
    "OffsetMetadataTooLargeError",
    "OffsetStore",
    "OffsetSyncTicket",
]

log = logging.getLogger(__name__)

MAGIC = b"SOFF"
VERSION = 1
_HEADER = struct.Struct(">4sHHQQI")
_HEADER_CRC = struct.Struct(">I")
HEADER_SIZE = _HEADER.size + _HEADER_CRC.size  # 32
_FRAME = struct.Struct(">II")
_LENGTH = struct.Struct(">I")
FRAME_OVERHEAD = _FRAME.size
MAX_RECORD_BYTES = 64 << 20
"""Largest record payload written or accepted at open (a commit of ~100k partitions)."""
_COMPACT_CHUNK = 1000  # entries per commit record in a compacted file
_DEFAULT_ENTRY_BYTES = 64

LOG_NAME = "offsets.log"
CHECKPOINT_NAME = "checkpoint.json"
LOCK_NAME = ".lock"

_INT32_MAX = (1 << 31) - 1
_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)


class InvalidOffsetCommitError(StorageError):
    """A commit with an impossible value (negative partition, offset below -1, wrong type)."""

    kafka_error_code = 42  # INVALID_REQUEST


class OffsetMetadataTooLargeError(StorageError):
    """A commit's metadata string is longer than the store's limit."""

    kafka_error_code = 12  # OFFSET_METADATA_TOO_LARGE


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    """One committed offset of a group for one partition, as OffsetFetch returns it."""

    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp_ms: int


class OffsetCommitEntry(NamedTuple):
    """What a commit stores for one partition; any 5-tuple in this order will do."""

    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = None


# Internal record forms (what _decode returns and _apply takes).
_Key = tuple[str, int]
_Commit = tuple[str, list[tuple[_Key, CommittedOffset]]]  # group, entries
_Deletes = dict[str, list[_Key] | None]  # group -> partitions, None: the whole group


class _Invalid(Exception):
    """A record (or header) that does not parse; the message says why."""


# -- encoding ------------------------------------------------------------------------------------


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def _frame(payload: bytes) -> bytes:
    length = _LENGTH.pack(len(payload))
    return _FRAME.pack(len(payload), crc32c.crc32c(payload, crc32c.crc32c(length))) + payload


def _encode_header(generation: int, compacted_length: int, compacted_entries: int) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, 0, generation, compacted_length, compacted_entries)
    return head + _HEADER_CRC.pack(crc32c.crc32c(head))


def _decode_header(data: bytes) -> tuple[int, int, int]:
    """(generation, compacted_length, compacted_entries); raises _Invalid."""
    if len(data) < HEADER_SIZE:
        raise _Invalid(f"the file is {len(data)} bytes, shorter than its {HEADER_SIZE}-byte header")
    magic, version, _flags, generation, compacted_length, entries = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise _Invalid(f"bad magic {magic!r} (expected {MAGIC!r}): not an offsets file")
    (crc,) = _HEADER_CRC.unpack_from(data, _HEADER.size)
    if crc != crc32c.crc32c(data[: _HEADER.size]):
        raise _Invalid("the header's CRC does not match")
    if version != VERSION:
        raise _Invalid(f"format version {version} is not supported (this build reads version {VERSION})")
    if compacted_length < HEADER_SIZE:
        raise _Invalid(f"the header's compacted length {compacted_length} is impossible")
    return generation, compacted_length, entries


def _is_int(value: object, lo: int, hi: int) -> bool:
    return type(value) is int and lo <= value <= hi


def _decode(payload: bytes) -> tuple[str, Any]:
    """Parse and fully validate one record payload; raises _Invalid."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Invalid(f"payload is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _Invalid("payload is not a JSON object")
    kind = doc.get("k")
    if kind == "commit":
        group = doc.get("g")
        raw = doc.get("o")
        if not isinstance(group, str) or not isinstance(raw, list):
            raise _Invalid("commit record without a group string and an offsets list")
        entries: list[tuple[_Key, CommittedOffset]] = []
        for item in raw:
            if not (isinstance(item, list) and len(item) == 6):
                raise _Invalid("commit entry is not a 6-element list")
            topic, partition, offset, epoch, metadata, ts = item
            if not (
                isinstance(topic, str)
                and _is_int(partition, 0, _INT32_MAX)
                and _is_int(offset, -1, _INT64_MAX)
                and _is_int(epoch, -1, _INT32_MAX)
                and (metadata is None or isinstance(metadata, str))
                and _is_int(ts, _INT64_MIN, _INT64_MAX)
            ):
                raise _Invalid(f"commit entry with invalid fields: {item!r:.200}")
            entries.append(((topic, partition), CommittedOffset(offset, epoch, metadata, ts)))
        return "commit", (group, entries)
    if kind == "delete":
        raw_d = doc.get("d")
        if not isinstance(raw_d, dict):
            raise _Invalid("delete record without a groups object")
        deletes: _Deletes = {}
        for group, parts in raw_d.items():
            if parts is None:
                deletes[group] = None
                continue
            if not isinstance(parts, list):
                raise _Invalid("delete record with a partitions value that is neither null nor a list")
            keys: list[_Key] = []
            for item in parts:
                if not (
                    isinstance(item, list)
                    and len(item) == 2
                    and isinstance(item[0], str)
                    and _is_int(item[1], 0, _INT32_MAX)
                ):
                    raise _Invalid(f"delete record with an invalid partition: {item!r:.200}")
                keys.append((item[0], item[1]))
            deletes[group] = keys
        return "delete", deletes
    if kind == "remove_topic":
        topic = doc.get("t")
        if not isinstance(topic, str):
            raise _Invalid("remove_topic record without a topic string")
        return "remove_topic", topic
    raise _Invalid(f"unknown record kind {kind!r:.100}")


# -- sync tickets --------------------------------------------------------------------------------


class _Switch:
    """A compacted temp file waiting to be renamed over ``offsets.log`` (once, by whoever is first)."""

    def __init__(self, tmp: Path, final: Path) -> None:
        self.tmp = tmp
        self.final = final
        self.done = False
        self._lock = threading.Lock()

    def complete(self) -> None:
        """Rename and fsync the directory; the caller has fdatasynced the temp file."""
        with self._lock:
            if not self.done:
                replace(self.tmp, self.final)
                fsync_dir(self.final.parent)
                self.done = True


class OffsetSyncTicket:
    """One group-commit round of the offset store: fsync what was written before ``begin_sync``."""

    __slots__ = ("_fd", "_switch", "completed", "end_offset", "name")

    def __init__(self, name: str, end_offset: int, fd: int, switch: _Switch | None) -> None:
        self.name = name
        self.end_offset = end_offset
        self.completed = False
        self._fd = fd
        self._switch = switch

    def run(self) -> None:
        """fdatasync the file (and finish a compaction's rename); safe in a worker thread.

        A failure raises FatalStorageError: after a failed fsync the kernel may have dropped the
        dirty pages, so a retry could "succeed" without the data ever reaching disk.
        """
        try:
            fdatasync(self._fd)
            if self._switch is not None:
                self._switch.complete()
        except OSError as exc:
            raise FatalStorageError(
                f"fsync of {self.name} failed ({exc}); committed offsets can no longer be acknowledged "
                "durably: the store must stop, and recovery will run at the next start",
            ) from exc
        finally:
            self.discard()
        self.completed = True

    def discard(self) -> None:
        """Release the descriptor (run() does this itself)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# -- the store -----------------------------------------------------------------------------------


class OffsetStore:
    """Committed offsets of every consumer group, in one directory; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        max_metadata_bytes: int = 4096,
        compact_min_bytes: int = 1 << 20,
        compact_factor: float = 4.0,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOG_NAME
        self.checkpoint_path = self.directory / CHECKPOINT_NAME
        self.max_metadata_bytes = max_metadata_bytes
        self.compact_min_bytes = compact_min_bytes
        self.compact_factor = compact_factor
        self._groups: dict[str, dict[_Key, CommittedOffset]] = {}
        self._entries = 0
        self._fd = -1
        self._lock_fd = -1
        self._open = False
        self._size = 0
        self._generation = 0
        self._entry_bytes: float = _DEFAULT_ENTRY_BYTES
        self._compact_retry_size = 0
        self._switch: _Switch | None = None
        self._in_flight: OffsetSyncTicket | None = None
        self.log_end_offset = 0
        """Sequence number the next record gets (count of records appended since open)."""
        self.high_watermark = 0
        """Every record with a sequence number below this is fsynced."""
        self.compactions = 0

    @property
    def name(self) -> str:
        return f"offset store {self.directory}"

    @property
    def size_bytes(self) -> int:
        """Size of the file appends currently go to."""
        return self._size

    # -- open / close ----------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, replay the file (truncating a torn tail), compact if due."""
        if self._open:
            raise StorageError(f"{self.name} is already open")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        self._groups = {}
        self._entries = 0
        self._switch = None
        self._in_flight = None
        self.log_end_offset = self.high_watermark = 0
        self._entry_bytes = _DEFAULT_ENTRY_BYTES
        try:
            self._recover()
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._release_lock()
            raise
        self._open = True
        self._maybe_compact()
        if self._switch is not None:
            self.sync()

    def _acquire_lock(self) -> None:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLockedError(
                f"{self.name} is in use by another offset store (lock {self.directory / LOCK_NAME} is held); "
                "close the other one or use a different directory",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _corrupt(self, what: str) -> CorruptLogError:
        return CorruptLogError(
            f"{self.path} is corrupt: {what}. This is in synced (acknowledged) data, so it is not "
            f"truncated. Restore {self.directory} from a backup, or move {self.path.name} and "
            f"{self.checkpoint_path.name} out of it to start with no committed offsets (consumers "
            "then start from their auto.offset.reset position)",
        )

    def _recover(self) -> None:
        started = time.monotonic()
        remove_temp_files(self.directory)
        if not self.path.exists():
            if self.checkpoint_path.exists():
                log.warning(
                    "%s is missing but %s exists: starting with no committed offsets",
                    self.path,
                    self.checkpoint_path.name,
                )
                self.checkpoint_path.unlink()
                fsync_dir(self.directory)
            atomic_write(self.path, _encode_header(secrets.randbits(64), HEADER_SIZE, 0))
        self._fd = os.open(self.path, os.O_RDWR)
        data = pread_exact(self._fd, os.fstat(self._fd).st_size, 0)
        try:
            generation, compacted_length, compacted_entries = _decode_header(data)
        except _Invalid as exc:
            raise self._corrupt(f"its header is invalid ({exc})") from None
        self._generation = generation
        if compacted_entries:
            self._entry_bytes = max(1.0, (compacted_length - HEADER_SIZE) / compacted_entries)
        trusted = max(compacted_length, self._read_checkpoint(generation))
        if len(data) < trusted:
            raise self._corrupt(f"it is {len(data)} bytes long but {trusted} bytes of it were synced")
        view = memoryview(data)
        pos = HEADER_SIZE
        records = 0
        reason = ""
        while pos < len(data):
            try:
                end = self._replay_one(view, pos)
            except _Invalid as exc:
                reason = str(exc)
                break
            pos = end
            records += 1
        view.release()
        if pos < len(data):
            if pos < trusted:
                raise self._corrupt(f"the record at byte {pos} is invalid ({reason})")
            log.warning(
                "%s: dropped a torn or corrupt tail of %d bytes at byte %d (%s); nothing there had been "
                "acknowledged as synced",
                self.path,
                len(data) - pos,
                pos,
                reason,
            )
            try:
                truncate(self._fd, pos)
                fsync(self._fd)
            except OSError as exc:
                raise StorageError(f"cannot truncate the torn tail of {self.path} ({exc}); check the disk") from exc
        elif pos > trusted:
            # Records a killed incarnation appended (perhaps never synced) are served from now
            # on: make them durable first, or a power cut could take back offsets already fetched.
            try:
                fdatasync(self._fd)
            except OSError as exc:
                raise StorageError(f"cannot sync {self.path} ({exc}); check the disk") from exc
        self._size = pos
        self._compact_retry_size = 0
        log.info(
            "%s: %d groups, %d committed offsets from %d records (%d bytes) in %.3f s",
            self.name,
            len(self._groups),
            self._entries,
            records,
            pos,
            time.monotonic() - started,
        )

    def _read_checkpoint(self, generation: int) -> int:
        """The checkpoint's synced length if it belongs to this file generation, else 0."""
        try:
            raw = self.checkpoint_path.read_bytes()
        except FileNotFoundError:
            return 0
        try:
            doc = json.loads(raw)
            if doc["version"] != 1:
                raise ValueError(f"version {doc['version']}")
            ckpt_gen = int(doc["generation"], 16)
            synced = doc["synced_bytes"]
            if type(synced) is not int or synced < 0:
                raise ValueError("bad synced_bytes")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s); ignoring it", self.checkpoint_path, exc)
            return 0
        return int(synced) if ckpt_gen == generation else 0

    def _replay_one(self, view: memoryview, pos: int) -> int:
        if len(view) - pos < FRAME_OVERHEAD:
            raise _Invalid(f"{len(view) - pos} bytes left, fewer than a record header")
        length: int
        crc: int
        length, crc = _FRAME.unpack_from(view, pos)
        if length == 0 or length > MAX_RECORD_BYTES:
            raise _Invalid(f"impossible record length {length}")
        end = pos + FRAME_OVERHEAD + length
        if end > len(view):
            raise _Invalid(f"record of {length} bytes runs past the end of the file")
        payload = view[pos + FRAME_OVERHEAD : end]
        if crc32c.crc32c(payload, crc32c.crc32c(view[pos : pos + 4])) != crc:
            raise _Invalid("CRC mismatch")
        kind, body = _decode(bytes(payload))
        self._apply(kind, body)
        return end

    def close(self) -> None:
        """Sync everything (finishing a pending compaction), write the checkpoint, release the lock.

        Stop the flusher first; a ticket still in flight keeps its own descriptor and is harmless.
        """
        if not self._open:
            return
        self._open = False
        try:
            fdatasync(self._fd)
            if self._switch is not None:
                self._switch.complete()
                self._switch = None
            doc = {"version": 1, "generation": f"{self._generation:016x}", "synced_bytes": self._size}
            atomic_write(self.checkpoint_path, json.dumps(doc).encode() + b"\n")
        except OSError as exc:
            raise FatalStorageError(
                f"the final sync of {self.name} failed ({exc}); recovery will run at the next start",
            ) from exc
        finally:
            os.close(self._fd)
            self._fd = -1
            self._release_lock()
        self.high_watermark = self.log_end_offset

    def __enter__(self) -> OffsetStore:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- durability --------------------------------------------------------------------------------

    def begin_sync(self) -> OffsetSyncTicket | None:
        """Capture what must be fsynced to make every record so far durable (None: nothing).

        Only one ticket may be in flight; call :meth:`finish_sync` with it before the next.
        """
        if not self._open:
            return None
        if self._in_flight is not None:
            raise RuntimeError(f"{self.name} already has a sync in flight; finish it first")
        if self.log_end_offset == self.high_watermark and self._switch is None:
            return None
        try:
            fd = os.dup(self._fd)
        except OSError as exc:
            raise StorageError(f"cannot prepare the sync of {self.name}: {exc}") from exc
        ticket = OffsetSyncTicket(self.name, self.log_end_offset, fd, self._switch)
        self._in_flight = ticket
        return ticket

    def finish_sync(self, ticket: OffsetSyncTicket) -> None:
        """Advance the high watermark to what ``ticket`` made durable (after its run())."""
        if ticket is not self._in_flight:
            raise ValueError(f"this ticket is not the sync in flight for {self.name}")
        self._in_flight = None
        if not ticket.completed:
            raise FatalStorageError(f"the sync of {self.name} did not complete; the store must stop and recover")
        if not self._open:
            return
        if ticket._switch is not None and ticket._switch is self._switch:
            self._switch = None
        self.high_watermark = max(self.high_watermark, ticket.end_offset)

    def sync(self) -> None:
        """Synchronous begin/run/finish, for tests and start-up."""
        ticket = self.begin_sync()
        if ticket is not None:
            ticket.run()
            self.finish_sync(ticket)

    # -- reads -------------------------------------------------------------------------------------

    def has_group(self, group: str) -> bool:
        """Whether ``group`` has any committed offset (cheap: no copy, unlike :meth:`groups`)."""
        return group in self._groups

    def fetch(self, group: str) -> dict[tuple[str, int], CommittedOffset]:
        """Every committed offset of ``group`` by (topic, partition); empty for an unknown group."""
        return dict(self._groups.get(group, ()))

    def fetch_partition(self, group: str, topic: str, partition: int) -> CommittedOffset | None:
        entries = self._groups.get(group)
        return None if entries is None else entries.get((topic, partition))

    def groups(self) -> set[str]:
        """Groups that have at least one committed offset."""
        return set(self._groups)

    @property
    def entry_count(self) -> int:
        """Committed offsets held, over all groups."""
        return self._entries

    # -- writes ------------------------------------------------------------------------------------

    def commit(self, group: str, offsets: Iterable[tuple[str, int, int, int, str | None]], now_ms: int) -> int:
        """Store ``(topic, partition, offset, leader_epoch, metadata)`` entries of ``group``.

        Returns the record's sequence number: acknowledge once ``high_watermark`` is above it.
        Later entries for the same partition win. Raises InvalidOffsetCommitError,
        OffsetMetadataTooLargeError, StorageError (not written; retry) or FatalStorageError.
        """
        self._check_open()
        _check_str("group id", group)
        if not _is_int(now_ms, _INT64_MIN, _INT64_MAX):
            raise InvalidOffsetCommitError(f"commit timestamp {now_ms!r} is not an int64")
        rows: list[list[object]] = []
        entries: list[tuple[_Key, CommittedOffset]] = []
        for item in offsets:
            topic, partition, offset, epoch, metadata = item
            self._check_entry(topic, partition, offset, epoch, metadata)
            rows.append([topic, partition, offset, epoch, metadata, now_ms])
            entries.append(((topic, partition), CommittedOffset(offset, epoch, metadata, now_ms)))
        if not entries:
            return self.log_end_offset - 1
        seq = self._append({"k": "commit", "g": group, "o": rows})
        self._apply("commit", (group, entries))
        self._maybe_compact()
        return seq

    def delete_group(self, group: str) -> int:
        """Drop every committed offset of ``group`` (DeleteGroups); returns the sequence number."""
        self._check_open()
        _check_str("group id", group)
        if group not in self._groups:
            return self.log_end_offset - 1
        return self._write_deletes({group: None})

    def delete_offsets(self, group: str, partitions: Iterable[tuple[str, int]]) -> int:
        """Drop the committed offsets of ``partitions`` of ``group`` (OffsetDelete)."""
        self._check_open()
        _check_str("group id", group)
        entries = self._groups.get(group, {})
        keys: list[_Key] = []
        for topic, partition in partitions:
            _check_str("topic", topic)
            if not _is_int(partition, 0, _INT32_MAX):
                raise InvalidOffsetCommitError(f"partition {partition!r} is not an int32 >= 0")
            if (topic, partition) in entries and (topic, partition) not in keys:
                keys.append((topic, partition))
        if not keys:
            return self.log_end_offset - 1
        return self._write_deletes({group: None if len(keys) == len(entries) else keys})

    def remove_topic(self, topic: str) -> int:
        """Drop ``topic``'s committed offsets in every group (the topic was deleted)."""
        self._check_open()
        _check_str("topic", topic)
        if not any(topic == key[0] for entries in self._groups.values() for key in entries):
            return self.log_end_offset - 1
        seq = self._append({"k": "remove_topic", "t": topic})
        self._apply("remove_topic", topic)
        self._maybe_compact()
        return seq

    def expire(self, now_ms: int, retention_ms: int, empty_since: Callable[[str], int | None]) -> list[str]:
        """Delete committed offsets older than ``retention_ms`` (``offsets.retention.minutes``).

        ``empty_since(group)`` is None while the group has active members (its offsets never
        expire then), else the time (ms) it became empty — 0 for a group that never had members
        (a "simple" consumer that only commits). An offset expires when
        ``now_ms - max(empty_since, its commit timestamp) >= retention_ms``: Kafka's rule
        (KIP-211), so an idle group's offsets do not vanish the moment it empties, and those of
        a simple consumer expire per partition. All deletions are one record; returns the
        groups left without any offset.
        """
        self._check_open()
        if retention_ms < 0:
            raise ValueError(f"retention_ms must be >= 0, not {retention_ms}")
        deletes: _Deletes = {}
        gone: list[str] = []
        for group, entries in list(self._groups.items()):
            since = empty_since(group)
            if since is None:
                continue
            expired = [k for k, c in entries.items() if now_ms - max(since, c.commit_timestamp_ms) >= retention_ms]
            if not expired:
                continue
            if len(expired) == len(entries):
                deletes[group] = None
                gone.append(group)
            else:
                deletes[group] = expired
        if deletes:
            self._write_deletes(deletes)
            log.info(
                "%s: expired the committed offsets of %d group(s) (%d entirely)",
                self.name,
                len(deletes),
                len(gone),
            )
        return gone

    def compact(self) -> bool:
        """Rewrite the file with only the live entries now; False if a compaction awaits its sync."""
        self._check_open()
        return self._compact()

    # -- internals ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise StorageError(f"{self.name} is not open (call open() first, or the store shut down)")

    def _check_entry(self, topic: object, partition: object, offset: object, epoch: object, metadata: object) -> None:
        _check_str("topic", topic)
        if not _is_int(partition, 0, _INT32_MAX):
            raise InvalidOffsetCommitError(f"partition {partition!r} of topic {topic!r} is not an int32 >= 0")
        if not _is_int(offset, -1, _INT64_MAX):
            raise InvalidOffsetCommitError(f"offset {offset!r} for {topic}-{partition} is not an int64 >= -1")
        if not _is_int(epoch, -1, _INT32_MAX):
            raise InvalidOffsetCommitError(f"leader epoch {epoch!r} for {topic}-{partition} is not an int32 >= -1")
        if metadata is not None:
            if not isinstance(metadata, str):
                raise InvalidOffsetCommitError(f"metadata for {topic}-{partition} is not a string or None")
            size = len(metadata.encode("utf-8", "surrogatepass"))
            if size > self.max_metadata_bytes:
                raise OffsetMetadataTooLargeError(
                    f"metadata for {topic}-{partition} is {size} bytes, more than the limit of "
                    f"{self.max_metadata_bytes} (offset.metadata.max.bytes); commit shorter metadata",
                )

    def _write_deletes(self, deletes: _Deletes) -> int:
        doc = {g: None if keys is None else [list(k) for k in keys] for g, keys in deletes.items()}
        seq = self._append({"k": "delete", "d": doc})
        self._apply("delete", deletes)
        self._maybe_compact()
        return seq

    def _append(self, record: dict[str, object]) -> int:
        payload = _dumps(record)
        if len(payload) > MAX_RECORD_BYTES:
            raise InvalidOffsetCommitError(
                f"the record is {len(payload)} bytes, more than {MAX_RECORD_BYTES}; commit fewer partitions per request",
            )
        frame = _frame(payload)
        try:
            pwrite_all(self._fd, frame, self._size)
        except OSError as exc:
            try:
                truncate(self._fd, self._size)
            except OSError as undo:
                raise FatalStorageError(
                    f"cannot write to {self.path} ({exc}) nor undo the partial write ({undo}); "
                    "the store must stop, and recovery will run at the next start",
                ) from exc
            raise StorageError(
                f"cannot write to {self.path} ({exc}); nothing was stored, retry later (if the disk is full, free space)",
            ) from exc
        self._size += len(frame)
        seq = self.log_end_offset
        self.log_end_offset += 1
        return seq

    def _apply(self, kind: str, body: Any) -> None:
        groups = self._groups
        if kind == "commit":
            group, entries = body
            if not entries:
                return
            current = groups.get(group)
            if current is None:
                current = groups[group] = {}
            before = len(current)
            for key, committed in entries:
                current[key] = committed
            self._entries += len(current) - before
        elif kind == "delete":
            for group, keys in body.items():
                current = groups.get(group)
                if current is None:
                    continue
                if keys is None:
                    self._entries -= len(current)
                    del groups[group]
                    continue
                for key in keys:
                    if current.pop(key, None) is not None:
                        self._entries -= 1
                if not current:
                    del groups[group]
        else:  # remove_topic
            for group in list(groups):
                current = groups[group]
                doomed = [key for key in current if key[0] == body]
                for key in doomed:
                    del current[key]
                self._entries -= len(doomed)
                if not current:
                    del groups[group]

    def _compact_due(self) -> bool:
        if self._switch is not None or self._size < self._compact_retry_size:
            return False
        live = HEADER_SIZE + self._entries * self._entry_bytes
        return self._size > max(self.compact_min_bytes, self.compact_factor * live)

    def _maybe_compact(self) -> None:
        if self._compact_due():
            self._compact()

    def _compact(self) -> bool:
        if self._switch is not None:
            return False
        started = time.monotonic()
        parts: list[bytes] = []
        for group, entries in self._groups.items():
            rows = [
                [t, p, c.offset, c.leader_epoch, c.metadata, c.commit_timestamp_ms] for (t, p), c in entries.items()
            ]
            for i in range(0, len(rows), _COMPACT_CHUNK):
                parts.append(_frame(_dumps({"k": "commit", "g": group, "o": rows[i : i + _COMPACT_CHUNK]})))
        body = b"".join(parts)
        generation = secrets.randbits(64)
        data = _encode_header(generation, HEADER_SIZE + len(body), self._entries) + body
        tmp = self.directory / f"offsets-{secrets.token_hex(8)}{TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                pwrite_all(fd, data, 0)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._compact_retry_size = self._size + max(self.compact_min_bytes, self._size // 2)
            log.warning("%s: compaction failed (%s); will retry when the file has grown", self.name, exc)
            return False
        old_size = self._size
        os.close(self._fd)  # an in-flight ticket holds its own dup
        self._fd = fd
        self._size = len(data)
        self._generation = generation
        self._switch = _Switch(tmp, self.path)
        self._entry_bytes = max(1.0, len(body) / self._entries) if self._entries else _DEFAULT_ENTRY_BYTES
        self._compact_retry_size = 0
        self.compactions += 1
        log.info(
            "%s: compacted %d bytes to %d (%d groups, %d offsets) in %.3f s",
            self.name,
            old_size,
            len(data),
            len(self._groups),
            self._entries,
            time.monotonic() - started,
        )
        return True

    def __repr__(self) -> str:
        return (
            f"OffsetStore({self.directory}, groups={len(self._groups)}, entries={self._entries}, "
            f"hw={self.high_watermark}, end={self.log_end_offset}, bytes={self._size})"
        )


def _check_str(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidOffsetCommitError(f"{what} {value!r} is not a string")
