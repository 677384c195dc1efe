"""A really full disk (research/reliability.md test 17): the store's data dir on a small tmpfs.

While a kafka-python producer (acks=all) sends, a ballast file takes every free byte of the
tmpfs, and is deleted again. Expected: produce requests fail with a retriable error
(KAFKA_STORAGE_ERROR) instead of the store crashing or corrupting its log; once space is free
the store accepts writes again; every acknowledged record is readable at its offset.

Needs root to mount the tmpfs; skipped (with the reason) only when mounting is not permitted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from tests.chaos.disk import Tmpfs, TmpfsUnavailable, fill_with_ballast
from tests.e2e._support import read_all_kafka_python, validate_log_files

pytestmark = pytest.mark.timeout(120)

TOPIC = "full"
PARTITIONS = 2


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    fs = Tmpfs(tmp_path / "data", size_mb=8)
    try:
        fs.mount()
    except TmpfsUnavailable as exc:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test: {exc}")
    try:
        yield fs
    finally:
        fs.unmount()


def test_full_disk_gives_retriable_errors_and_loses_nothing(tmpfs: Tmpfs, store_factory) -> None:
    store = store_factory(["--default-partitions", str(PARTITIONS)], data_dir=tmpfs.path)
    try:
        producer = KafkaProducer(
            bootstrap_servers=store.bootstrap, acks="all", retries=0, linger_ms=1, request_timeout_ms=10_000
        )
        acked: dict[tuple[int, int], bytes] = {}
        errors: list[str] = []
        counter = 0

        def send(n: int) -> None:
            nonlocal counter
            futures = []
            for _ in range(n):
                counter += 1
                value = f"v{counter}|".encode() + b"x" * 300
                futures.append((value, producer.send(TOPIC, value=value)))
            for value, fut in futures:
                try:
                    meta = fut.get(timeout=30)
                except KafkaError as exc:
                    assert getattr(exc, "retriable", False), f"a non-retriable error on a full disk: {exc!r}"
                    errors.append(type(exc).__name__)
                else:
                    acked[(meta.partition, meta.offset)] = value

        send(200)
        ballast = fill_with_ballast(tmpfs.path, ".ballast")
        assert tmpfs.free_bytes() < 64 * 1024, f"the ballast left {tmpfs.free_bytes()} bytes free"
        for _ in range(20):
            send(50)
            assert store.is_running(), f"the store exited on a full disk:\n{store.log_text()[-3000:]}"
            if len(errors) >= 20:
                break
        assert errors, "no produce request failed although the disk was full"
        assert set(errors) <= {"KafkaStorageError"}, f"unexpected errors on a full disk: {sorted(set(errors))}"
        during = len(acked)
        ballast.unlink()

        deadline = time.monotonic() + 30
        while len(acked) < during + 200:
            assert time.monotonic() < deadline, f"writes did not resume after space was freed ({errors[-3:]})"
            send(50)
        producer.close()
        assert store.is_running()

        records = read_all_kafka_python(store.bootstrap, TOPIC, range(PARTITIONS))
        present = {(p, r.offset): r.value for p, recs in records.items() for r in recs}
        lost = sorted(k for k, v in acked.items() if present.get(k) != v)
        assert not lost, f"{len(lost)} acknowledged record(s) lost or changed: {lost[:5]}"
        for p in range(PARTITIONS):
            validate_log_files(store.data_dir, TOPIC, p)
        store.restart()  # and the log the full disk left behind recovers cleanly
        assert "partition offline" not in store.log_text()
        assert read_all_kafka_python(store.bootstrap, TOPIC, range(PARTITIONS)) == records
    finally:
        store.stop()
