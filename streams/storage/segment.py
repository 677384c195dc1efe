"""One segment: a ``.log`` file of RecordBatch v2 bytes plus its ``.index`` and ``.timeindex``.

File names are the segment's base offset (the offset of its first batch) as 20 zero-padded
digits, Kafka style: ``00000000000000001234.log``. The ``.log`` holds batches back to back,
exactly as producers sent them except for BaseOffset and PartitionLeaderEpoch (patched by the
log, outside the CRC). Nothing else is in the file: no header, no padding, no trailer, so the
byte range of any run of batches is a valid Fetch payload.

The ``.log`` is written with ``pwrite`` at the tracked end position through one unbuffered
``O_RDWR`` descriptor, which also serves ``pread`` and is what fetches ``dup()``. Positions and
relative offsets are int32 in the index formats, so a segment never grows past 2 GiB - 1 or
spans more than 2**31 - 1 offsets (the log rolls first).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from streams._faults import crashpoint, failpoint
from streams.errors import FatalStorageError
from streams.protocol.records import HEADER_SIZE, BatchHeader, InvalidBatch, parse_header

from .files import pread_exact, pwrite_all, truncate
from .index import OffsetIndex, TimeIndex

__all__ = ["INT32_MAX", "HeaderReader", "Segment", "segment_name"]

log = logging.getLogger(__name__)

INT32_MAX = 0x7FFFFFFF


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class HeaderReader:
    """Reads batch headers (and whole small batches) through a window of ``chunk`` bytes.

    Small batches are then parsed from memory instead of costing one ``pread`` each; for big
    batches it reads little more than each header.
    """

    def __init__(self, fd: int, end: int, chunk: int = 64 * 1024) -> None:
        self.fd = fd
        self.end = end
        self.chunk = chunk
        self._buf = b""
        self._start = 0

    def window(self, position: int, size: int) -> tuple[memoryview, int] | None:
        """(buffer, index of ``position`` in it) with ``size`` bytes available, None past the end."""
        if position + size > self.end:
            return None
        rel = position - self._start
        if rel < 0 or rel + size > len(self._buf):
            want = size if size > self.chunk else min(self.chunk, self.end - position)
            self._buf = pread_exact(self.fd, want, position)
            self._start = position
            rel = 0
            if len(self._buf) < size:
                return None
        return memoryview(self._buf), rel

    def header(self, position: int) -> BatchHeader:
        found = self.window(position, HEADER_SIZE)
        if found is None:
            raise InvalidBatch(f"batch header truncated at position {position} (data ends at {self.end})")
        buf, rel = found
        return parse_header(buf, rel)


class Segment:
    """A ``.log`` file and its indexes; knows its size, next offset and largest timestamp."""

    def __init__(self, directory: Path, base_offset: int, fd: int, index_interval_bytes: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.rolling_base_ms: int | None = None
        self.index_interval_bytes = index_interval_bytes
        name = segment_name(base_offset)
        self.log_path = directory / f"{name}.log"
        self.index = OffsetIndex(directory / f"{name}.index", base_offset)
        self.time_index = TimeIndex(directory / f"{name}.timeindex", base_offset)
        self._since_index = 0
        self._last_batch_offset = base_offset
        # Batches in [verified_upto, unverified_end) have had only their headers checked (data
        # below the recovery point at open); everything else passed a CRC-32C check, at produce
        # time or by recovery. Reads and the scrubber verify that range before trusting it.
        self.verified_upto = 0
        self.unverified_end = 0

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, base_offset: int, index_interval_bytes: int) -> Segment:
        """A new, empty active segment; the caller owes a directory fsync before acking into it."""
        path = directory / f"{segment_name(base_offset)}.log"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        seg = cls(directory, base_offset, fd, index_interval_bytes)
        for index in (seg.index, seg.time_index):
            index.rewrite()
            index.open_for_append()
        return seg

    @classmethod
    def open(cls, directory: Path, base_offset: int, index_interval_bytes: int) -> Segment:
        """An existing segment with empty in-memory indexes; the caller feeds it a scan."""
        fd = os.open(directory / f"{segment_name(base_offset)}.log", os.O_RDWR)
        return cls(directory, base_offset, fd, index_interval_bytes)

    def finish_open(self, *, active: bool) -> None:
        """After the scan: make the index files match the scan, and open them if active."""
        if not active:
            self.time_index.maybe_append(self.max_timestamp, self._last_batch_offset)
        for index in (self.index, self.time_index):
            reason = index.diagnose()
            if reason is not None:
                log.info("rebuilding %s: %s", index.path, reason)
                index.rewrite()
            if active:
                index.open_for_append()
        if self.rolling_base_ms is None and not self.empty:
            self.rolling_base_ms = int(time.time() * 1000)

    def seal(self) -> None:
        """The segment stops being the active one: final time index entry, stop appending."""
        self.time_index.maybe_append(self.max_timestamp, self._last_batch_offset)
        self.index.close()
        self.time_index.close()

    def close(self) -> None:
        self.index.close()
        self.time_index.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        """Close and remove the files, indexes first so a crash never leaves an orphan index."""
        self.close()
        self.time_index.delete()
        self.index.delete()
        self.log_path.unlink(missing_ok=True)

    # -- contents --------------------------------------------------------------------------

    @property
    def empty(self) -> bool:
        return self.next_offset == self.base_offset

    def note_batch(
        self,
        position: int,
        size: int,
        base_offset: int,
        last_offset: int,
        max_timestamp: int,
        first_seen_ms: int | None = None,
    ) -> None:
        """Account for a batch at ``position`` (just appended, or found by the open scan)."""
        if self.next_offset == self.base_offset:  # first batch of the segment
            self.rolling_base_ms = first_seen_ms
            if first_seen_ms is None and 0 < max_timestamp <= time.time() * 1000:
                self.rolling_base_ms = max_timestamp
        self.max_timestamp = max(self.max_timestamp, max_timestamp)
        if position > 0 and self._since_index >= self.index_interval_bytes:
            self.index.append(base_offset, position)
            self.time_index.maybe_append(self.max_timestamp, base_offset)
            self._since_index = 0
        self._since_index += size
        self.next_offset = last_offset + 1
        self._last_batch_offset = base_offset

    def append(self, batch: bytearray, header: BatchHeader, base_offset: int, now_ms: int) -> int:
        """Write one batch (already patched to ``base_offset``) at the end; returns its position.

        On a write error the file is cut back to its previous size, so a failed append leaves
        nothing behind; if even that fails the error says the log is in an unknown state.
        """
        position = self.size
        try:
            failpoint("storage.write_enospc", errno.ENOSPC)
            pwrite_all(self.fd, batch, position)
        except OSError:
            try:
                truncate(self.fd, position)
            except OSError as exc:
                raise FatalStorageError(
                    f"cannot undo a failed write to {self.log_path} ({exc}); the store must restart "
                    "so recovery can cut the partial batch",
                ) from exc
            raise
        size = len(batch)
        crashpoint("storage.mid_append", f"log={self.log_path} position={position} size={size}")
        self.size = position + size
        self.note_batch(
            position, size, base_offset, base_offset + header.last_offset_delta, header.max_timestamp, now_ms
        )
        return position

    def truncate(self, position: int) -> None:
        """Cut the ``.log`` at ``position`` (recovery only; indexes are rebuilt afterwards)."""
        truncate(self.fd, position)
        self.size = position

    def find_batch(self, offset: int, end: int) -> tuple[int, BatchHeader]:
        """Position and header of the batch containing ``offset`` (which must lie below ``end``)."""
        _, position = self.index.lookup(offset)
        reader = HeaderReader(self.fd, end, 16 * 1024)
        while True:
            header = reader.header(position)
            if header.last_offset >= offset:
                return position, header
            position += header.size
