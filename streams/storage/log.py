"""PartitionLog: the append-only log of one topic partition.

Threading: every method runs on one thread (the server's event loop), except
:meth:`SyncTicket.run`, which may run in a worker thread. A ticket owns ``dup()``-ed descriptors
of the segments it must fsync, so the loop may keep appending, roll, or delete and close
segments (retention, topic deletion) while a ticket runs: ``fdatasync`` on a descriptor of an
unlinked file is harmless, and no descriptor number a worker uses can be closed and reused
under it. Fetch results hold ``dup()``-ed descriptors for the same reason.

Offsets: ``log_start_offset <= high_watermark <= log_end_offset``. ``log_end_offset`` is the next
offset to assign and includes unsynced data; ``high_watermark`` only moves in
:meth:`finish_sync`, so everything below it is on disk, and reads never return data at or past
it (a consumer never sees a record a crash could take back).
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka.record.default_records import DefaultRecordBatch

from streams._faults import failpoint
from streams.errors import CorruptLogError, FatalStorageError, StorageError
from streams.protocol.records import BatchHeader, InvalidBatch, parse_header, patch_base_offset, validate_batch

from .config import TopicConfig
from .errors import OffsetOutOfRangeError, RecordTooLargeError
from .files import fdatasync, fsync, fsync_dir, pread_exact
from .producers import ProducerState
from .recovery import recover_partition
from .segment import INT32_MAX, HeaderReader, Segment

__all__ = ["AppendResult", "PartitionLog", "ReadSlice", "SyncTicket"]

log = logging.getLogger(__name__)

_SCAN_CHUNK = 16 * 1024


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where a batch landed. For a retried duplicate, the offsets of the original append."""

    base_offset: int
    last_offset: int
    log_start_offset: int
    duplicate: bool = False


class ReadSlice:
    """A byte range of one segment holding whole batches, ready for ``sendfile``.

    ``fd`` is the caller's own duplicate of the segment descriptor: it stays valid even if the
    segment is deleted meanwhile, and the caller must :meth:`close` it.
    """

    __slots__ = ("fd", "first_offset", "last_offset", "length", "position")

    def __init__(self, fd: int, position: int, length: int, first_offset: int, last_offset: int) -> None:
        self.fd = fd
        self.position = position
        self.length = length
        self.first_offset = first_offset
        self.last_offset = last_offset

    def read_bytes(self) -> bytes:
        data = pread_exact(self.fd, self.length, self.position)
        if len(data) != self.length:  # pragma: no cover - segments only shrink in recovery
            raise StorageError(f"segment shrank under a read: wanted {self.length} bytes, got {len(data)}")
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ReadSlice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ReadSlice(position={self.position}, length={self.length}, "
            f"offsets={self.first_offset}..{self.last_offset})"
        )


