"""Crash recovery of a partition directory, and the recovery checkpoint file.

Why a checkpoint: everything below a partition's *recovery point* was fsynced (and so possibly
acknowledged and consumed); everything above may be a torn or garbage tail from a crash. At open
the log is scanned from the start: below the recovery point only batch headers are checked
(cheap, and needed anyway to rebuild producer state and indexes); from the recovery point on
every batch is fully validated - length bounds, magic 2, CRC-32C, record count, and contiguous
offsets (first batch of a segment = its base offset, each batch = previous last offset + 1).

* Invalid data at or above the recovery point: the segment is cut at the first bad batch, later
  segments are deleted, the cut is fsynced, and a WARNING says how much was dropped.
* Invalid or missing data below it: acknowledged data is damaged. Nothing is truncated; the
  partition is reported offline (``RecoveredLog.offline_reason``) so an operator can restore it.

``recovery-checkpoint.json`` (written atomically by the store)::

    {"version": 1,
     "partitions": [{"topic": "orders", "topic_id": "<uuid>", "partition": 0,
                     "recovery_point": 1234, "log_start_offset": 0}, ...]}

Entries are keyed by topic id, so a topic deleted and re-created under the same name never
inherits the old topic's recovery point. A missing or unreadable file means recovery point 0
(full validation) and log start at the first segment.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import crc32c

from streams.protocol.records import LOG_OVERHEAD, BatchHeader, InvalidBatch, validate_batch

from .files import fdatasync, fsync, fsync_dir
from .producers import ProducerState
from .segment import HeaderReader, Segment

__all__ = [
    "PartitionCheckpoint",
    "RecoveredLog",
    "encode_checkpoint",
    "read_checkpoint",
    "recover_partition",
    "scan_segment",
]

log = logging.getLogger(__name__)

_MIN_LENGTH = 61 - LOG_OVERHEAD
_VERIFY_CHUNK = 1 << 20
_HEADER_CHUNK = 64 * 1024
_MAX_CODEC = 4


@dataclass(frozen=True, slots=True)
class PartitionCheckpoint:
    recovery_point: int
    log_start_offset: int


def read_checkpoint(path: Path) -> dict[tuple[str, int], PartitionCheckpoint]:
    """(topic_id, partition) -> checkpoint; empty if the file is missing or unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        doc = json.loads(raw)
        return {
            (str(e["topic_id"]), int(e["partition"])): PartitionCheckpoint(
                int(e["recovery_point"]), int(e["log_start_offset"])
            )
            for e in doc["partitions"]
        }
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(
            "recovery checkpoint %s is unreadable (%s); validating every partition from offset 0",
            path,
            exc,
        )
        return {}


def encode_checkpoint(entries: Iterable[tuple[str, str, int, PartitionCheckpoint]]) -> bytes:
    """Serialise (topic, topic_id, partition, checkpoint) tuples."""
    parts = [
        {
            "topic": topic,
            "topic_id": topic_id,
            "partition": partition,
            "recovery_point": cp.recovery_point,
            "log_start_offset": cp.log_start_offset,
        }
        for topic, topic_id, partition, cp in entries
    ]
    return json.dumps({"version": 1, "partitions": parts}, indent=1).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class BadBatch:
    """Where a scan stopped: the position and the offset expected there."""

    position: int
    offset: int
    reason: str


def _check_header(header: BatchHeader, position: int, end: int) -> str | None:
    if header.length < _MIN_LENGTH:
        return f"batch length {header.length} is smaller than a batch header"
    if position + header.size > end:
        return f"batch declares {header.size} bytes but only {end - position} remain"
    if header.magic != 2:
        return f"batch magic {header.magic} is not 2"
    if header.record_count <= 0 or header.last_offset_delta != header.record_count - 1:
        return f"record count {header.record_count} and last offset delta {header.last_offset_delta} disagree"
    return None


