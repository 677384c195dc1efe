"""``make demo`` (for now): start a store, produce and consume through it with a real Kafka client.

It shows the round trip a user will build on: a store process on a free port with its own data
directory, kafka-python's idempotent producer with acks=all (each acknowledgement means the
batch is fsynced), and an assign()-style consumer reading everything back. It then restarts the
store with kill -9 and reads the same records again from disk.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

TOPIC = "demo-orders"
EVENTS = int(os.environ.get("OUTBOX_DEMO_EVENTS", "2000"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    ready = data_dir.parent / "ready"
    ready.unlink(missing_ok=True)
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams",
                "serve",
                "--data-dir",
                str(data_dir),
                "--listen",
                f"127.0.0.1:{port}",
                "--ready-file",
                str(ready),
                "--default-partitions",
                "3",
            ],
            stdout=log_file,
            stderr=log_file,
        )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(log_path.read_text(), file=sys.stderr)
            raise SystemExit("the store did not start; its log is above")
        time.sleep(0.05)
    return proc


def _consume(bootstrap: str, partitions: int) -> list[tuple[int, int, bytes, bytes]]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, consumer_timeout_ms=3000
    )
    tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    seen: list[tuple[int, int, bytes, bytes]] = []
    while sum(1 for tp in tps if consumer.position(tp) < ends[tp]):
        for records in consumer.poll(timeout_ms=1000).values():
            seen.extend((r.partition, r.offset, r.key, r.value) for r in records)
    consumer.close()
    return seen


def main() -> int:
    from kafka import KafkaProducer

    with tempfile.TemporaryDirectory(prefix="outbox-demo-") as tmp:
        data_dir = Path(tmp) / "data"
        log_path = Path(tmp) / "store.log"
        port = _free_port()
        bootstrap = f"127.0.0.1:{port}"
        print(f"1. starting the stream store on {bootstrap} (data in {data_dir})")
        proc = _start(data_dir, port, log_path)
        try:
            print(f"2. producing {EVENTS} events with kafka-python (acks=all, idempotent)")
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
            started = time.perf_counter()
            futures = [
                producer.send(TOPIC, key=f"order-{i % 50}".encode(), value=f'{{"n": {i}}}'.encode())
                for i in range(EVENTS)
            ]
            producer.flush()
            acked = [f.get(timeout=30) for f in futures]
            elapsed = time.perf_counter() - started
            producer.close()
            print(
                f"   {len(acked)} acknowledged (fsynced) in {elapsed:.2f}s "
                f"({len(acked) / elapsed:,.0f} events/s); last offsets per partition: "
                + ", ".join(
                    f"p{p}={max(m.offset for m in acked if m.partition == p)}"
                    for p in sorted({m.partition for m in acked})
                )
            )
            print("3. consuming everything back with an assign()-style consumer")
            first = _consume(bootstrap, 3)
            print(
                f"   read {len(first)} events; e.g. {first[0][2]!r} -> {first[0][3]!r} at partition "
                f"{first[0][0]} offset {first[0][1]}"
            )
            print("4. kill -9 the store, restart it on the same data, read again")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc = _start(data_dir, port, log_path)
            second = _consume(bootstrap, 3)
            same = sorted(first) == sorted(second)
            by_key: dict[bytes, list[int]] = {}
            for _, _, key, value in sorted(second):
                by_key.setdefault(key, []).append(int(value.split(b":")[1].strip(b" }")))
            ordered = all(v == sorted(v) for v in by_key.values())
            lost = EVENTS - len({v for *_, v in second})
            print(
                f"verified: {EVENTS} events, {lost} lost, "
                f"{'identical' if same else 'DIFFERENT'} after kill -9, "
                f"{'0' if ordered else 'some'} out of order per key"
            )
            return 0 if same and ordered and lost == 0 else 1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
