"""Idempotent producer semantics (Kafka's ProducerAppendInfo), including across a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.storage import InvalidProducerEpochError, InvalidRecordError, OutOfOrderSequenceError, Store

from .helpers import append, make_batch, open_store, read_all, record_offsets

PID = 4242


def _log(store: Store):
    store.create_topic("t", 1)
    return store.log("t", 0)


def test_retried_batch_is_a_duplicate(store: Store) -> None:
    plog = _log(store)
    first = append(plog, 3, producer_id=PID, epoch=0, sequence=0)
    append(plog, 2, producer_id=PID, epoch=0, sequence=3)
    end = plog.log_end_offset
    retry = append(plog, 3, producer_id=PID, epoch=0, sequence=0)
    assert retry.duplicate
    assert (retry.base_offset, retry.last_offset) == (first.base_offset, first.last_offset) == (0, 2)
    assert plog.log_end_offset == end
    plog.sync()
    assert record_offsets(read_all(plog)) == list(range(5))


def test_only_last_five_batches_are_remembered(store: Store) -> None:
    plog = _log(store)
    for i in range(7):
        append(plog, 1, producer_id=PID, epoch=0, sequence=i)
    assert append(plog, 1, producer_id=PID, epoch=0, sequence=2).duplicate
    with pytest.raises(OutOfOrderSequenceError):
        append(plog, 1, producer_id=PID, epoch=0, sequence=1)  # too old to be recognised


def test_out_of_order_sequence(store: Store) -> None:
    plog = _log(store)
    append(plog, 2, producer_id=PID, epoch=0, sequence=0)
    with pytest.raises(OutOfOrderSequenceError, match="expected 2"):
        append(plog, 1, producer_id=PID, epoch=0, sequence=3)
    with pytest.raises(OutOfOrderSequenceError):
        append(plog, 2, producer_id=PID, epoch=0, sequence=1)  # overlaps, not an exact retry
    assert append(plog, 1, producer_id=PID, epoch=0, sequence=2).base_offset == 2


def test_epochs(store: Store) -> None:
    plog = _log(store)
    append(plog, 1, producer_id=PID, epoch=3, sequence=0)
    append(plog, 1, producer_id=PID, epoch=3, sequence=1)
    with pytest.raises(InvalidProducerEpochError, match="fenced"):
        append(plog, 1, producer_id=PID, epoch=2, sequence=2)
    with pytest.raises(OutOfOrderSequenceError, match="sequence 0"):
        append(plog, 1, producer_id=PID, epoch=4, sequence=5)
    assert not append(plog, 1, producer_id=PID, epoch=4, sequence=0).duplicate
    with pytest.raises(InvalidProducerEpochError):
        append(plog, 1, producer_id=PID, epoch=3, sequence=2)


def test_unknown_producer_accepts_any_sequence_and_non_idempotent_is_unchecked(store: Store) -> None:
    plog = _log(store)
    assert append(plog, 1, producer_id=PID, epoch=0, sequence=77).base_offset == 0
    assert append(plog, 1, producer_id=PID, epoch=0, sequence=78).base_offset == 1
    for _ in range(3):
        assert not append(plog, 1).duplicate  # producer id -1: no checks at all


def test_sequence_wraps_at_int32_max(store: Store) -> None:
    plog = _log(store)
    top = 0x7FFFFFFF
    append(plog, 2, producer_id=PID, epoch=0, sequence=top - 1)  # sequences top-1, top
    assert append(plog, 1, producer_id=PID, epoch=0, sequence=0).base_offset == 2


def test_negative_sequence_with_producer_id(store: Store) -> None:
    plog = _log(store)
    batch, header = make_batch(1, producer_id=PID, epoch=0, sequence=0)
    header = header.__class__(**{**{f: getattr(header, f) for f in header.__slots__}, "base_sequence": -1})
    with pytest.raises(InvalidRecordError):
        plog.append(batch, header, 0, 1 << 20)


def test_duplicate_recognised_after_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    plog = _log(store)
    for i in range(4):
        append(plog, 2, producer_id=PID, epoch=1, sequence=2 * i)
    append(plog, 1, producer_id=PID + 1, epoch=0, sequence=0)
    store.close()
    store = open_store(tmp_path)
    try:
        plog = store.log("t", 0)
        retry = append(plog, 2, producer_id=PID, epoch=1, sequence=4)
        assert retry.duplicate and retry.base_offset == 4
        with pytest.raises(OutOfOrderSequenceError):
            append(plog, 1, producer_id=PID, epoch=1, sequence=9)
        with pytest.raises(InvalidProducerEpochError):
            append(plog, 1, producer_id=PID, epoch=0, sequence=0)
        assert append(plog, 1, producer_id=PID, epoch=1, sequence=8).base_offset == 9
    finally:
        store.close()


def test_producer_lru_eviction(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_producers_per_partition=3)
    try:
        plog = _log(store)
        for pid in range(1, 5):
            append(plog, 1, producer_id=pid, epoch=0, sequence=0)
        assert len(plog.producers) == 3
        assert plog.producers.epoch_of(1) is None  # evicted: treated as unknown again
        assert append(plog, 1, producer_id=1, epoch=0, sequence=0).duplicate is False
    finally:
        store.close()