def _verify_large(fd: int, position: int, header: BatchHeader) -> str | None:
    """CRC-check a batch too big for the scan window, streaming it in 1 MiB pieces."""
    if header.compression > _MAX_CODEC:
        return f"unknown compression codec {header.compression}"
    crc = 0
    pos = position + 21
    stop = position + header.size
    while pos < stop:
        data = os.pread(fd, min(_VERIFY_CHUNK, stop - pos), pos)
        if not data:
            return "file ends inside the batch"
        crc = crc32c.crc32c(data, crc)
        pos += len(data)
    if crc != header.crc:
        return f"CRC-32C mismatch: stored {header.crc:#010x}, computed {crc:#010x}"
    return None


def scan_segment(
    seg: Segment,
    *,
    verify_from: int,
    expected_offset: int,
    on_batch: Callable[[int, BatchHeader], None],
) -> BadBatch | None:
    """Walk the batches of ``seg``; full validation for offsets >= ``verify_from``.

    Calls ``on_batch(position, header)`` for each good batch, in order, and returns where the
    first bad one starts (None if the whole file is good).
    """
    end = seg.size
    trusted_reader = HeaderReader(seg.fd, end, _HEADER_CHUNK)
    verify_reader = HeaderReader(seg.fd, end, _VERIFY_CHUNK)
    position = 0
    seg.verified_upto = 0
    seg.unverified_end = end
    while position < end:
        verify = expected_offset >= verify_from
        if verify and seg.unverified_end > position:
            seg.unverified_end = position
        reader = verify_reader if verify else trusted_reader
        try:
            header = reader.header(position)
        except InvalidBatch as exc:
            return BadBatch(position, expected_offset, str(exc))
        problem = _check_header(header, position, end)
        if problem is None and verify:
            if header.size <= _VERIFY_CHUNK:
                found = reader.window(position, header.size)
                assert found is not None  # _check_header proved the bytes are in the file
                buf, rel = found
                try:
                    validate_batch(buf, rel, end=rel + header.size)
                except InvalidBatch as exc:
                    problem = str(exc)
            else:
                problem = _verify_large(seg.fd, position, header)
        if problem is None and header.base_offset != expected_offset:
            problem = f"batch has base offset {header.base_offset}, expected {expected_offset}"
        if problem is not None:
            return BadBatch(position, expected_offset, problem)
        on_batch(position, header)
        expected_offset = header.last_offset + 1
        position += header.size
    return None


@dataclass(slots=True)
class RecoveredLog:
    """What :func:`recover_partition` found: open segments (oldest first) and rebuilt state."""

    segments: list[Segment]
    producers: ProducerState
    log_start_offset: int
    offline_reason: str | None = None


def _segment_bases(directory: Path) -> list[int]:
    bases: set[int] = set()
    for entry in directory.iterdir():
        stem, _, ext = entry.name.partition(".")
        if len(stem) != 20 or not stem.isdigit():
            if not entry.name.startswith("."):
                log.warning("ignoring unexpected file %s", entry)
            continue
        if ext == "log":
            bases.add(int(stem))
    for entry in directory.iterdir():
        stem, _, ext = entry.name.partition(".")
        if ext in ("index", "timeindex") and stem.isdigit() and int(stem) not in bases:
            log.info("removing index %s of a segment that no longer exists", entry)
            entry.unlink(missing_ok=True)
    return sorted(bases)


def _remove_segment_files(directory: Path, base: int) -> int:
    """Delete one segment's files by name; returns the bytes of its .log."""
    name = f"{base:020d}"
    size = 0
    for ext in ("timeindex", "index", "log"):
        path = directory / f"{name}.{ext}"
        if ext == "log":
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                pass
        path.unlink(missing_ok=True)
    return size


