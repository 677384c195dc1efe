"""Helpers for the end-to-end tests: on-disk layout of the store, real-client read-back, process facts.

The layout is the store's documented one (README, ``streams/storage``): ``DIR/<topic>-<p>/`` with
``<20-digit base offset>.log|.index|.timeindex`` and ``DIR/meta/recovery-checkpoint.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import crc32c
from kafka import KafkaConsumer, TopicPartition

from tests.e2e._wire import Batch, Record, WireClient, split_batches
from tests.support.store import StoreProcess

__all__ = [
    "DROPPED_RE",
    "Rec",
    "checkpoint",
    "dir_digest",
    "partition_dir",
    "read_all_kafka_python",
    "rss_kb",
    "segment_logs",
    "validate_log_files",
    "wait_until",
]

DROPPED_RE = re.compile(r"(?P<dir>\S+): dropped (?P<bytes>\d+) bytes of unacknowledged data at offset (?P<offset>\d+)")
"""The store's WARNING when recovery cuts a torn tail (streams/storage/recovery.py)."""


@dataclass(frozen=True)
class Rec:
    """What a record is, independent of where it was read: its identity for comparisons."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def partition_dir(data_dir: Path, topic: str, partition: int) -> Path:
    return data_dir / f"{topic}-{partition}"


def segment_logs(data_dir: Path, topic: str, partition: int) -> list[Path]:
    """The ``.log`` files of a partition, oldest first."""
    return sorted(partition_dir(data_dir, topic, partition).glob("*.log"))


def checkpoint(data_dir: Path) -> dict[tuple[str, int], int]:
    """(topic, partition) -> recovery point, from ``meta/recovery-checkpoint.json`` (empty if none)."""
    path = data_dir / "meta" / "recovery-checkpoint.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {(e["topic"], int(e["partition"])): int(e["recovery_point"]) for e in doc["partitions"]}


def validate_log_files(data_dir: Path, topic: str, partition: int) -> list[Batch]:
    """Every batch of every segment: whole, magic 2, CRC-32C valid, offsets contiguous."""
    batches: list[Batch] = []
    expected: int | None = None
    for path in segment_logs(data_dir, topic, partition):
        raw = path.read_bytes()
        base = int(path.name.split(".")[0])
        if expected is not None:
            assert base == expected, f"{path} starts at {base}, previous segment ended at {expected}"
        expected = base
        for b in split_batches(raw):  # raises if the file does not end on a batch boundary
            assert b.raw[16] == 2, f"{path}@{b.position}: magic {b.raw[16]}"
            (crc,) = struct.unpack_from(">I", b.raw, 17)
            assert crc32c.crc32c(b.raw[21:]) == crc, f"{path}@{b.position}: CRC-32C mismatch"
            assert b.base_offset == expected, f"{path}@{b.position}: base offset {b.base_offset}, expected {expected}"
            expected = b.last_offset + 1
            batches.append(b)
    return batches


def dir_digest(path: Path) -> dict[str, tuple[int, str]]:
    """name -> (size, sha256) of every file in a directory."""
    out = {}
    for f in sorted(path.iterdir()):
        if f.is_file():
            data = f.read_bytes()
            out[f.name] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def read_all_kafka_python(
    bootstrap: str, topic: str, partitions: Iterable[int], timeout: float = 30.0
) -> dict[int, list[Record]]:
    """Everything below each partition's end, read with an assign()-style kafka-python consumer."""
    parts = [TopicPartition(topic, p) for p in partitions]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        check_crcs=True,
        fetch_max_bytes=4 << 20,
        request_timeout_ms=15_000,
        client_id="e2e-reader",
    )
    try:
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: dict[int, list[Record]] = {tp.partition: [] for tp in parts}
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                positions = {tp.partition: (consumer.position(tp), end[tp]) for tp in parts}
                raise AssertionError(f"read-back did not reach the end offsets in {timeout} s: {positions}")
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                for m in msgs:
                    headers = tuple((k, bytes(v) if v is not None else b"") for k, v in m.headers or ())
                    out[tp.partition].append(Record(m.offset, m.timestamp, m.key, m.value, headers))
        return out
    finally:
        consumer.close()


def read_all_wire(bootstrap: str, topic: str, partition: int) -> tuple[int, list[Batch]]:
    with WireClient(bootstrap) as client:
        return client.fetch_all(topic, partition)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until truthy (returned) or fail after ``timeout`` seconds (no timing asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def store_log_since(store: StoreProcess, start_number: int) -> str:
    """The part of the store's log written by start number ``start_number`` and later."""
    text = store.log_text()
    marker = f"--- start #{start_number}:"
    index = text.find(marker)
    assert index >= 0, f"no {marker!r} in {store.log_path}"
    return text[index:]
