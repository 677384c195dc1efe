"""G4 under kill -9: acknowledged records survive a crash of the store, exactly where they were acked.

Several real producers write concurrently with acks=all — two confluent-kafka (librdkafka)
idempotent producers with a small linger and two kafka-python producers (one idempotent, one
not) — with keys spread over every partition, while a real consumer tails the log. In every
round the store is SIGKILLed mid-traffic, restarted on the same data dir and port, and the whole
log is read back with an assign()-style consumer (no consumer groups, nothing committed).

Checked after every restart (Jepsen-style history checks, see research/reliability.md):

* every acknowledged record is at its acknowledged (partition, offset) with identical
  key/value/headers (no lost write);
* every record a consumer saw before the crash is still there, identical (visibility implies
  durability: the store never lets a consumer read past what is fsynced);
* no offset ever maps to two different records, over all rounds (no inconsistent offset);
* offsets are contiguous from 0, and the segment files hold only whole, CRC-valid batches;
* a record that is present but was not acknowledged is one a producer really sent, whole;
* records of idempotent producers are never duplicated;
* after a restart, the next produce to a partition gets exactly the next offset.
"""

from __future__ import annotations

import functools
import time
from collections import Counter

import pytest

from tests.e2e._support import Rec, read_all_kafka_python, validate_log_files, wait_until
from tests.e2e._traffic import NON_IDEMPOTENT, PRODUCERS, History, Traffic
from tests.e2e._wire import NONE, WireClient, build_batch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOPIC = "crash"
PARTITIONS = 4
ROUNDS = 6
ACKS_PER_ROUND = 400
MIN_ACKS_EACH = 30


def _next_offset_probe(bootstrap: str, rnd: int, ends: dict[int, int], history: History) -> None:
    """After a restart, one produce per partition must land exactly at the log end."""
    with WireClient(bootstrap) as client:
        for p, end in sorted(ends.items()):
            rec = Rec(b"probe", f"probe|r{rnd}|p{p}".encode(), (("probe", b"1"),))
            history.attempt("probe", rec)
            error, base = client.produce(
                TOPIC, p, build_batch([(rec.key, rec.value, rec.headers)], timestamp=int(time.time() * 1000))
            )
            assert error == NONE, f"round {rnd}: produce to partition {p} after restart failed with error {error}"
            assert base == end, (
                f"round {rnd}: after restart partition {p} ends at offset {end}, but the next produce got "
                f"offset {base} ({'a gap' if base > end else 'a reused offset'})"
            )
            history.ack(p, base, rec, "probe")


def _check(rnd: int, bootstrap: str, data_dir, history: History, ever: dict[tuple[int, int], Rec]) -> dict[int, int]:
    """Read the whole log back and check the history; returns each partition's end offset."""
    log = read_all_kafka_python(bootstrap, TOPIC, range(PARTITIONS))
    present: dict[tuple[int, int], Rec] = {}
    idempotent_values: Counter[bytes] = Counter()
    for p, records in log.items():
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records))), (
            f"round {rnd}: partition {p} offsets are not contiguous from 0: "
            f"{[o for i, o in enumerate(offsets) if o != i][:10]} out of place"
        )
        on_disk = validate_log_files(data_dir, TOPIC, p)  # whole, CRC-valid, contiguous batches
        disk_end = on_disk[-1].last_offset + 1 if on_disk else 0
        assert disk_end == len(records), (
            f"round {rnd}: partition {p} has {disk_end} offsets on disk, {len(records)} readable"
        )
        for r in records:
            rec = Rec(r.key, r.value, r.headers)
            present[(p, r.offset)] = rec
            earlier = ever.setdefault((p, r.offset), rec)
            assert earlier == rec, (
                f"round {rnd}: offset {p}/{r.offset} now holds {rec}, but held {earlier} in an earlier round"
            )
            sent = history.attempted.get(r.value or b"")
            assert sent is not None, f"round {rnd}: {p}/{r.offset} holds a record no producer sent: {rec}"
            assert sent[1] == rec, f"round {rnd}: {p}/{r.offset} holds {rec}, but the producer sent {sent[1]}"
            if sent[0] != NON_IDEMPOTENT:  # it may legitimately duplicate (retries)
                idempotent_values[r.value or b""] += 1
    duplicates = [v for v, n in idempotent_values.items() if n > 1]
    assert not duplicates, f"round {rnd}: idempotent producers' records duplicated: {duplicates[:5]}"
    lost = [(p, o, rec, who) for p, o, rec, who in history.acked if present.get((p, o)) != rec]
    assert not lost, (
        f"round {rnd}: {len(lost)} of {len(history.acked)} acknowledged records are missing or changed, e.g. "
        + "; ".join(f"{who} acked {p}/{o} {rec} -> now {present.get((p, o))}" for p, o, rec, who in lost[:5])
    )
    unseen = [(p, o, rec) for p, o, rec in history.seen if present.get((p, o)) != rec]
    assert not unseen, (
        f"round {rnd}: {len(unseen)} records a consumer read before the crash are gone or changed, e.g. {unseen[:3]}"
    )
    return {p: len(records) for p, records in log.items()}


def test_acknowledged_records_survive_kill_9_under_concurrent_acks_all_traffic(store_factory, rng) -> None:
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic(TOPIC, PARTITIONS) == NONE
    history = History()
    ever: dict[tuple[int, int], Rec] = {}
    ends = dict.fromkeys(range(PARTITIONS), 0)
    for rnd in range(ROUNDS):
        if rnd:
            _next_offset_probe(store.bootstrap, rnd, ends, history)
            ends = {p: end + 1 for p, end in ends.items()}
        traffic = Traffic(store.bootstrap, TOPIC, rnd, history, ends, rng).start()
        try:
            wait_until(
                functools.partial(traffic.enough, ACKS_PER_ROUND, MIN_ACKS_EACH),
                60,
                lambda traffic=traffic, rnd=rnd: f"round {rnd}: {traffic.status()} (store log: {store.log_path})",
            )
            assert not history.errors, history.errors
            time.sleep(rng.uniform(0, 0.2))  # kill at a random moment of the traffic
            assert store.is_running(), f"the store died on its own in round {rnd}: {store.returncode}"
        finally:
            store.kill()
            traffic.stop()
        store.start()
        ends = _check(rnd, store.bootstrap, store.data_dir, history, ever)
    assert len(history.acked) >= ROUNDS * ACKS_PER_ROUND
    assert {who for _, _, _, who in history.acked} >= {*PRODUCERS, "probe"}
    assert history.seen, "the tailing consumer never saw a record: the visibility check checked nothing"
