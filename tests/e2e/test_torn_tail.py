"""Recovery from damaged files, with the store stopped (kill -9 or SIGTERM) and restarted.

The contract (README "Durability", streams/storage/recovery.py): at start the store re-validates
every batch after its recovery checkpoint and cuts a torn tail at the first invalid batch,
logging how many bytes it dropped; damage *below* the checkpoint (acknowledged data) is never
truncated: that partition goes offline (KAFKA_STORAGE_ERROR) and the rest keeps serving. Index
files are caches, rebuilt from the log when missing or wrong.

Every partition of a topic gets a different kind of damage, so one restart checks many cases.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as CTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.e2e._support import (
    DROPPED_RE,
    checkpoint,
    dir_digest,
    partition_dir,
    segment_logs,
    store_log_since,
    validate_log_files,
    wait_until,
)
from tests.e2e._wire import (
    KAFKA_STORAGE_ERROR,
    NONE,
    Batch,
    WireClient,
    build_batch,
    decode_records,
    split_batches,
)
from tests.support._proc import REPO_ROOT, popen
from tests.support.store import StoreProcess

pytestmark = pytest.mark.timeout(180)

BASE_TS = 1_700_000_000_000


@dataclass
class Seeded:
    """What was produced to one partition: its batches as stored (bytes from the segment file)."""

    topic: str
    partition: int
    batches: list[Batch]

    @property
    def end(self) -> int:
        return self.batches[-1].last_offset + 1 if self.batches else 0


def _records(topic: str, partition: int, i: int, rng: random.Random) -> list[tuple[bytes, bytes, list]]:
    return [
        (
            f"k{rng.randrange(10)}".encode(),
            f"{topic}/{partition}/batch{i}/rec{j}|".encode() + rng.randbytes(rng.randrange(10, 200)),
            [("i", str(i).encode())] if j % 2 else [],
        )
        for j in range(rng.randrange(1, 6))
    ]


def _produce_batches(
    client: WireClient, topic: str, partition: int, count: int, rng: random.Random, first: int = 0
) -> None:
    for i in range(first, first + count):
        batch = build_batch(_records(topic, partition, i, rng), timestamp=BASE_TS + 1000 * i, compression=i % 2 * 4)
        error, _ = client.produce(topic, partition, batch)
        assert error == NONE, f"produce to {topic}-{partition} failed with {error}"


def _stored(store: StoreProcess, topic: str, partition: int) -> Seeded:
    """The partition's batches as the segment files hold them (whole, CRC-valid, contiguous)."""
    return Seeded(topic, partition, validate_log_files(store.data_dir, topic, partition))


def _fetched(client: WireClient, topic: str, partition: int) -> list[Batch]:
    hw, batches = client.fetch_all(topic, partition)
    assert (batches[-1].last_offset + 1 if batches else 0) == hw
    return batches


def _drops(store: StoreProcess, start_number: int) -> dict[str, tuple[int, int]]:
    """Partition dir name -> (bytes dropped, offset) from the WARNINGs of start ``start_number``."""
    out: dict[str, tuple[int, int]] = {}
    for m in DROPPED_RE.finditer(store_log_since(store, start_number)):
        name = Path(m["dir"]).name
        assert name not in out, f"two drop lines for {name}"
        out[name] = (int(m["bytes"]), int(m["offset"]))
    return out


def _crash_with_unsynced_tail(store: StoreProcess, topic: str, partitions: int, rng: random.Random) -> None:
    """Leave every partition's last batch above the recovery checkpoint, then kill -9.

    The store writes its checkpoint at start and every few seconds; produce one more batch right
    after a start and kill at once. If a periodic checkpoint slipped in between (it records the
    recovery point = fsynced offset), do it again, so the test does not depend on timing.
    """
    for attempt in range(3):
        store.start()
        with WireClient(store.bootstrap) as client:
            for p in range(partitions):
                _produce_batches(client, topic, p, 1, rng, first=1000 + attempt)
        store.kill()
        points = checkpoint(store.data_dir)
        tails = {p: _stored(store, topic, p).batches[-1].base_offset for p in range(partitions)}
        if all(points.get((topic, p), 0) <= tails[p] for p in range(partitions)):
            return
    raise AssertionError(f"the recovery checkpoint always covered the tail: {points} vs tails {tails}")


# -- torn tail after kill -9 -----------------------------------------------------------------------


