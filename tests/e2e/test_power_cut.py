"""G4 under simulated power cuts: acknowledged records survive losing any unsynced write.

The store runs as a real process with the test-only write ledger armed (``STREAMS_WRITE_LEDGER``),
kafka-python producers write with acks=all (and an acks=0 producer keeps unsynced writes in
flight), the store is SIGKILLed, and tests/chaos/powercut.py damages its data dir the way a
power cut could have: unsynced writes kept, dropped or torn in any order across files,
directory entries not yet fsynced forgotten. Seeds are fixed, so the damage decisions are the
same on every run given the same ledger. After every restart:

* the store starts (recovery never fails, no partition goes offline);
* every acknowledged record is at its acknowledged offset with the same key and value;
* no offset ever shows two different records, across all rounds;
* the store accepts writes again, at the offset right after its log end.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from tests.chaos.powercut import power_cut
from tests.e2e._support import read_all_kafka_python, validate_log_files

pytestmark = pytest.mark.timeout(120)

TOPIC = "powercut"
PARTITIONS = 3
SEEDS = (11, 12, 13, 14)
ACKED_PER_ROUND = 150


def _producer(bootstrap: str, acks: int | str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks=acks,
        linger_ms=2,
        retries=0,
        request_timeout_ms=10_000,
        max_block_ms=10_000,
    )


def _kill_mid_flood(store, rnd: int) -> None:
    """SIGKILL the store while an acks=0 producer streams, so unsynced writes are in flight."""
    flood = _producer(store.bootstrap, 0)
    for i in range(400):
        flood.send(TOPIC, key=b"flood", value=f"flood-{rnd}-{i}|".encode() * 20)
        if i == 300:
            flood.flush(timeout=10)
    store.kill()
    with contextlib.suppress(KafkaTimeoutError):  # records still queued for the dead store (acks=0)
        flood.close(timeout=1)


def _check(store, rnd: int, acked: dict, seen: dict, what: str) -> None:
    """Recovery worked: no offline partition, every acked record in place, no offset changed."""
    assert "partition offline" not in store.log_text(), f"round {rnd} ({what}): a partition went offline"
    records = read_all_kafka_python(store.bootstrap, TOPIC, range(PARTITIONS))
    for p, recs in records.items():
        for r in recs:
            previous = seen.setdefault((p, r.offset), (r.key, r.value))
            assert previous == (r.key, r.value), (
                f"round {rnd} ({what}): offset {p}/{r.offset} holds another record than before (inconsistent offset)"
            )
        offsets = [r.offset for r in recs]
        assert offsets == list(range(len(offsets))), f"round {rnd} ({what}): partition {p} offsets are not contiguous"
        validate_log_files(store.data_dir, TOPIC, p)
    present = {(p, r.offset): (r.key, r.value) for p, recs in records.items() for r in recs}
    lost = sorted(k for k, v in acked.items() if present.get(k) != v)
    assert not lost, f"round {rnd} ({what}): {len(lost)} acknowledged record(s) lost: {lost[:5]}"
    probe = _producer(store.bootstrap, "all")
    value = f"probe-{rnd}-{what}".encode()
    meta = probe.send(TOPIC, key=b"probe", value=value, partition=0).get(timeout=30)
    probe.close()
    assert meta.offset == len(records[0]), (
        f"round {rnd} ({what}): probe got offset {meta.offset}, log end {len(records[0])}"
    )
    acked[(0, meta.offset)] = (b"probe", value)


def test_power_cuts_keep_every_acknowledged_record(store_factory, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    store = store_factory(
        ["--default-partitions", str(PARTITIONS), "--segment-bytes", "16384"],
        env={"STREAMS_WRITE_LEDGER": str(ledger)},
    )
    acked: dict[tuple[int, int], tuple[bytes, bytes]] = {}
    seen: dict[tuple[int, int], tuple[bytes | None, bytes | None]] = {}
    damage = []
    for rnd, seed in enumerate(SEEDS):
        rng = random.Random(seed)
        producer = _producer(store.bootstrap, "all")
        futures = []
        for i in range(ACKED_PER_ROUND):
            key = f"k{rng.randrange(12)}".encode()
            value = f"r{rnd}-{i}|".encode() + rng.randbytes(rng.randrange(20, 400))
            futures.append((key, value, producer.send(TOPIC, key=key, value=value)))
        for key, value, fut in futures:
            meta = fut.get(timeout=30)
            acked[(meta.partition, meta.offset)] = (key, value)
        producer.close(timeout=1)
        _kill_mid_flood(store, rnd)
        if rnd % 2:
            # A plain kill -9 first: what recovery then serves must survive the next power cut,
            # although the previous incarnation never synced it (the ledger spans both).
            store.start()
            _check(store, rnd, acked, seen, "kill -9")
            _kill_mid_flood(store, rnd)
        report = power_cut(store.data_dir, ledger, random.Random(seed))
        damage.append(report)
        ledger.rename(tmp_path / f"ledger.{rnd}.jsonl")  # the next start begins a new epoch
        store.start()  # raises with the store's log if recovery fails
        _check(store, rnd, acked, seen, f"power cut: {report.summary()}")
    undone = sum(r.writes_dropped + r.writes_torn + r.entries_vanished for r in damage)
    assert undone > 0, f"the power cuts took nothing back: {[r.summary() for r in damage]}"
