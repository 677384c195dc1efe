"""Group commit: one fdatasync per partition covers every append that arrived meanwhile.

Appends happen on the event loop; the flusher collects the partitions written since the last
round, runs their fdatasyncs in one worker-thread call, then advances each high watermark and
wakes everyone waiting on it (producers waiting for their ack, long-polling fetches). While a
round's fsyncs run, new appends pile up for the next round — that is what makes many concurrent
small requests cost few fsyncs.

A failed fsync is fatal (see DESIGN.md): nothing is acknowledged after it, and the server stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from streams.errors import FatalStorageError

from .config import FsyncPolicy

__all__ = ["Flusher"]

log = logging.getLogger(__name__)


class _Watch:
    """Per-partition waiters: acks waiting for an offset, fetches waiting for any progress."""

    __slots__ = ("acks", "progress")

    def __init__(self) -> None:
        self.acks: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.progress: list[asyncio.Future[None]] = []


class Flusher:
    def __init__(self, policy: FsyncPolicy, on_fatal: Callable[[BaseException], None]) -> None:
        self._policy = policy
        self._on_fatal = on_fatal
        self._dirty: dict[int, Any] = {}  # id(log) -> log, insertion ordered
        self._watches: dict[int, _Watch] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._stopping = False
        self.rounds = 0
        self.syncs = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="flusher")

    async def stop(self) -> None:
        """Finish the round in progress and sync what is left (so owed acks go out), then stop.

        The task is never cancelled mid-round: a cancelled round would leave sync tickets begun
        but never finished, and acknowledgements owed to clients unsent.
        """
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()
        await self._task
        self._task = None

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def appended(self, plog: Any) -> None:
        """Record that ``plog`` has unsynced data."""
        self._dirty[id(plog)] = plog
        if self._policy.always:
            self._wakeup.set()

    def wait_durable(self, plog: Any, offset: int) -> asyncio.Future[None]:
        """A future done once everything below ``offset`` in ``plog`` is fsynced."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failed is not None:
            fut.set_exception(FatalStorageError("the store stopped acknowledging after a failed fsync"))
        elif plog.high_watermark >= offset:
            fut.set_result(None)
        else:
            self._watch(plog).acks.append((offset, fut))
        return fut

    def wait_progress(self, plog: Any) -> asyncio.Future[None]:
        """A future done at the next high-watermark advance of ``plog`` (for long-poll fetches)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watch(plog).progress.append(fut)
        return fut

    def forget(self, plog: Any) -> None:
        """Drop a deleted partition: its waiters are released, never acknowledged as durable."""
        self._dirty.pop(id(plog), None)
        watch = self._watches.pop(id(plog), None)
        if watch is not None:
            for _, fut in watch.acks:
                if not fut.done():
                    fut.set_exception(FatalStorageError("the partition was deleted before its data was synced"))
            for fut in watch.progress:
                if not fut.done():
                    fut.set_result(None)

    def _watch(self, plog: Any) -> _Watch:
        watch = self._watches.get(id(plog))
        if watch is None:
            watch = self._watches[id(plog)] = _Watch()
        return watch

    async def _run(self) -> None:
        interval = None if self._policy.interval_ms is None else self._policy.interval_ms / 1000
        while not self._stopping:
            if interval is None:
                await self._wakeup.wait()
                self._wakeup.clear()
            else:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=interval)
                except TimeoutError:
                    pass
                self._wakeup.clear()
            if self._dirty:
                await self._round()
            if self._failed is not None:
                return
        while self._dirty and self._failed is None:
            await self._round()

    async def _round(self) -> None:
        logs = list(self._dirty.values())
        self._dirty.clear()
        tickets = [(plog, t) for plog in logs if (t := plog.begin_sync()) is not None]
        if tickets:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, _run_tickets, [t for _, t in tickets])
            except Exception as exc:
                self._fail(exc)
                return
            self.syncs += len(tickets)
        self.rounds += 1
        try:
            for plog, ticket in tickets:
                plog.finish_sync(ticket)
            for plog in logs:
                self._release(plog)
        except Exception as exc:
            # Never leave the flusher dead with acknowledgements owed: stop the store instead.
            self._fail(exc)

    def _release(self, plog: Any) -> None:
        watch = self._watches.get(id(plog))
        if watch is None:
            return
        hw = plog.high_watermark
        acks = watch.acks
        while acks and acks[0][0] <= hw:
            _, fut = acks.popleft()
            if not fut.done():
                fut.set_result(None)
        if watch.progress:
            progress, watch.progress = watch.progress, []
            for fut in progress:
                if not fut.done():
                    fut.set_result(None)
        if not acks and not watch.progress:
            del self._watches[id(plog)]

    def fail(self, exc: BaseException) -> None:
        """A storage failure outside an fsync that breaks the durability promise: stop too."""
        if self._failed is None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self._failed = exc
        log.critical("storage failed; the store stops acknowledging writes and exits: %s", exc)
        err = FatalStorageError(f"storage failed: {exc}")
        for watch in self._watches.values():
            for _, fut in watch.acks:
                if not fut.done():
                    fut.set_exception(err)
        self._watches.clear()
        self._on_fatal(exc)


def _run_tickets(tickets: list[Any]) -> None:
    for ticket in tickets:
        ticket.run()