class SyncTicket:
    """One group-commit round of one log: fsync what was written before :meth:`begin_sync`."""

    __slots__ = ("_dir_fd", "_fds", "_hw_position", "_hw_segment", "completed", "end_offset", "name")

    def __init__(
        self, name: str, end_offset: int, fds: list[int], dir_fd: int | None, hw_segment: Segment, hw_position: int
    ) -> None:
        self.name = name
        self.end_offset = end_offset
        self.completed = False
        self._fds = fds
        self._dir_fd = dir_fd
        self._hw_segment = hw_segment
        self._hw_position = hw_position

    def run(self) -> None:
        """fdatasync the captured segments (and the directory); safe in a worker thread.

        A failure raises FatalStorageError: after a failed fsync the kernel may have dropped
        the dirty pages, so retrying could "succeed" without the data ever reaching disk.
        """
        try:
            for fd in self._fds:
                failpoint("storage.fsync_eio", errno.EIO)
                fdatasync(fd)
            if self._dir_fd is not None:
                fsync(self._dir_fd)
        except OSError as exc:
            raise FatalStorageError(
                f"fsync of partition {self.name} failed ({exc}); acknowledged durability can no longer "
                "be promised: the store must stop, and recovery will run at the next start",
            ) from exc
        finally:
            self.discard()
        self.completed = True

    def discard(self) -> None:
        """Release the descriptors (run() does this itself)."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


class PartitionLog:
    """Segments of one partition, with append, read, group-commit sync and retention."""

    def __init__(
        self,
        topic: str,
        partition: int,
        path: Path,
        config: TopicConfig,
        *,
        recovery_point: int = 0,
        log_start_offset: int = 0,
        index_interval_bytes: int = 4096,
        max_producers: int = 10_000,
        on_log_start_change: Callable[[], None] | None = None,
    ) -> None:
        """Open (and recover) the partition directory ``path``, which must exist."""
        self.topic = topic
        self.partition = partition
        self.path = path
        self.config = config
        self.index_interval_bytes = index_interval_bytes
        self._on_log_start_change = on_log_start_change
        self._closed = False
        self._in_flight: SyncTicket | None = None
        self._unsynced: list[Segment] = []
        self._dir_dirty = False
        recovered = recover_partition(
            path,
            recovery_point=recovery_point,
            log_start_offset=log_start_offset,
            index_interval_bytes=index_interval_bytes,
            max_producers=max_producers,
        )
        self.offline_reason: str | None = recovered.offline_reason
        self._segments = recovered.segments
        self._bases = [s.base_offset for s in self._segments]
        self.producers: ProducerState = recovered.producers
        self.log_start_offset = recovered.log_start_offset
        if self._segments:
            active = self._segments[-1]
            self.log_end_offset = active.next_offset
            self.high_watermark = self.log_end_offset
            self._hw_segment = active
            self._hw_position = active.size
        else:  # offline: keep what the checkpoint said, so it is written back unchanged
            self.log_end_offset = self.high_watermark = recovery_point
            self._hw_position = 0

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def recovery_point(self) -> int:
        """The offset below which everything is fsynced (what the checkpoint records)."""
        return self.high_watermark

    def _check_usable(self) -> None:
        if self.offline_reason is not None:
            raise CorruptLogError(f"partition {self.name} is offline: {self.offline_reason}")
        if self._closed:
            raise StorageError(f"partition {self.name} is closed (its topic was deleted or the store shut down)")

    # -- append ------------------------------------------------------------------------------

    def append(self, batch: bytearray, header: BatchHeader, now_ms: int, max_message_bytes: int) -> AppendResult:
        """Append one validated batch (``header`` from ``validate_batch``), assigning its offsets.

        ``batch`` is patched in place (BaseOffset, PartitionLeaderEpoch = 0) and written as is.
        Raises RecordTooLargeError, OutOfOrderSequenceError, InvalidProducerEpochError,
        CorruptLogError (offline), StorageError (write failed, nothing appended, retriable) or
        FatalStorageError (the failed write could not be undone).
        """
        self._check_usable()
        if len(batch) != header.size:
            raise ValueError(f"batch is {len(batch)} bytes but its header says {header.size}")
        if header.size > max_message_bytes:
            raise RecordTooLargeError(
                f"batch of {header.size} bytes exceeds max.message.bytes={max_message_bytes} of topic "
                f"{self.topic}; send smaller batches (producer batch.size) or raise the topic's max.message.bytes",
            )
        duplicate = self.producers.check(header)
        if duplicate is not None:
            return AppendResult(duplicate.base_offset, duplicate.last_offset, self.log_start_offset, True)
        seg = self._segments[-1]
        if self._should_roll(seg, header, now_ms):
            seg = self._roll()
        base = self.log_end_offset
        last = base + header.last_offset_delta
        patch_base_offset(batch, 0, base)
        try:
            seg.append(batch, header, base, now_ms)
        except OSError as exc:
            raise StorageError(
                f"cannot write to {seg.log_path} ({exc}); the batch was not appended, retry later "
                "(if the disk is full, free space)",
            ) from exc
        self.log_end_offset = last + 1
        self.producers.update(header, base, last)
        if not self._unsynced or self._unsynced[-1] is not seg:
            self._unsynced.append(seg)
        return AppendResult(base, last, self.log_start_offset)

    def _should_roll(self, seg: Segment, header: BatchHeader, now_ms: int) -> bool:
        if seg.empty:
            return False
        new_size = seg.size + header.size
        return (
            new_size > self.config.segment_bytes
            or new_size > INT32_MAX
            or self.log_end_offset + header.last_offset_delta - seg.base_offset > INT32_MAX
            or (seg.rolling_base_ms is not None and now_ms - seg.rolling_base_ms > self.config.segment_ms)
        )

    def _roll(self) -> Segment:
        try:
            new = Segment.create(self.path, self.log_end_offset, self.index_interval_bytes)
        except OSError as exc:
            raise StorageError(
                f"cannot create a new segment in {self.path} ({exc}); the batch was not appended, retry later",
            ) from exc
        self._segments[-1].seal()
        self._segments.append(new)
        self._bases.append(new.base_offset)
        self._dir_dirty = True
        log.debug("%s: rolled to segment %s", self.name, new.log_path.name)
        return new

    # -- durability --------------------------------------------------------------------------

    def begin_sync(self) -> SyncTicket | None:
        """Capture what must be fsynced to make everything appended so far durable.

        None when nothing is unsynced (or the log is offline/closed). Only one ticket may be in
        flight; call :meth:`finish_sync` with it before starting the next.
        """
        if self.offline_reason is not None or self._closed:
            return None
        if self._in_flight is not None:
            raise RuntimeError(f"partition {self.name} already has a sync in flight; finish it first")
        if not self._unsynced and not self._dir_dirty:
            return None
        fds: list[int] = []
        dir_fd: int | None = None
        try:
            for seg in self._unsynced:
                fds.append(os.dup(seg.fd))
            if self._dir_dirty:
                dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise StorageError(f"cannot prepare the sync of partition {self.name}: {exc}") from exc
        active = self._segments[-1]
        ticket = SyncTicket(self.name, self.log_end_offset, fds, dir_fd, active, active.size)
        self._unsynced = []
        self._dir_dirty = False
        self._in_flight = ticket
        return ticket

    def finish_sync(self, ticket: SyncTicket) -> None:
        """Advance the high watermark to what ``ticket`` made durable (after its run())."""
        if ticket is not self._in_flight:
            raise ValueError(f"this ticket is not the sync in flight for partition {self.name}")
        self._in_flight = None
        if not ticket.completed:
            raise FatalStorageError(
                f"the sync of partition {self.name} did not complete; the store must stop and recover",
            )
        if self._closed or ticket.end_offset <= self.high_watermark:
            return
        self.high_watermark = ticket.end_offset
        self._hw_segment = ticket._hw_segment
        self._hw_position = ticket._hw_position

    def sync(self) -> None:
        """Synchronous begin/run/finish, for shutdown and tests."""
        ticket = self.begin_sync()
        if ticket is not None:
            ticket.run()
            self.finish_sync(ticket)

    # -- read --------------------------------------------------------------------------------

    def _readable(self, seg: Segment) -> tuple[int, int]:
        """(end position, next offset at that position) of the part of ``seg`` below the HW."""
        if seg is self._hw_segment:
            return self._hw_position, self.high_watermark
        if seg.base_offset < self._hw_segment.base_offset:
            return seg.size, seg.next_offset
        return 0, seg.base_offset

    def _segment_for(self, offset: int) -> Segment:
        return self._segments[bisect.bisect_right(self._bases, offset) - 1]

    def read(self, fetch_offset: int, max_bytes: int) -> ReadSlice | None:
        """Whole batches from the one containing ``fetch_offset``, about ``max_bytes`` of them.

        At least one batch is returned even if it alone exceeds ``max_bytes`` (so a consumer is
        never stuck), never anything at or past the high watermark, and never more than one
        segment. None when ``fetch_offset`` equals the high watermark.
        """
        self._check_usable()
        if fetch_offset < self.log_start_offset or fetch_offset > self.high_watermark:
            raise OffsetOutOfRangeError(
                f"offset {fetch_offset} is outside partition {self.name}'s range "
                f"{self.log_start_offset}..{self.high_watermark}; reset the consumer's position "
                "to the earliest or latest offset",
            )
        if fetch_offset == self.high_watermark:
            return None
        seg = self._segment_for(fetch_offset)
        readable_end, end_offset = self._readable(seg)
        position, header = seg.find_batch(fetch_offset, readable_end)
        end = position + header.size
        last = header.last_offset
        limit = position + max(max_bytes, 0)
        if readable_end <= limit:
            end, last = readable_end, end_offset - 1
        elif end < limit:
            known = seg.index.floor_position(limit)
            if known is not None and known[1] > end:
                last, end = known[0] - 1, known[1]
            reader = HeaderReader(seg.fd, readable_end, _SCAN_CHUNK)
            while end < readable_end:
                nxt = reader.header(end)
                if end + nxt.size > limit:
                    break
                end += nxt.size
                last = nxt.last_offset
        if position < seg.unverified_end and end > seg.verified_upto:
            self._verify(seg, position, end)
        return ReadSlice(os.dup(seg.fd), position, end - position, header.base_offset, last)

    def _verify(self, seg: Segment, position: int, end: int) -> None:
        """CRC-check batches of ``[position, end)`` that only had their headers checked at open.

        Data below the recovery point is trusted at open (a full scan would make start-up
        proportional to the store's size), so it is verified lazily instead: on its first read
        and by :meth:`scrub`. A mismatch takes the partition offline rather than serving it.
        ``position`` and ``end`` must be batch boundaries.
        """
        lo = max(position, seg.verified_upto)
        hi = min(end, seg.unverified_end)
        if lo >= hi:
            return
        data = pread_exact(seg.fd, hi - lo, lo)
        pos = 0
        while pos < len(data):
            try:
                header = validate_batch(data, pos)
            except InvalidBatch as exc:
                offset = parse_header(data, pos).base_offset if len(data) - pos >= 61 else -1
                self.offline_reason = (
                    f"{seg.log_path} is corrupt at position {lo + pos} (offset {offset}), in acknowledged "
                    f"data: {exc}. The store will not serve or truncate it; restore {self.path} from a "
                    "backup, or delete that directory to restart the partition empty (its data is then lost)"
                )
                log.error("partition offline: %s", self.offline_reason)
                raise CorruptLogError(f"partition {self.name} is offline: {self.offline_reason}") from exc
            pos += header.size
        if lo == seg.verified_upto:
            seg.verified_upto = hi
            if hi >= seg.unverified_end:
                seg.verified_upto = seg.unverified_end = 0

    def scrub(self, budget_bytes: int) -> int:
        """Verify up to about ``budget_bytes`` of not-yet-verified data; returns bytes checked.

        Meant to run periodically in the background, so corruption of old acknowledged data is
        found (and the partition taken offline) before a consumer asks for it.
        """
        if self.offline_reason is not None or self._closed:
            return 0
        for seg in self._segments:
            if seg.verified_upto >= seg.unverified_end:
                continue
            lo = seg.verified_upto
            reader = HeaderReader(seg.fd, seg.unverified_end, _SCAN_CHUNK)
            hi = lo
            while hi < seg.unverified_end and (hi == lo or hi - lo < budget_bytes):
                hi += reader.header(hi).size
            hi = min(hi, seg.unverified_end)
            try:
                self._verify(seg, lo, hi)
            except CorruptLogError:
                pass  # the partition is offline now; _verify logged why
            return hi - lo
        return 0

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the earliest record with timestamp >= ``timestamp``, below the HW.

        Kafka ListOffsets semantics; decodes only the one batch that holds the answer.
        """
        self._check_usable()
        first = self._segment_for(self.log_start_offset)
        for seg in self._segments[self._segments.index(first) :]:
            readable_end, _ = self._readable(seg)
            if readable_end == 0:
                break
            if seg.max_timestamp < timestamp:
                continue
            start = max(seg.time_index.lookup(timestamp), self.log_start_offset)
            _, position = seg.index.lookup(start)
            reader = HeaderReader(seg.fd, readable_end, _SCAN_CHUNK)
            while position < readable_end:
                header = reader.header(position)
                if header.max_timestamp >= timestamp and header.last_offset >= self.log_start_offset:
                    data = pread_exact(seg.fd, header.size, position)
                    for record in DefaultRecordBatch(data):
                        if record.offset >= self.log_start_offset and record.timestamp >= timestamp:
                            return int(record.offset), int(record.timestamp)
                position += header.size
        return None

    # -- deletion ----------------------------------------------------------------------------

    def delete_records(self, before_offset: int) -> int:
        """Kafka DeleteRecords: make ``before_offset`` the log start (-1: the high watermark).

        Whole segments below the new start are deleted; the new start is checkpointed before
        this returns, so deleted records never come back after a crash.
        """
        self._check_usable()
        if before_offset == -1:
            before_offset = self.high_watermark
        if not 0 <= before_offset <= self.high_watermark:
            raise OffsetOutOfRangeError(
                f"cannot delete records before offset {before_offset} of partition {self.name}: "
                f"use an offset between 0 and the high watermark {self.high_watermark}",
            )
        if before_offset <= self.log_start_offset:
            return self.log_start_offset
        self.log_start_offset = before_offset
        while len(self._segments) > 1 and self._segments[1].base_offset <= before_offset:
            self._delete_oldest()
        log.info("%s: records before offset %d deleted on request", self.name, before_offset)
        if self._on_log_start_change is not None:
            self._on_log_start_change()
        return self.log_start_offset

    def enforce_retention(self, now_ms: int, retention_ms: int, retention_bytes: int) -> int:
        """Delete old whole segments by time and size (-1: unlimited); returns how many.

        Never the active segment, never a segment holding data at or past the high watermark.
        """
        if self.offline_reason is not None or self._closed:
            return 0
        deleted = 0
        size = self.size_bytes
        while len(self._segments) > 1 and self._segments[1].base_offset <= self.high_watermark:
            seg = self._segments[0]
            by_time = retention_ms >= 0 and seg.max_timestamp < now_ms - retention_ms
            by_size = retention_bytes >= 0 and size - seg.size >= retention_bytes
            if not (by_time or by_size):
                break
            size -= seg.size
            self._delete_oldest()
            deleted += 1
        if deleted:
            self.log_start_offset = max(self.log_start_offset, self._segments[0].base_offset)
            log.info(
                "%s: retention deleted %d segment(s); the log now starts at offset %d",
                self.name,
                deleted,
                self.log_start_offset,
            )
        return deleted

    def _delete_oldest(self) -> None:
        seg = self._segments.pop(0)
        self._bases.pop(0)
        if seg is self._hw_segment:  # only when the HW sits exactly at its end
            self._hw_segment, self._hw_position = self._segments[0], 0
        if seg in self._unsynced:
            self._unsynced.remove(seg)
        seg.delete()
        # Make each deletion durable before the next: if a power loss kept an older segment but
        # lost a newer one, the log would have a gap below the recovery point and go offline.
        fsync_dir(self.path)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close every file (without syncing: see Store.close). In-flight tickets keep their fds."""
        if self._closed:
            return
        self._closed = True
        for seg in self._segments:
            seg.close()
        self._unsynced = []

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.name}, start={self.log_start_offset}, hw={self.high_watermark}, "
            f"end={self.log_end_offset}, segments={len(self._segments)})"
        )
