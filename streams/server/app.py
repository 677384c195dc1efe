"""The store process: open storage, listen, serve until SIGTERM/SIGINT, shut down cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from pathlib import Path

from streams import storage
from streams.errors import StorageError
from streams.storage.files import atomic_write

from .broker import Broker
from .config import ServerConfig
from .connection import Connection, Connections
from .flusher import Flusher
from .groups import GroupCoordinator

__all__ = ["ServerError", "serve"]

log = logging.getLogger(__name__)


class ServerError(StorageError):
    """The server could not start (port in use, data directory locked...)."""


def _cluster_id(data_dir: Path) -> str:
    """A stable cluster id per data directory, as Kafka keeps one in ``meta.properties``."""
    path = data_dir / "meta" / "cluster-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = uuid.uuid4().hex[:22]
        atomic_write(path, value.encode())
        return value


async def serve(config: ServerConfig, store_config: storage.StoreConfig) -> int:
    """Run until a signal; returns the process exit code (non-zero after a fatal storage error)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    exit_code = 0

    def fatal(exc: BaseException) -> None:
        nonlocal exit_code
        exit_code = 3
        stop.set()

    started = time.monotonic()
    store = storage.Store(store_config)
    store.open()
    offsets = storage.OffsetStore(config.data_dir / "meta" / "offsets")
    try:
        offsets.open()
        flusher = Flusher(config.fsync, fatal)
        coordinator = GroupCoordinator(config.groups, offsets, flusher)
        broker = Broker(config, store, flusher, _cluster_id(config.data_dir), coordinator)
        connections = Connections(config.max_buffered_request_bytes)
        try:
            server = await loop.create_server(
                lambda: Connection(broker, connections), config.host, config.port, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            raise ServerError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from exc
        bound = server.sockets[0].getsockname()
        broker.advertised_port = config.advertised_port or bound[1]
        if config.advertised_host is None and config.host in ("0.0.0.0", "::", ""):
            broker.advertised_host = "127.0.0.1"
        flusher.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        background = [
            loop.create_task(_checkpoints(store, config.checkpoint_interval_s), name="checkpoint"),
            loop.create_task(_every(config.retention_check_interval_s, lambda: _retention(store)), name="retention"),
            loop.create_task(_every(1.0, lambda: _sweep(connections)), name="timeouts"),
            loop.create_task(_scrub(store), name="scrub"),
            loop.create_task(_every(0.1, coordinator.tick), name="group timers"),
            loop.create_task(
                _every(config.retention_check_interval_s, lambda: coordinator.expire_offsets(int(time.time() * 1000))),
                name="offset expiry",
            ),
        ]
        log.info(
            "listening on %s:%d (advertised as %s:%d), data dir %s, fsync %s, ready in %.2fs",
            bound[0],
            bound[1],
            broker.advertised_host,
            broker.advertised_port,
            config.data_dir,
            config.fsync,
            time.monotonic() - started,
        )
        if config.ready_file is not None:
            # The bound address, not the advertised one: whoever started us (a script, a test harness)
            # reaches and restarts the process there; behind a proxy or NAT the two differ.
            bound_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            atomic_write(config.ready_file, f"{bound_host}:{bound[1]}\n".encode())
        await stop.wait()
        log.info("shutting down")
        server.close()
        for conn in connections:
            conn.stop_reading()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if not flusher.failed:
            await flusher.stop()
            # Let owed acknowledgements reach their clients before the connections go.
            deadline = time.monotonic() + 5.0
            while any(conn.pending for conn in connections) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            for conn in connections:
                if conn.transport is not None:
                    conn.transport.close()
            await asyncio.sleep(0)
        else:
            for conn in connections:
                if conn.transport is not None:
                    conn.transport.abort()
    finally:
        if exit_code == 0:
            offsets.close()
            store.close()
            log.info("stopped cleanly")
        else:
            log.critical("exiting after a fatal storage error; restart to recover from disk")
    return exit_code


async def _every(seconds: float, fn: object) -> None:
    assert callable(fn)
    while True:
        await asyncio.sleep(seconds)
        try:
            fn()
        except Exception:
            log.exception("periodic task %s failed; it will run again", getattr(fn, "__qualname__", fn))


async def _checkpoints(store: storage.Store, seconds: float) -> None:
    """Write the recovery checkpoint off the event loop (it costs fsyncs) whenever it changed."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        ticket = store.prepare_checkpoint()
        if ticket is not None:
            try:
                await loop.run_in_executor(None, ticket.run)
            except OSError as exc:
                # A full disk is expected to pass: one line per attempt, no traceback.
                log.warning("writing the recovery checkpoint failed (%s); retrying in %.0f s", exc, seconds)


async def _scrub(store: storage.Store, step_bytes: int = 4 << 20, per_second: int = 32 << 20) -> None:
    """CRC-check, in the background, old data that recovery only header-checked at start-up."""
    while True:
        done = 0
        for plog in list(store.logs()):
            while done < per_second:
                checked = plog.scrub(step_bytes)
                if not checked:
                    break
                done += checked
                await asyncio.sleep(0)
        await asyncio.sleep(1.0)


def _retention(store: storage.Store) -> None:
    deleted = store.enforce_retention(int(time.time() * 1000))
    if deleted:
        log.info("retention deleted %d segment(s)", deleted)


def _sweep(connections: Connections) -> None:
    now = time.monotonic()
    for conn in connections:
        conn.check_timeouts(now)
