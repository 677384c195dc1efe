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
import threading
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.protocol.admin.topics import DeleteTopicsRequest, DeleteTopicsResponse

from tests.e2e._support import Rec, read_all_kafka_python, segment_logs, validate_log_files, wait_until
from tests.e2e._traffic import NON_IDEMPOTENT, PRODUCERS, History, Traffic
from tests.e2e._wire import NONE, WireClient, build_batch, init_producer_id

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TOPIC = "crash"
PARTITIONS = 4
ROUNDS = 5
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


@pytest.mark.parametrize("store_args", [[], ["--segment-bytes", "65536"]], ids=["one-segment", "rolling-segments"])
def test_acknowledged_records_survive_kill_9_under_concurrent_acks_all_traffic(store_factory, rng, store_args) -> None:
    """With small segments the kills also land during segment rolls (new file + directory fsync)."""
    store = store_factory(store_args)
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
    if store_args:
        assert len(segment_logs(store.data_dir, TOPIC, 0)) > ROUNDS, "the segments did not roll"
    assert len(history.acked) >= ROUNDS * ACKS_PER_ROUND
    assert {who for _, _, _, who in history.acked} >= {*PRODUCERS, "probe"}
    assert history.seen, "the tailing consumer never saw a record: the visibility check checked nothing"


def test_producer_ids_are_never_handed_out_twice_across_kill_9(store_factory) -> None:
    """A reused producer id would make the new producer's sequence 0 collide with the old one's
    state rebuilt from the log (OUT_OF_ORDER_SEQUENCE, or a retry mistaken for a duplicate)."""
    store = store_factory()
    handed_out: set[int] = set()
    for rnd in range(4):
        with WireClient(store.bootstrap) as client:
            for _ in range(3 + rnd):
                error, pid, epoch = init_producer_id(client)
                assert error == NONE and pid >= 0 and epoch >= 0
                assert pid not in handed_out, f"round {rnd}: producer id {pid} was handed out before a crash"
                handed_out.add(pid)
        store.restart(kill=rnd % 2 == 0)


def test_topic_create_and_delete_survive_kill_9_whole(store_factory) -> None:
    """Created and deleted topics are all-or-nothing after a crash right after the answer."""
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("doomed", 2) == NONE
        assert client.produce("doomed", 1, build_batch([(b"k", b"v", [])], timestamp=1))[0] == NONE
    for rnd in range(3):
        with WireClient(store.bootstrap) as client:
            assert client.create_topic(f"fresh-{rnd}", 3) == NONE
            if rnd == 0:
                req = DeleteTopicsRequest(topic_names=["doomed"], timeout_ms=5000)
                assert client.call(req, DeleteTopicsResponse, 3).responses[0].error_code == NONE
        store.kill()
        store.start()
        with WireClient(store.bootstrap) as client:
            meta = client.metadata(None)
            for r in range(rnd + 1):
                name = f"fresh-{r}"
                assert meta.get(name) == (NONE, dict.fromkeys(range(3), NONE)), f"{name} after kill -9: {meta}"
                for p in range(3):
                    error, _ = client.produce(name, p, build_batch([(b"k", b"v", [])], timestamp=1))
                    assert error == NONE, f"{name}-{p} is not writable after kill -9: {error}"
            if rnd == 0:
                assert "doomed" not in meta, f"a deleted topic came back after kill -9: {meta}"
                assert not any((store.data_dir / f"doomed-{p}").exists() for p in range(2)), "its files are back"
                # Re-creating the deleted topic starts it empty (no resurrected data).
                assert client.create_topic("doomed", 2) == NONE
                assert client.fetch_all("doomed", 1) == (0, [])


def _committer(bootstrap: str, group: str, stop: threading.Event, state: dict, errors: list) -> None:
    """Commit ever-growing offsets (with metadata naming them) until the store goes away."""
    tps = [TopicPartition("committed", p) for p in range(2)]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, request_timeout_ms=5000
    )
    try:
        consumer.assign(tps)
        n = state[group]["acked"]
        while not stop.is_set():
            n += 1
            state[group]["attempted"] = n
            try:
                consumer.commit({tp: OffsetAndMetadata(n + tp.partition, f"n={n}", -1) for tp in tps})
            except Exception:
                if stop.is_set():
                    return
                time.sleep(0.01)
                n -= 1
                continue
            state[group]["acked"] = n
    except Exception as exc:
        errors.append(f"{group}: {exc!r}")
    finally:
        consumer.close(autocommit=False)


def test_committed_offsets_survive_kill_9_as_the_old_or_the_new_value(store_factory, rng) -> None:
    """Reliability plan #18: kill -9 during OffsetCommit: the committed offset is the last
    acknowledged one or the one in flight, never older, never garbage."""
    store = store_factory()
    with WireClient(store.bootstrap) as client:
        assert client.create_topic("committed", 2) == NONE
        for p in range(2):
            assert client.produce("committed", p, build_batch([(b"k", b"v", [])] * 5, timestamp=1))[0] == NONE
    groups = [f"g{i}" for i in range(3)]
    state = {g: {"acked": 0, "attempted": 0} for g in groups}
    for rnd in range(3):
        stop = threading.Event()
        errors: list[str] = []
        threads = [threading.Thread(target=_committer, args=(store.bootstrap, g, stop, state, errors)) for g in groups]
        start = {g: state[g]["acked"] for g in groups}
        for t in threads:
            t.start()
        try:
            wait_until(
                lambda start=start, errors=errors: errors or all(state[g]["acked"] >= start[g] + 20 for g in groups),
                60,
                lambda rnd=rnd: f"round {rnd}: commits acknowledged {state}",
            )
            time.sleep(rng.uniform(0, 0.1))
        finally:
            store.kill()
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors, errors
        store.start()
        for g in groups:
            consumer = KafkaConsumer(bootstrap_servers=store.bootstrap, group_id=g, enable_auto_commit=False)
            try:
                for p in range(2):
                    got = consumer.committed(TopicPartition("committed", p), metadata=True)
                    acked, attempted = state[g]["acked"], state[g]["attempted"]
                    assert got is not None, f"round {rnd}: group {g} lost its committed offset for partition {p}"
                    n = got.offset - p
                    assert acked <= n <= attempted, (
                        f"round {rnd}: group {g} partition {p} has committed offset for n={n}, but n={acked} was "
                        f"acknowledged and n={attempted} was the last attempt"
                    )
                    assert got.metadata == f"n={n}", f"round {rnd}: offset and metadata disagree: {got}"
            finally:
                consumer.close(autocommit=False)
            state[g]["acked"] = max(state[g]["acked"], n)
