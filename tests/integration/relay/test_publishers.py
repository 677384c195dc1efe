"""The relay's producers at the edge the relay relies on for fencing: ``close(timeout=0)`` with
records still unacknowledged returns at once and stops the client from sending anything more."""

from __future__ import annotations

import threading
import time

import pytest

from relay.publisher import OutgoingRecord, make_publisher
from tests.support.store import StoreProcess


def _records(topic: str, n: int, tag: str) -> list[OutgoingRecord]:
    return [OutgoingRecord(topic, f"k{i}".encode(), f"{tag}-{i}".encode(), [("event-id", str(i).encode())], 0) for i in range(n)]


@pytest.mark.parametrize("kind", ["confluent", "kafka-python"])
def test_close_without_waiting_drops_unacknowledged_records(store: StoreProcess, kind: str) -> None:
    publisher = make_publisher(kind, store.bootstrap, client_id=f"close-{kind}", delivery_timeout=None)
    topic = f"close-{kind}"
    threads_before = {t.ident for t in threading.enumerate()}
    first = publisher.send(_records(topic, 5, "first"))
    result = publisher.wait(first, should_stop=lambda: False)
    assert result.errors == [None] * 5  # connected, metadata known
    store.pause()  # nothing is acknowledged from now on
    try:
        stuck = publisher.send(_records(topic, 50, "stuck"))
        deadline = time.monotonic() + 0.5
        publisher.wait(stuck, should_stop=lambda: time.monotonic() > deadline)
        started = time.monotonic()
        publisher.close(timeout=0)  # the fencing path: must not raise, must not wait for the broker
        assert time.monotonic() - started < 10
    finally:
        store.resume()
    # The client's own threads (kafka-python's sender) are gone: nothing of the dropped batch is
    # sent later by a relay that lost its buckets.
    def client_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]

    deadline = time.monotonic() + 10
    while client_threads() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not client_threads()
