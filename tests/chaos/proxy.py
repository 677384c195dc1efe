"""A TCP fault proxy (asyncio, in a thread of the test process) in front of the store or a broker.

The store is started with ``--advertised-listener`` set to the proxy's address (a Kafka node of
``--kafka-cluster`` with ``advertised.listeners`` set to its own proxy's), so every Kafka client —
which bootstraps and then connects to the address Metadata advertises — talks to it through the
proxy. Faults, switched on and off at run time by the campaign:

- ``latency(seconds)``: each forwarded chunk waits this long (both directions);
- ``hang()`` / ``unhang()``: stop forwarding (connections stay open, bytes pile up) — a silent
  network partition;
- ``reset_all()``: close every connection now with an RST (SO_LINGER 0);
- ``cut_mid_frame(probability)``: each chunk forwarded from then on is, with this probability,
  cut at a random byte inside it and the connection reset — the peer sees half a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import threading
from typing import Any

__all__ = ["FaultProxy"]

logger = logging.getLogger(__name__)


class FaultProxy:
    def __init__(
        self, listen_port: int, target_host: str, target_port: int, *, seed: int = 0, name: str = "store"
    ) -> None:
        self.name = name
        self.listen_port = listen_port
        self.target = (target_host, target_port)
        self.latency = 0.0
        self.cut_probability = 0.0
        self._rng = random.Random(seed)
        self._hung = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._started = threading.Event()
        self.connections = 0
        self.resets = 0
        self.cuts = 0
        self.refused = 0  # the target did not accept (a broker that is down): the client is reset

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port, reuse_address=True)
            self._started.set()
            await self._server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            loop.run_until_complete(main())
        # The connections were aborted, not cancelled (a cancelled client_connected_cb task makes
        # asyncio log a CancelledError): let their tasks see it and end before the loop closes.
        pending = asyncio.all_tasks(loop)
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=5))
        loop.close()

    def close(self) -> None:
        loop = self._loop
        if loop is None:
            return

        def stop() -> None:
            self._reset_all()
            if self._server is not None:
                self._server.close()  # serve_forever() then ends

        loop.call_soon_threadsafe(stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- faults (thread-safe) -------------------------------------------------------------------

    def heal(self) -> None:
        self.latency = 0.0
        self.cut_probability = 0.0
        self._hung.clear()

    def hang(self) -> None:
        self._hung.set()

    def unhang(self) -> None:
        self._hung.clear()

    def reset_all(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._reset_all)

    def _reset_all(self) -> None:
        for w in list(self._writers):
            self._abort(w)

    def _abort(self, writer: asyncio.StreamWriter, *, count: bool = True) -> None:
        sock: Any = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        self._writers.discard(writer)
        self.resets += count

    # -- forwarding -----------------------------------------------------------------------------

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            self._abort(client_w, count=False)
            return
        self._writers.update((client_w, server_w))
        pair = (client_w, server_w)
        await asyncio.gather(
            self._pipe(client_r, server_w, pair), self._pipe(server_r, client_w, pair), return_exceptions=True
        )
        for w in pair:
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: tuple[asyncio.StreamWriter, ...]
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                while self._hung.is_set():
                    await asyncio.sleep(0.05)
                if self.latency:
                    await asyncio.sleep(self.latency * self._rng.uniform(0.5, 1.5))
                if self.cut_probability and self._rng.random() < self.cut_probability:
                    self.cuts += 1
                    if len(data) > 1:
                        writer.write(data[: self._rng.randrange(1, len(data))])
                        with contextlib.suppress(Exception):
                            await writer.drain()
                    for w in pair:
                        self._abort(w)
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            for w in pair:
                self._abort(w)