def recover_partition(
    directory: Path,
    *,
    recovery_point: int,
    log_start_offset: int,
    index_interval_bytes: int,
    max_producers: int,
) -> RecoveredLog:
    """Open every segment of a partition directory, validate, repair a torn tail, rebuild state."""
    started = time.monotonic()
    producers = ProducerState(max_producers)
    bases = _segment_bases(directory)
    if not bases:
        start = max(log_start_offset, recovery_point)
        if start > 0:
            log.warning("%s has no segments; the partition restarts empty at offset %d", directory, start)
        seg = Segment.create(directory, start, index_interval_bytes)
        fsync_dir(directory)
        return RecoveredLog([seg], producers, start)

    segments: list[Segment] = []
    expected = bases[0]
    bad: BadBatch | None = None
    verified: list[Segment] = []
    try:
        for base in bases:
            seg = Segment.open(directory, base, index_interval_bytes)
            segments.append(seg)
            if base != expected:
                bad = BadBatch(0, expected, f"segment starts at offset {base}, expected {expected}")
                break

            def note(position: int, header: BatchHeader, seg: Segment = seg) -> None:
                seg.note_batch(
                    position, header.size, header.base_offset, header.last_offset, header.max_timestamp
                )
                producers.update(header, header.base_offset, header.last_offset)

            bad = scan_segment(seg, verify_from=recovery_point, expected_offset=expected, on_batch=note)
            if seg.next_offset > recovery_point or bad is not None:
                verified.append(seg)
            expected = seg.next_offset
            if bad is not None:
                break
        if bad is None and expected < recovery_point:
            bad = BadBatch(
                segments[-1].size, expected, f"the log ends here but offsets up to {recovery_point - 1} were fsynced"
            )
        if bad is not None and bad.offset < recovery_point:
            seg = segments[-1]
            reason = (
                f"{seg.log_path} is corrupt at position {bad.position} (offset {bad.offset}), below the "
                f"recovery point {recovery_point}: {bad.reason}. This data was acknowledged, so the store "
                f"will not truncate it; restore {directory} from a backup, or delete that directory to "
                "restart the partition empty (its data is then lost)"
            )
            log.error("partition offline: %s", reason)
            for s in segments:
                s.close()
            return RecoveredLog([], ProducerState(max_producers), log_start_offset, reason)
        if bad is not None:
            _truncate_tail(directory, segments, bases, bad)
        # Segments a crash "undeleted" after delete_records/retention moved the log start past them.
        start = max(log_start_offset, segments[0].base_offset)
        while len(segments) > 1 and segments[1].base_offset <= start:
            old = segments.pop(0)
            log.info("deleting segment %s below the log start offset %d", old.log_path, start)
            old.delete()
        start = min(start, segments[-1].next_offset)
        for seg in verified:
            if seg in segments:
                fdatasync(seg.fd)  # what a consumer may now see must be durable
        if verified:
            # ...and so must the segments' names: a crash before the sync that follows a roll
            # leaves a segment whose directory entry only the page cache knows, and a power cut
            # would forget it after consumers read it (and the checkpoint covered it).
            fsync_dir(directory)
        for i, seg in enumerate(segments):
            seg.finish_open(active=i == len(segments) - 1)
    except BaseException:
        for s in segments:
            s.close()
        raise
    elapsed = time.monotonic() - started
    if elapsed > 1:
        log.info("recovered %s in %.1f s", directory, elapsed)
    return RecoveredLog(segments, producers, start)


def _truncate_tail(directory: Path, segments: list[Segment], bases: list[int], bad: BadBatch) -> None:
    seg = segments[-1]
    dropped = 0
    later = bases[len(segments) :]
    if bad.position == 0 and seg.base_offset != bad.offset:
        # A segment that does not continue the log: drop it entirely.
        segments.pop()
        dropped += seg.size
        seg.delete()
        if not segments:  # pragma: no cover - the first segment defines `expected`
            raise AssertionError("no segment left")
    else:
        dropped += seg.size - bad.position
        seg.truncate(bad.position)
        fsync(seg.fd)
    for base in later:
        dropped += _remove_segment_files(directory, base)
    fsync_dir(directory)
    log.warning(
        "%s: dropped %d bytes of unacknowledged data at offset %d (%s); the log now ends at offset %d",
        directory,
        dropped,
        bad.offset,
        bad.reason,
        segments[-1].next_offset,
    )
