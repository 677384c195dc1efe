"""The doorbell from the relay's side: LISTEN, a self-probe, and sleeping only when it is safe.

See ``outbox/doorbell.py`` for the protocol and why no event is slept through. Notifications are
only hints: the relay scans after every (re)connect and every wake-up, and polls every
``poll_interval`` even when it hears nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from outbox.doorbell import disarm, try_arm
from outbox.schema import OutboxSettings

__all__ = ["Listener"]

log = logging.getLogger(__name__)


class Listener:
    """LISTEN on the relay's dedicated autocommit connection (the one that holds its locks)."""

    def __init__(self, conn: psycopg.Connection[Any], settings: OutboxSettings, *, schema: str, table: str) -> None:
        self._conn = conn
        self._settings = settings
        self._schema = schema
        self._table = table
        self.works = False

    def listen(self, probe_timeout: float = 2.0) -> bool:
        """LISTEN, then check a notification can reach us (it cannot through a transaction pooler)."""
        conn = self._conn
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._settings.channel)))
        token = f"probe:{uuid.uuid4()}"
        pid = conn.info.backend_pid
        conn.execute("SELECT pg_notify(%s, %s)", (self._settings.channel, token))
        deadline = time.monotonic() + probe_timeout
        heard = False
        while not heard and time.monotonic() < deadline:
            for n in conn.notifies(timeout=max(0.0, deadline - time.monotonic()), stop_after=1):
                if n.payload == token:
                    heard = True
        same_backend = conn.execute("SELECT pg_backend_pid()").fetchone() == (pid,)
        self.works = heard and same_backend
        if not self.works:
            log.error(
                "LISTEN/NOTIFY does not work on this connection (%s): falling back to polling every poll interval. "
                "Connect the relay to PostgreSQL directly or through a session-pooling proxy; a transaction-pooling "
                "proxy (e.g. PgBouncer pool_mode=transaction) also breaks the relay's bucket locks",
                "the backend changed between statements"
                if not same_backend
                else "the probe notification never came back",
            )
        return self.works

    def drain(self) -> int:
        """Forget notifications that arrived while busy (the next scan covers them)."""
        return sum(1 for _ in self._conn.notifies(timeout=0))

    def arm(self) -> bool:
        """Take the doorbell; False means a writer's transaction is open (poll again soon)."""
        if not self.works:
            return False
        return try_arm(self._conn, self._settings.doorbell_lock, schema=self._schema, table=self._table)

    def wait(self, timeout: float) -> bool:
        """Sleep until a notification or ``timeout``; True if woken by a notification."""
        for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            return True
        return False

    def disarm(self) -> None:
        disarm(self._conn, self._settings.doorbell_lock, schema=self._schema, table=self._table)
