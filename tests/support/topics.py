"""Read a whole topic back with kafka-python, for checking what the relay (or anyone) wrote."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

__all__ = ["LogRecord", "first_occurrences", "read_topic"]


@dataclass(frozen=True)
class LogRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    timestamp: int

    @property
    def event_id(self) -> str | None:
        raw = self.headers.get("event-id")
        return raw.decode() if raw is not None else None


def read_topic(bootstrap: str, topic: str, *, min_records: int = 0, timeout: float = 30.0) -> list[LogRecord]:
    """Every record of ``topic`` (all partitions, from offset 0 to the end), waiting for ``min_records``."""
    deadline = time.monotonic() + timeout
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10_000)
    try:
        while True:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            records: list[LogRecord] = []
            if tps:
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                ends = consumer.end_offsets(tps)
                remaining = {tp for tp in tps if ends[tp] > 0}
                # Each pass may read to the end for a while even past the overall deadline, so
                # that the last pass (the one the caller gets) is complete.
                pass_deadline = max(deadline, time.monotonic() + 10)
                while remaining and time.monotonic() < pass_deadline:
                    for tp, batch in consumer.poll(timeout_ms=500, max_records=100_000).items():
                        for m in batch:
                            records.append(
                                LogRecord(m.partition, m.offset, m.key, m.value, dict(m.headers), m.timestamp)
                            )
                            if m.offset + 1 >= ends[tp]:
                                remaining.discard(tp)
            if len(records) >= min_records or time.monotonic() >= deadline:
                records.sort(key=lambda r: (r.partition, r.offset))
                return records
            time.sleep(0.2)
    finally:
        consumer.close()


def first_occurrences(records: list[LogRecord]) -> list[LogRecord]:
    """Each event id's first record, in log order per partition (later copies are duplicates)."""
    seen: set[str] = set()
    out = []
    for r in records:
        eid = r.event_id
        if eid is None or eid in seen:
            continue
        seen.add(eid)
        out.append(r)
    return out