def _damage_cases(rng: random.Random) -> list[tuple[str, object]]:
    """(kind, parameter) per partition: cuts inside the 61-byte header and in the records, junk, flips."""
    cases: list[tuple[str, object]] = [("cut", c) for c in (1, 8, 11, 12, 16, 20, 21, 40, 57, 60, 61)]
    cases += [("cut", rng.randrange(1, 61)) for _ in range(2)]
    cases += [("cut", "random") for _ in range(4)]
    cases += [("cut", "last-byte"), ("cut", 0)]
    cases += [("junk", n) for n in (1, 12, 60, 61, rng.randrange(62, 500))]
    cases += [("junk", "fake-header")]
    # PartitionLeaderEpoch (bytes 12-15) is neither checksummed nor checked: a flip there is not
    # detectable by any Kafka recovery, so flips target every other field of the header and records.
    cases += [("flip", pos) for pos in (0, 7, 8, 11, 16, 17, 20, 21, 23, 27, 57, 60)]
    cases += [("flip", "random-record-byte") for _ in range(3)]
    return cases


def _apply(path: Path, tail: Batch, kind: str, param: object, rng: random.Random) -> tuple[int, int, bool]:
    """Damage ``path`` whose last batch is ``tail``; returns (expected dropped bytes, first lost offset, dropped?)."""
    size = path.stat().st_size
    assert tail.position + len(tail.raw) == size
    if kind == "cut":
        if param == "random":
            cut = rng.randrange(62, len(tail.raw))
        elif param == "last-byte":
            cut = len(tail.raw) - 1
        else:
            assert isinstance(param, int)
            cut = param
        os.truncate(path, tail.position + cut)
        return cut, tail.base_offset, cut > 0
    if kind == "junk":
        if param == "fake-header":
            # A header that claims a plausible next batch (right offset, small length), bad CRC.
            junk = tail.raw[:61]
            junk = (tail.last_offset + 1).to_bytes(8, "big") + (49 + 20).to_bytes(4, "big") + junk[12:] + bytes(20)
        else:
            assert isinstance(param, int)
            junk = rng.randbytes(param)
        with path.open("ab") as f:
            f.write(junk)
        return len(junk), tail.last_offset + 1, True
    assert kind == "flip"
    pos = rng.randrange(61, len(tail.raw)) if param == "random-record-byte" else param
    assert isinstance(pos, int) and not 12 <= pos < 16
    with path.open("r+b") as f:
        f.seek(tail.position + pos)
        byte = f.read(1)[0]
        f.seek(tail.position + pos)
        f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    return len(tail.raw), tail.base_offset, True


def test_torn_tail_after_kill_9_is_cut_at_the_first_bad_batch(store_factory, rng) -> None:
    cases = _damage_cases(rng)
    topic = "torn"
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic(topic, len(cases)) == NONE
        assert client.create_topic("bystander", 1) == NONE
        for p in range(len(cases)):
            _produce_batches(client, topic, p, rng.randrange(3, 8), rng)
        _produce_batches(client, "bystander", 0, 5, rng)
    assert store.stop() == 0
    _crash_with_unsynced_tail(store, topic, len(cases), rng)

    before = {p: _stored(store, topic, p) for p in range(len(cases))}
    bystander = _stored(store, "bystander", 0)
    expected: dict[int, tuple[int, int, bool]] = {}
    for p, (kind, param) in enumerate(cases):
        expected[p] = _apply(segment_logs(store.data_dir, topic, p)[-1], before[p].batches[-1], kind, param, rng)

    store.start()
    drops = _drops(store, store.starts)
    with WireClient(store.bootstrap) as client:
        for p, (kind, param) in enumerate(cases):
            what = f"partition {p} ({kind} {param})"
            nbytes, first_lost, dropped = expected[p]
            tail = before[p].batches[-1]
            if dropped:
                assert drops.get(f"{topic}-{p}") == (nbytes, first_lost), (
                    f"{what}: expected a log line 'dropped {nbytes} bytes ... at offset {first_lost}', "
                    f"found {drops.get(f'{topic}-{p}')}"
                )
            else:
                assert f"{topic}-{p}" not in drops, f"{what}: nothing was damaged, but the store dropped data"
            survivors = [b for b in before[p].batches if b.last_offset < first_lost]
            fetched = _fetched(client, topic, p)
            assert [b.raw for b in fetched] == [b.raw for b in survivors], f"{what}: surviving batches differ"
            assert [b.raw for b in validate_log_files(store.data_dir, topic, p)] == [b.raw for b in survivors]
            # The next record gets the first lost offset: no gap, no reuse of a surviving offset.
            error, base = client.produce(topic, p, build_batch([(b"next", b"after-recovery", [])], timestamp=BASE_TS))
            assert (error, base) == (NONE, first_lost), f"{what}: next produce got {(error, base)}, tail was {tail}"
        assert _fetched(client, "bystander", 0) == bystander.batches
        assert "bystander-0" not in drops
    # A clean restart after recovery has nothing left to repair.
    assert store.stop() == 0
    store.start()
    assert not _drops(store, store.starts), "a second start dropped data again"
    with WireClient(store.bootstrap) as client:
        for p in range(len(cases)):
            last = decode_records(b"".join(b.raw for b in _fetched(client, topic, p)))[-1]
            assert last.value == b"after-recovery"


