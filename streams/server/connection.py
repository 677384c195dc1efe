"""One client connection: frames in, handlers run in arrival order, responses out in that order.

Requests are dispatched as soon as they are framed, so a pipelining producer's second request is
appended while its first waits for the group-commit fsync — both then share one fsync. Responses
are queued and written strictly in request order (clients treat anything else as fatal).

Bad input closes only this connection: an oversized or negative frame length, a request that does
not decode, an API or version the store does not serve. Each gets one log line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Iterator
from typing import cast

from streams.protocol.apis import ApiKey, UnsupportedApi, api_versions_error_response, decode_request
from streams.protocol.frames import FrameError, FrameReader
from streams.protocol.header import MalformedRequest
from streams.storage import ReadSlice as storage_slice

from .broker import Broker, Part, close_parts

__all__ = ["Connection", "Connections"]

log = logging.getLogger(__name__)

_MAX_PENDING = 128  # responses queued before the connection stops reading (backpressure)
_SENDFILE_MIN = 64 * 1024


class Connections:
    """Every open connection, and a global cap on the memory their half-received requests hold.

    Each connection may buffer one partial frame of up to --max-request-size; without a global cap
    many slow or hostile connections could hold that much each. Over the cap, a connection that
    is mid-frame stops being read until others complete or close (Kafka's queued.max.request.bytes).
    """

    def __init__(self, max_buffered_bytes: int) -> None:
        self.open: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.max_buffered = max_buffered_bytes
        self.buffered = 0
        self._starved: list[Connection] = []

    def __len__(self) -> int:
        return len(self.open)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self.open))

    def account(self, delta: int) -> None:
        self.buffered += delta
        while delta < 0 and self._starved and self.buffered < self.max_buffered:
            self._starved.pop(0).unstarve()

    @property
    def over_budget(self) -> bool:
        return self.buffered > self.max_buffered

    def starve(self, conn: Connection) -> None:
        self._starved.append(conn)

    def forget(self, conn: Connection) -> None:
        self.open.discard(conn)
        if conn in self._starved:
            self._starved.remove(conn)


class Connection(asyncio.Protocol):
    def __init__(self, broker: Broker, registry: Connections) -> None:
        self.broker = broker
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.reader = FrameReader(broker.config.max_request_bytes)
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self._out: deque[list[Part] | asyncio.Future[list[Part]]] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._paused_reading = False
        self._starved = False
        self._closing_reads = False
        self._write_paused = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._closing = False
        self.requests = 0

    @property
    def pending(self) -> int:
        """Responses queued but not yet written."""
        return len(self._out)

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if hasattr(socket, "TCP_KEEPIDLE"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
            except OSError:
                pass
        if len(self.registry) >= self.broker.config.max_connections:
            log.warning(
                "refusing connection from %s: %d connections open (--max-connections)", self.peer, len(self.registry)
            )
            self.transport.abort()
            return
        self.registry.open.add(self)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name=f"writer {self.peer}")
        self.registry.tasks.add(self._writer)  # a strong reference until it ends (asyncio keeps only weak ones)
        self._writer.add_done_callback(self.registry.tasks.discard)
        log.debug("connection from %s", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.registry.forget(self)
        self.registry.account(-self.reader.buffered)
        if self._writer is not None:
            self._writer.cancel()
        while self._out:
            item = self._out.popleft()
            if isinstance(item, asyncio.Future):
                item.cancel()
            else:
                close_parts(item)
        self._can_write.set()
        log.debug("connection from %s closed (%s)", self.peer, exc or "eof")

    def pause_writing(self) -> None:
        self._write_paused = True
        self._can_write.clear()
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._can_write.set()
        self._maybe_resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_activity = time.monotonic()
        before = self.reader.buffered
        try:
            frames = self.reader.feed(data)
        except FrameError as exc:
            self.registry.account(-before)
            self.close(f"bad frame: {exc}")
            return
        self.registry.account(self.reader.buffered - before)
        self.partial_since = self.last_activity if self.reader.buffered else None
        if self.reader.buffered and self.registry.over_budget and not self._starved:
            self._starved = True
            self.registry.starve(self)
            self._pause_reading()
        for frame in frames:
            if self._closing:
                return
            self._dispatch(frame)
        if len(self._out) >= _MAX_PENDING:
            self._pause_reading()

    def eof_received(self) -> bool | None:
        return None

    # -- dispatch ------------------------------------------------------------------------------

    def _dispatch(self, frame: bytearray) -> None:
        self.requests += 1
        try:
            request = decode_request(frame, self.broker.served)
            request.peer = self.peer
        except UnsupportedApi as exc:
            if exc.header.api_key == ApiKey.API_VERSIONS:
                self._enqueue([api_versions_error_response(exc.header.correlation_id, self.broker.served)])
            else:
                self.close(str(exc))
            return
        except MalformedRequest as exc:
            self.close(f"malformed request: {exc}")
            return
        try:
            reply = self.broker.handle(request)
        except Exception:
            log.exception(
                "unexpected error handling %s v%d from %s; closing the connection",
                request.spec.name,
                request.version,
                self.peer,
            )
            self.close("internal error")
            return
        if reply is None:
            return
        if isinstance(reply, (list, asyncio.Future)):
            self._enqueue(reply)
        else:
            self._enqueue(asyncio.ensure_future(_as_coroutine(reply)))

    def _enqueue(self, item: list[Part] | asyncio.Future[list[Part]]) -> None:
        if (
            not self._out
            and isinstance(item, list)
            and not self._write_paused
            and all(isinstance(p, bytes) for p in item)
            and self.transport is not None
        ):
            # Fast path: nothing queued ahead of a ready, in-memory response.
            self.transport.writelines(item)  # type: ignore[arg-type]
            return
        self._out.append(item)
        self._wake.set()

    # -- output --------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """Write responses in request order; everything ready at once goes out in one write."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._out:
                self._wake.clear()
                self._maybe_resume_reading()
                await self._wake.wait()
            head = self._out[0]
            if isinstance(head, asyncio.Future) and not head.done():
                try:
                    await asyncio.shield(head)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if self._closing or (task is not None and task.cancelling()):
                        raise
                except Exception:
                    pass  # reported below, in order
            if self._closing:
                return
            chunks: list[bytes] = []
            while self._out:
                item = self._out[0]
                if isinstance(item, asyncio.Future):
                    if not item.done():
                        break
                    if item.cancelled() or item.exception() is not None:
                        self._out.popleft()
                        self._write(chunks)
                        self.close(f"request failed: {'cancelled' if item.cancelled() else item.exception()}")
                        return
                    parts = item.result()
                else:
                    parts = item
                self._out.popleft()
                try:
                    for part in parts:
                        if isinstance(part, bytes):
                            chunks.append(part)
                        elif part.length >= _SENDFILE_MIN and _native_sendfile(loop):
                            self._write(chunks)
                            chunks = []
                            await self._sendfile(loop, part)
                        else:
                            chunks.append(part.read_bytes())
                finally:
                    close_parts(parts)
                if self._closing or self.transport is None:
                    return
            self._write(chunks)
            if self._write_paused:
                await self._can_write.wait()

    def _write(self, chunks: list[bytes]) -> None:
        if chunks and self.transport is not None and not self._closing:
            self.transport.writelines(chunks)

    async def _sendfile(self, loop: asyncio.AbstractEventLoop, part: storage_slice) -> None:
        """Zero-copy from the segment file to the socket (stdlib event loop only)."""
        await self._can_write.wait()
        if self.transport is None or self._closing:
            return
        with open(part.fd, "rb", buffering=0, closefd=False) as fobj:
            try:
                await loop.sendfile(self.transport, fobj, part.position, part.length, fallback=False)
                return
            except (asyncio.SendfileNotAvailableError, NotImplementedError):
                pass
        self.transport.write(part.read_bytes())

    # -- flow control and closing --------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None and not self._closing:
            self._paused_reading = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self._paused_reading
            and not self._starved
            and not self._closing_reads
            and not self._write_paused
            and len(self._out) < _MAX_PENDING // 2
            and self.transport is not None
            and not self._closing
        ):
            self._paused_reading = False
            self.transport.resume_reading()

    def unstarve(self) -> None:
        self._starved = False
        self._maybe_resume_reading()

    def stop_reading(self) -> None:
        """Take no new requests (shutdown); queued responses still go out."""
        self._pause_reading()
        self._closing_reads = True

    def close(self, reason: str) -> None:
        if self._closing:
            return
        self._closing = True
        log.warning("closing connection from %s: %s", self.peer, reason)
        if self.transport is not None:
            self.transport.abort()

    def check_timeouts(self, now: float) -> None:
        """Close a connection idle too long, or one stuck half-way through a request frame."""
        config = self.broker.config
        if self._out:
            return
        if self.partial_since is not None and now - self.partial_since > config.request_timeout_s:
            self.close(f"incomplete request frame for {config.request_timeout_s:.0f}s")
        elif now - self.last_activity > config.idle_timeout_s:
            log.info("closing idle connection from %s", self.peer)
            self._closing = True
            if self.transport is not None:
                self.transport.close()


async def _as_coroutine(awaitable: Awaitable[list[Part]]) -> list[Part]:
    return await awaitable


def _native_sendfile(loop: asyncio.AbstractEventLoop) -> bool:
    return isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)
