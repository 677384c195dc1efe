"""NATS JetStream as a peer: a throw-away ``nats-server -js`` and nats-py load generators.

JetStream (Debian's 2.9.10) does not fsync per message: its default ``sync_interval`` is 2 minutes
and that version has no ``sync_interval: always``. Streams use file storage, one replica.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench._util import MSG_SIZE, BenchError, ReadyFn

__all__ = ["NatsServer", "create_streams", "fetch", "produce", "produce_latency"]

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_version() -> str:
    try:
        out = subprocess.run([NATS_SERVER, "--version"], capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or out.stderr.strip()
    except OSError as exc:
        return f"unavailable ({exc})"


class NatsServer:
    """One ``nats-server -js`` on a free loopback port with its store in ``work_dir``."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> NatsServer:
        from tests.support._proc import free_port, log_tail, popen, register_for_cleanup, wait_for_port

        if not Path(NATS_SERVER).exists():
            raise BenchError(f"nats-server not found ({NATS_SERVER}); apt-get install nats-server")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log_path = self.work_dir / "nats.log"
        cmd = [NATS_SERVER, "-js", "-sd", str(self.work_dir / "js"), "-a", "127.0.0.1", "-p", str(self.port)]
        with log_path.open("ab") as log:
            self.proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        register_for_cleanup(self)
        deadline = time.monotonic() + 30
        wait_for_port("127.0.0.1", self.port, 30)
        while not asyncio.run(_jetstream_ok(self.url)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise BenchError(f"nats-server did not start; log:\n{log_tail(log_path)}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


async def _quiet(_exc: Exception) -> None:
    return None


async def _jetstream_ok(url: str) -> bool:
    import nats

    try:
        nc = await nats.connect(
            url, connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False, error_cb=_quiet
        )
    except Exception:
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


def create_streams(url: str, names: list[str]) -> None:
    """One R1 file-storage stream per name, capturing the subject of the same name."""

    async def run() -> None:
        import nats
        from nats.js.api import StorageType

        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for name in names:
                await js.add_stream(name=name, subjects=[name], storage=StorageType.FILE, num_replicas=1)
        finally:
            await nc.close()

    asyncio.run(run())


async def _connect(url: str, max_pending: int = 4000) -> tuple[Any, Any]:
    import nats

    nc = await nats.connect(url, pending_size=64 * 1024 * 1024, flush_timeout=60)
    return nc, nc.jetstream(publish_async_max_pending=max_pending, timeout=60)


def produce(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    """``in_flight`` == "window": publish_async with a window of ``window`` unacknowledged messages;
    otherwise ``concurrency`` coroutines each awaiting its own ack (``js.publish``), one at a time."""
    return asyncio.run(_produce(args, counter, ready))


async def _produce(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    nc, js = await _connect(args["url"], args.get("window", 4000))
    subject: str = args["subject"]
    value = os.urandom(MSG_SIZE)
    await js.publish(subject, value)  # warm-up
    n_target: int = args["messages"]
    errors: list[str] = []
    acked = 0
    ready()
    t0 = time.monotonic()
    deadline = t0 + args["max_seconds"]
    if args.get("mode") == "window":

        def done(fut: asyncio.Future[Any]) -> None:
            nonlocal acked
            if fut.cancelled() or fut.exception() is not None:
                errors.append(repr(fut.exception()) if not fut.cancelled() else "cancelled")
            else:
                acked += 1

        sent = 0
        while sent < n_target:
            fut = await js.publish_async(subject, value)
            fut.add_done_callback(done)
            sent += 1
            if sent & 1023 == 0:
                counter.value = sent
                if time.monotonic() > deadline:
                    break
        await asyncio.wait_for(js.publish_async_completed(), args["max_seconds"] + 60)
    else:
        share = n_target // args["concurrency"]

        async def one() -> None:
            nonlocal acked
            for _ in range(share):
                try:
                    await js.publish(subject, value)
                    acked += 1
                except Exception as exc:
                    errors.append(repr(exc))
                if acked & 255 == 0:
                    counter.value = acked
                if time.monotonic() > deadline:
                    return

        await asyncio.gather(*(one() for _ in range(args["concurrency"])))
    t1 = time.monotonic()
    counter.value = acked
    await nc.close()
    return {"count": acked, "errors": len(errors), "first_error": errors[0] if errors else "", "t0": t0, "t1": t1}


def fetch(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    """Catch-up read of a whole stream through an ephemeral pull consumer without acks."""
    return asyncio.run(_fetch(args, counter, ready))


async def _fetch(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    nc, js = await _connect(args["url"])
    info = await js.stream_info(args["stream"])
    expected = min(info.state.messages, args["messages"])
    done = asyncio.Event()
    count = 0
    t0 = 0.0

    async def on_msg(_msg: Any) -> None:
        nonlocal count, t0
        if not count:
            t0 = time.monotonic()  # as for Kafka clients: the clock starts at the first message
        count += 1
        if count & 1023 == 0:
            counter.value = count
        if count >= expected:
            done.set()

    ready()
    go = time.monotonic()
    # The fastest nats-py reader measured here (~4x a pull consumer's fetch()): an ordered
    # push consumer (ephemeral, ack none, flow control) delivering to a callback.
    await js.subscribe(
        args["subject"],
        stream=args["stream"],
        ordered_consumer=True,
        cb=on_msg,
        pending_msgs_limit=1_000_000,
        pending_bytes_limit=1 << 30,
    )
    try:
        await asyncio.wait_for(done.wait(), args["max_seconds"])
    except TimeoutError:
        pass
    t1 = time.monotonic()
    counter.value = count
    await nc.close()
    return {"count": max(0, count - 1), "errors": 0, "t0": t0 or t1, "t1": t1, "expected": expected, "read": count,
            "startup": (t0 or t1) - go}


def produce_latency(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    """Open-loop publish_async at ``rate`` msg/s; latency = publish call to its PubAck."""
    return asyncio.run(_produce_latency(args, counter, ready))


async def _produce_latency(args: dict[str, Any], counter: Any, ready: ReadyFn) -> dict[str, Any]:
    nc, js = await _connect(args["url"])
    subject: str = args["subject"]
    value = os.urandom(MSG_SIZE)
    await js.publish(subject, value)
    rate: float = args["rate"]
    total = int(rate * args["seconds"])
    lat: list[float] = []
    errors: list[str] = []
    perf = time.perf_counter

    def make_cb(t: float) -> Any:
        def cb(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                errors.append("cancelled" if fut.cancelled() else repr(fut.exception()))
            else:
                lat.append(perf() - t)

        return cb

    ready()
    t0 = time.monotonic()
    start = perf()
    sent = 0
    while sent < total:
        due = min(total, int((perf() - start) * rate) + 1)
        while sent < due:
            t = perf()
            fut = await js.publish_async(subject, value)
            fut.add_done_callback(make_cb(t))
            sent += 1
        await asyncio.sleep(0.0005)
        if sent % 256 == 0:
            counter.value = sent
    await asyncio.wait_for(js.publish_async_completed(), 60)
    t1 = time.monotonic()
    await nc.close()
    return {"count": len(lat), "errors": len(errors), "first_error": errors[0] if errors else "", "lat": lat, "t0": t0, "t1": t1}
