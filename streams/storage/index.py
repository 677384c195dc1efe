"""Sparse offset and time indexes of one segment (Kafka's ``.index`` and ``.timeindex``).

File formats (big-endian, no header, no checksum, append-only, never preallocated)::

    <base>.index      8-byte entries: int32 offset - segment base, int32 byte position in .log
    <base>.timeindex  12-byte entries: int64 timestamp, int32 offset - segment base

Offset index: one entry for the first batch that starts at least ``index_interval_bytes`` after
the previously indexed batch; the entry names that batch's *base* offset and the position of
its first byte. So every entry is a known batch boundary, which the read path uses both to find
where a fetch starts and where it may stop. The first batch of a segment has no entry (the
segment start is an implicit one).

Time index: entry ``(T, o)`` means "the largest MaxTimestamp of every batch up to and including
the batch with base offset ``o`` is ``T``". Entries are written at the same moments as offset
index entries, but only when ``T`` grew, plus one final entry when the segment stops being the
active one. Timestamps and offsets are therefore strictly increasing. A lookup for ``ts`` takes
the last entry with ``T < ts``: no batch up to ``o`` can match, so the scan starts there.

Both files are caches. They are written with plain ``pwrite`` and never fsynced; at open they
are compared with what a scan of the segment says they must contain and rewritten on any
difference (missing, torn, stale or garbage), so a bad index can never misdirect a read.
Entries are also kept in memory (``array``) for binary search.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
from array import array
from pathlib import Path

from .files import pwrite_all

__all__ = ["OffsetIndex", "TimeIndex"]

log = logging.getLogger(__name__)

_WRITE_BLOCK = 4096
_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class _IndexFile:
    """File side of an index: appends that may fail without failing the log."""

    entry_size: int

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._fd: int | None = None
        self._file_size = 0
        self._broken = False
        # Entries are written in blocks: the file is a cache that recovery checks and rebuilds,
        # so a crash that loses the last block costs nothing, and one write per ~500 entries
        # saves a syscall on every few appends.
        self._pending = bytearray()

    def __len__(self) -> int:
        raise NotImplementedError

    def encode(self) -> bytes:
        raise NotImplementedError

    def diagnose(self) -> str | None:
        """Why the file on disk does not match the in-memory entries, or None if it does."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return "it is missing"
        if len(raw) % self.entry_size:
            return f"its size {len(raw)} is not a multiple of {self.entry_size}"
        expected = self.encode()
        if raw == expected:
            return None
        for i in range(0, min(len(raw), len(expected)), self.entry_size):
            if raw[i : i + self.entry_size] != expected[i : i + self.entry_size]:
                return f"entry {i // self.entry_size} does not match the log"
        return f"it has {len(raw) // self.entry_size} entries, the log needs {len(self)}"

    def rewrite(self) -> None:
        """Replace the file with the in-memory entries (no fsync: the file is a cache)."""
        self.close()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = self.encode()
            pwrite_all(fd, data, 0)
        finally:
            os.close(fd)

    def open_for_append(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            self._file_size = os.fstat(self._fd).st_size
            self._broken = False

    def _write(self, raw: bytes) -> None:
        if self._fd is None or self._broken:
            return
        self._pending += raw
        if len(self._pending) >= _WRITE_BLOCK:
            self.flush()

    def flush(self) -> None:
        """Write the buffered entries to the file."""
        if self._fd is None or self._broken or not self._pending:
            self._pending.clear()
            return
        try:
            pwrite_all(self._fd, self._pending, self._file_size)
            self._file_size += len(self._pending)
            self._pending.clear()
        except OSError as exc:
            # The log append already succeeded; a stale index is rebuilt at the next open.
            log.warning("cannot write index %s (%s); it will be rebuilt at the next open", self.path, exc)
            self._broken = True

    def close(self) -> None:
        """Stop appending; a file that missed writes is removed so the next open rebuilds it."""
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None
        if self._broken:
            self.path.unlink(missing_ok=True)
            self._broken = False

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class OffsetIndex(_IndexFile):
    """Relative offset -> file position of indexed batch starts."""

    entry_size = _OFFSET_ENTRY.size

    def __init__(self, path: Path, base_offset: int) -> None:
        super().__init__(path, base_offset)
        self.offsets = array("i")
        self.positions = array("i")

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        self.offsets.append(relative)
        self.positions.append(position)
        self._write(_OFFSET_ENTRY.pack(relative, position))

    def lookup(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch starting at or before ``offset``."""
        i = bisect.bisect_right(self.offsets, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.offsets[i], self.positions[i]

    def floor_position(self, position: int) -> tuple[int, int] | None:
        """(base offset, position) of the last indexed batch starting at or before ``position``."""
        i = bisect.bisect_right(self.positions, position) - 1
        if i < 0:
            return None
        return self.base_offset + self.offsets[i], self.positions[i]

    def encode(self) -> bytes:
        return b"".join(_OFFSET_ENTRY.pack(o, p) for o, p in zip(self.offsets, self.positions, strict=True))


class TimeIndex(_IndexFile):
    """Running max timestamp -> relative base offset of the batch where it was reached."""

    entry_size = _TIME_ENTRY.size

    def __init__(self, path: Path, base_offset: int) -> None:
        super().__init__(path, base_offset)
        self.timestamps = array("q")
        self.offsets = array("i")

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def last_timestamp(self) -> int:
        return self.timestamps[-1] if self.timestamps else -1

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add ``(timestamp, offset)`` if the timestamp grew since the last entry."""
        if timestamp <= self.last_timestamp:
            return
        relative = offset - self.base_offset
        self.timestamps.append(timestamp)
        self.offsets.append(relative)
        self._write(_TIME_ENTRY.pack(timestamp, relative))

    def lookup(self, timestamp: int) -> int:
        """A base offset from which the first batch with MaxTimestamp >= ``timestamp`` can be found."""
        i = bisect.bisect_left(self.timestamps, timestamp) - 1
        if i < 0:
            return self.base_offset
        return self.base_offset + self.offsets[i]

    def encode(self) -> bytes:
        return b"".join(_TIME_ENTRY.pack(t, o) for t, o in zip(self.timestamps, self.offsets, strict=True))