# -- damage to checkpointed data after a clean shutdown --------------------------------------------


def _seed_clean(store_factory, rng, partitions: int) -> tuple[StoreProcess, dict[int, Seeded], Seeded]:
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("acked", partitions) == NONE
        assert client.create_topic("other", 1) == NONE
        for p in range(partitions):
            _produce_batches(client, "acked", p, 6, rng)
        _produce_batches(client, "other", 0, 4, rng)
    assert store.stop() == 0, "SIGTERM must stop the store cleanly"
    points = checkpoint(store.data_dir)
    seeded = {p: _stored(store, "acked", p) for p in range(partitions)}
    for p, s in seeded.items():
        assert points[("acked", p)] == s.end, "after a clean shutdown everything must be checkpointed"
    return store, seeded, _stored(store, "other", 0)


def _flip(path: Path, position: int) -> None:
    with path.open("r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x5A]))


def _assert_offline(store: StoreProcess, client: WireClient, topic: str, p: int, files: dict) -> None:
    """Every API reports KAFKA_STORAGE_ERROR for the partition, and its files stay as they were."""
    meta = client.metadata([topic])
    assert meta[topic][1][p] == KAFKA_STORAGE_ERROR, f"Metadata for {topic}-{p}: {meta}"
    error, _, records = client.fetch(topic, p, 0)
    assert (error, records) == (KAFKA_STORAGE_ERROR, b""), f"Fetch {topic}-{p}: error {error}"
    error, _ = client.produce(topic, p, build_batch([(b"k", b"must not land", [])], timestamp=BASE_TS))
    assert error == KAFKA_STORAGE_ERROR, f"Produce {topic}-{p}: error {error}"
    error, _, _ = client.list_offset(topic, p, -1)
    assert error == KAFKA_STORAGE_ERROR, f"ListOffsets {topic}-{p}: error {error}"
    assert dir_digest(partition_dir(store.data_dir, topic, p)) == files, f"{topic}-{p}: files were modified"
    log = store_log_since(store, store.starts)
    assert f"{topic}-{p}" in log and "offline" in log, f"the store did not log why {topic}-{p} is offline"


def _assert_serving(client: WireClient, seeded: Seeded) -> None:
    assert _fetched(client, seeded.topic, seeded.partition) == seeded.batches
    batch = build_batch([(b"k", b"still-writable", [])], timestamp=BASE_TS)
    assert client.produce(seeded.topic, seeded.partition, batch) == (NONE, seeded.end)


def test_damage_below_the_checkpoint_takes_only_that_partition_offline_and_is_never_truncated(
    store_factory, rng
) -> None:
    store, seeded, other = _seed_clean(store_factory, rng, 5)
    # 0: junk after a clean shutdown is above the recovery point: cut, like any torn tail.
    path0 = segment_logs(store.data_dir, "acked", 0)[-1]
    with path0.open("ab") as f:
        f.write(rng.randbytes(100))
    # 1: the last (checkpointed) batch loses its end: acknowledged data is missing.
    tail1 = seeded[1].batches[-1]
    os.truncate(segment_logs(store.data_dir, "acked", 1)[-1], tail1.position + rng.randrange(1, len(tail1.raw)))
    # 2: a checked header field (the length) of a middle batch is corrupt.
    _flip(segment_logs(store.data_dir, "acked", 2)[-1], seeded[2].batches[2].position + 10)
    # 3: the base offset of a middle batch is corrupt.
    _flip(segment_logs(store.data_dir, "acked", 3)[-1], seeded[3].batches[3].position + 7)
    # 4: untouched.
    files = {p: dir_digest(partition_dir(store.data_dir, "acked", p)) for p in (1, 2, 3)}

    store.start()
    drops = _drops(store, store.starts)
    assert drops == {"acked-0": (100, seeded[0].end)}, drops
    with WireClient(store.bootstrap) as client:
        _assert_serving(client, seeded[0])
        for p in (1, 2, 3):
            _assert_offline(store, client, "acked", p, files[p])
        _assert_serving(client, seeded[4])
        _assert_serving(client, other)
        assert client.metadata(["acked"])["acked"][1][4] == NONE
    # What real clients see: a kafka-python producer gets no acknowledgement for the offline
    # partition (KafkaStorageError is retriable, so it retries until its delivery timeout) ...
    producer = KafkaProducer(
        bootstrap_servers=store.bootstrap,
        acks="all",
        delivery_timeout_ms=3000,
        request_timeout_ms=1000,
        linger_ms=0,
        retry_backoff_ms=100,
    )
    try:
        bad = producer.send("acked", value=b"to an offline partition", partition=2)
        good = producer.send("acked", value=b"to a healthy partition", partition=4)
        assert good.get(timeout=30).offset == seeded[4].end + 1
        with pytest.raises(Exception) as failure:
            bad.get(timeout=30)
        assert "Storage" in type(failure.value).__name__ or "Timeout" in type(failure.value).__name__, failure.value
    finally:
        producer.close(timeout=5)
    # ... and a librdkafka consumer assigned to it and to a healthy partition reads the healthy one
    # and nothing from it (the Metadata says: no leader, KAFKA_STORAGE_ERROR). kafka-python's
    # consumer, by contrast, stops fetching *every* assigned partition while one has no leader:
    # a client limitation, which is why this uses librdkafka.
    consumer = Consumer({"bootstrap.servers": store.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    seen = set()
    try:
        consumer.assign([CTopicPartition("acked", 2, OFFSET_BEGINNING), CTopicPartition("acked", 4, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        while len(seen) < seeded[4].end + 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                seen.add((msg.partition(), msg.offset()))
    finally:
        consumer.close()
    assert seen == {(4, o) for o in range(seeded[4].end + 2)}, sorted(seen)
    # Offline is sticky and harmless: a clean restart leaves the damaged files alone again.
    assert store.stop() == 0
    store.start()
    with WireClient(store.bootstrap) as client:
        for p in (1, 2, 3):
            _assert_offline(store, client, "acked", p, files[p])


@pytest.mark.parametrize("first_access", ["fetch", "background-scrub"])
def test_flipped_record_byte_below_the_checkpoint_is_reported_not_served(store_factory, rng, first_access) -> None:
    """Recovery only header-checks data below the recovery point; its CRCs are verified before the
    first read and by a background scrub. Either way, the corrupt batch is never served."""
    store, seeded, other = _seed_clean(store_factory, rng, 2)
    victim = seeded[0].batches[2]
    path = segment_logs(store.data_dir, "acked", 0)[-1]
    _flip(path, victim.position + rng.randrange(61, len(victim.raw)))
    files = dir_digest(partition_dir(store.data_dir, "acked", 0))
    store.start()
    assert not _drops(store, store.starts)
    with WireClient(store.bootstrap) as client:
        if first_access == "fetch":
            error, _, records = client.fetch("acked", 0, 0)
            assert (error, records) == (KAFKA_STORAGE_ERROR, b""), f"the corrupt partition was served (error {error})"
        else:
            wait_until(
                lambda: client.metadata(["acked"])["acked"][1][0] == KAFKA_STORAGE_ERROR,
                30,
                "the background scrub to take the corrupt partition offline",
            )
        _assert_serving(client, seeded[1])
        _assert_serving(client, other)
        _assert_offline(store, client, "acked", 0, files)


# -- index files are caches ------------------------------------------------------------------------


def _index_snapshot(client: WireClient, topic: str, records_by_offset: dict[int, int], starts: list[int]):
    fetches = {}
    for start in starts:
        error, _, raw = client.fetch(topic, 0, start, max_bytes=3000)
        assert error == NONE
        fetches[start] = raw
    times = {}
    for ts in [BASE_TS - 1, *sorted(set(records_by_offset.values())), BASE_TS + 10**9]:
        for probe in (ts, ts + 1):
            times[probe] = client.list_offset(topic, 0, probe)
    return fetches, times


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
def test_missing_or_corrupt_index_files_are_rebuilt(store_factory, rng, stop) -> None:
    topic = "indexed"
    store = store_factory(["--segment-bytes", "20000"])
    with WireClient(store.bootstrap) as client:
        assert client.create_topic(topic, 1) == NONE
        for i in range(80):
            recs = [(b"k", rng.randbytes(rng.randrange(100, 600)), [("n", b"%d" % i)]) for _ in range(3)]
            # Timestamps go up and down (CreateTime is the producer's), so the time index matters.
            ts = BASE_TS + 1000 * i + (5000 if i % 7 == 3 else 0)
            assert client.produce(topic, 0, build_batch(recs, timestamp=ts, compression=i % 3))[0] == NONE
        hw, batches = client.fetch_all(topic, 0)
        records = decode_records(b"".join(b.raw for b in batches))
        by_offset = {r.offset: r.timestamp for r in records}
        starts = sorted({0, hw - 1, *rng.sample(range(hw), 40)})
        fetches, times = _index_snapshot(client, topic, by_offset, starts)
    # offsets_for_times answers as Kafka does: the first offset whose timestamp is >= the target.
    for target, (error, offset, ts) in times.items():
        want = next(((r.offset, r.timestamp) for r in records if r.timestamp >= target), (-1, -1))
        assert (error, offset, ts) == (NONE, *want), f"ListOffsets({target}) before any damage"
    segments = segment_logs(store.data_dir, topic, 0)
    assert len(segments) >= 4, "expected several segments (--segment-bytes)"
    if stop == "kill":
        store.kill()
    else:
        assert store.stop() == 0
    pristine = {p.name: p.read_bytes() for p in partition_dir(store.data_dir, topic, 0).iterdir()}
    indexes = sorted(partition_dir(store.data_dir, topic, 0).glob("*.*index"))
    assert any(len(pristine[p.name]) > 0 for p in indexes), "no index entries: nothing to damage"
    damages = ["delete", "odd-size", "garbage", "truncate-entry", "zero", "extend"]
    for i, path in enumerate(indexes):
        kind = damages[i % len(damages)]
        data = pristine[path.name]
        if kind == "delete":
            path.unlink()
        elif kind == "odd-size":
            path.write_bytes(data[: max(len(data) - 3, 0)] + b"\x01")
        elif kind == "garbage":
            path.write_bytes(rng.randbytes(max(len(data), 24)))
        elif kind == "truncate-entry":
            path.write_bytes(data[: len(data) // 2 // 12 * 12])
        elif kind == "zero":
            path.write_bytes(bytes(len(data) + 24))
        else:
            path.write_bytes(data + b"\x7f\xff\xff\xf0" * 6)
    logs_before = {p.name: pristine[p.name] for p in segments}

    store.start()
    assert not _drops(store, store.starts), "index damage must not cost log data"
    with WireClient(store.bootstrap) as client:
        fetches_after, times_after = _index_snapshot(client, topic, by_offset, starts)
    for start in starts:
        assert fetches_after[start] == fetches[start], f"fetch from offset {start} differs after the index rebuild"
        got = split_batches(fetches_after[start], allow_partial=True)
        assert got and got[0].base_offset <= start <= got[0].last_offset
    assert times_after == times, "offsets_for_times answers changed after the index rebuild"
    # The same through a real client's offsets_for_times.
    consumer = KafkaConsumer(bootstrap_servers=store.bootstrap, group_id=None)
    try:
        tp = TopicPartition(topic, 0)
        for target in rng.sample(sorted(times), 8):
            found = consumer.offsets_for_times({tp: target})[tp]
            want = next(((r.offset, r.timestamp) for r in records if r.timestamp >= target), None)
            got = None if found is None else (found.offset, found.timestamp)
            assert got == want, f"offsets_for_times({target}): {got}, expected {want}"
    finally:
        consumer.close()
    for seg in segments:
        assert seg.read_bytes() == logs_before[seg.name], f"{seg.name} changed"
    assert all(p.stat().st_size % 4 == 0 for p in partition_dir(store.data_dir, topic, 0).glob("*.*index"))


def test_fetches_from_every_offset_agree_with_the_segment_files(store_factory, rng) -> None:
    """A Fetch returns the segment bytes themselves, starting with the batch holding the offset."""
    store = store_factory(["--segment-bytes", "8000"])
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("bytes", 1) == NONE
        _produce_batches(client, "bytes", 0, 40, rng)
        on_disk = validate_log_files(store.data_dir, "bytes", 0)
        hw = on_disk[-1].last_offset + 1
        for offset in range(hw):
            error, got_hw, raw = client.fetch("bytes", 0, offset, max_bytes=1)
            assert (error, got_hw) == (NONE, hw)
            holding = next(b for b in on_disk if b.base_offset <= offset <= b.last_offset)
            assert raw == holding.raw, f"fetch at {offset} is not the stored batch"


def test_segment_files_left_by_a_crash_during_a_roll_are_repaired(store_factory, rng) -> None:
    """A crash while rolling can leave a new segment that is empty, holds a torn first batch, or
    (after a bad restore) starts at the wrong offset; the log must continue at its end."""
    topic = "rolled"
    cases = ["empty-next-segment", "torn-next-segment", "gap-segment", "stray-non-segment-file"]
    store = store_factory(["--segment-bytes", "4000"])
    with WireClient(store.bootstrap) as client:
        assert client.create_topic(topic, len(cases)) == NONE
        for p in range(len(cases)):
            _produce_batches(client, topic, p, 30, rng)
    assert store.stop() == 0
    seeded = {p: _stored(store, topic, p) for p in range(len(cases))}
    expected_drop: dict[int, int] = {}
    for p, case in enumerate(cases):
        d = partition_dir(store.data_dir, topic, p)
        assert len(segment_logs(store.data_dir, topic, p)) >= 3, "expected several segments"
        end = seeded[p].end
        sample = seeded[p].batches[1].raw
        if case == "empty-next-segment":
            (d / f"{end:020d}.log").write_bytes(b"")
        elif case == "torn-next-segment":
            torn = end.to_bytes(8, "big") + sample[8:][: rng.randrange(10, len(sample) - 8)]
            (d / f"{end:020d}.log").write_bytes(torn)
            expected_drop[p] = len(torn)
        elif case == "gap-segment":
            stray = (end + 100).to_bytes(8, "big") + sample[8:]
            (d / f"{end + 100:020d}.log").write_bytes(stray)
            expected_drop[p] = len(stray)
        else:
            (d / "notes.log").write_bytes(b"not a segment")
    store.start()
    drops = _drops(store, store.starts)
    assert {int(name.rsplit("-", 1)[1]): n for name, (n, _) in drops.items()} == expected_drop, drops
    with WireClient(store.bootstrap) as client:
        for p, case in enumerate(cases):
            assert _fetched(client, topic, p) == seeded[p].batches, case
            batch = build_batch([(b"k", b"after", [])], timestamp=BASE_TS)
            assert client.produce(topic, p, batch) == (NONE, seeded[p].end), case
            assert client.fetch_all(topic, p)[0] == seeded[p].end + 1, case


def _kill_during_recovery(store: StoreProcess, delay: float) -> str:
    """Run the store's command, SIGKILL it ``delay`` s after it starts opening the data dir; its log."""
    log_path = store.work_dir / "interrupted.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        proc = popen(store.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(
            lambda: b"opening store" in log_path.read_bytes() or proc.poll() is not None,
            30,
            "the store to start opening its data dir",
        )
        time.sleep(delay)
    finally:
        proc.kill()
        proc.wait(10)
    return log_path.read_text(errors="replace")


def test_kill_9_during_startup_recovery_is_harmless(store_factory, rng) -> None:
    """Compound failure: the store is killed again and again while it recovers a torn log."""
    store = store_factory()
    one = build_batch([(b"k", b"v" * 20, [("h", b"1")])], timestamp=BASE_TS)
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("big", 2) == NONE
        for p in range(2):
            for _ in range(3):  # 12,000 small batches per partition: recovery takes a while
                assert client.produce("big", p, one * 4000)[0] == NONE
    store.kill()
    before = {p: _stored(store, "big", p) for p in range(2)}
    path = segment_logs(store.data_dir, "big", 0)[-1]
    with path.open("ab") as f:
        f.write(one[: rng.randrange(1, len(one))])  # a torn last batch above the checkpoint
    logs = [_kill_during_recovery(store, delay) for delay in (0.0, 0.03, rng.uniform(0, 0.3))]
    store.start()
    logs.append(store_log_since(store, store.starts))
    assert any(re.search(r"big-0: dropped \d+ bytes", text) for text in logs), "the torn tail was never cut"
    with WireClient(store.bootstrap) as client:
        for p in range(2):
            assert _fetched(client, "big", p) == before[p].batches, f"partition {p} lost or changed data"
            assert client.produce("big", p, one) == (NONE, before[p].end)
