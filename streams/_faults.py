"""Named fault points for fault-injection tests (the store's twin of ``outbox._faults``).

``crashpoint(name)`` kills the process with SIGKILL (no finally blocks, no flushed buffers);
``failpoint(name, errno)`` raises ``OSError(errno)`` as if the system call had failed. Both are
disarmed unless ``python -m streams serve`` arms them from ``STREAMS_CRASH_POINTS``
(``name[:probability][,name...]``, e.g. ``storage.mid_append:0.01,storage.fsync_eio:0.001``), so a
production process pays one dict lookup per point.

The *write ledger* (``arm_ledger``, from ``STREAMS_WRITE_LEDGER``) records what the storage layer
writes and syncs, so tests/chaos/powercut.py can take back, after a SIGKILL, what a power cut
could have lost. Disarmed, storage pays one ``ledger is not None`` check per write or sync.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import random
import signal
import stat
from pathlib import Path

__all__ = ["WriteLedger", "arm", "arm_ledger", "armed", "crashpoint", "failpoint", "ledger"]

log = logging.getLogger(__name__)

_armed: dict[str, float] = {}


def arm(spec: str | None) -> None:
    """Arm the points named in ``spec`` (``name[:probability],...``; probability default 1)."""
    _armed.clear()
    for item in (spec or "").split(","):
        name, _, probability = item.strip().partition(":")
        if not name:
            continue
        try:
            p = float(probability) if probability else 1.0
        except ValueError:
            raise ValueError(f"fault point {item!r}: probability must be a number from 0 to 1") from None
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault point {item!r}: probability must be a number from 0 to 1")
        _armed[name] = p
    if _armed:
        log.warning("fault points armed (tests only): %s", ", ".join(f"{n}:{p}" for n, p in sorted(_armed.items())))


def armed() -> dict[str, float]:
    return dict(_armed)


def _fires(name: str) -> bool:
    p = _armed.get(name)
    return p is not None and random.random() < p


def crashpoint(name: str, detail: str = "") -> None:
    """Die here (SIGKILL) if ``name`` is armed and the dice say so; ``detail`` goes to the log first."""
    if _armed and _fires(name):
        log.critical("crash point %s: killing this process (SIGKILL) %s", name, detail)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def failpoint(name: str, errno: int) -> None:
    """Raise ``OSError(errno)`` here if ``name`` is armed and the dice say so."""
    if _armed and _fires(name):
        log.warning("fault point %s: injecting %s", name, os.strerror(errno))
        raise OSError(errno, f"{os.strerror(errno)} (injected by fault point {name})")


# -- write ledger (power-cut simulation) ----------------------------------------------------------

ledger: WriteLedger | None = None
"""The armed write ledger, or None (production): storage checks this one attribute per write."""

_MAX_SAVED_CONTENT = 4 << 20


def arm_ledger(path: str | os.PathLike[str] | None, root: str | os.PathLike[str]) -> None:
    """Record the storage layer's writes under ``root`` into ``path`` (None disarms).

    ``python -m streams serve`` calls this with ``STREAMS_WRITE_LEDGER``; tests/chaos/powercut.py
    reads the file after a SIGKILL to damage what a power cut could have lost.
    """
    global ledger
    if ledger is not None:
        ledger.close()
        ledger = None
    if path:
        ledger = WriteLedger(Path(path), Path(root))
        log.warning("write ledger armed (tests only): %s records every write under %s", path, root)


class WriteLedger:
    """Append-only JSON lines: every data write, truncate, fsync, rename and directory state.

    Only the process is killed in the tests, never the machine, so plain ``write`` calls on an
    ``O_APPEND`` descriptor are enough (one ``write`` per line: whole lines, even with threads).
    The file spans store restarts: unsynced data of an earlier incarnation is still unsynced
    (the page cache kept it). A new or empty file starts an *epoch*: everything already on disk
    counts as durable, so it is snapshot first. Lines (``ino`` = inode number):

    * ``w``  a data write about to happen: path, offset, length, file size before, and the bytes
      it overwrites (``prior``, base64) so that a dropped write can be undone;
    * ``t``  a truncate that happened (``ino``, ``size``);
    * ``sb``/``se`` an fsync of a file started / returned: only writes logged before ``sb``
      are durable once ``se`` is there (a write racing the fsync may have missed it);
    * ``db``/``se`` the same for a directory; ``db`` holds its entries (name -> inode) at that
      moment, which become its durable entries at ``se``; ``dd`` are the epoch's starting ones;
    * ``r``  a rename about to replace ``dst``: the replaced file's inode and content, so a
      rename that never reached the disk can be undone.
    """

    def __init__(self, path: Path, root: Path) -> None:
        self.root = os.path.realpath(root)
        new = not path.exists() or path.stat().st_size == 0
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._ids = itertools.count()
        self._emit({"op": "start", "pid": os.getpid(), "new_epoch": new})
        if new:
            for directory, _, _ in os.walk(self.root):
                self._emit({"op": "dd", "path": directory, "entries": _entries(directory)})

    def close(self) -> None:
        os.close(self._fd)

    def _emit(self, doc: dict[str, object]) -> None:
        os.write(self._fd, json.dumps(doc, separators=(",", ":")).encode() + b"\n")

    def _mine(self, fd: int) -> tuple[os.stat_result, str] | None:
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            st = os.fstat(fd)
        except OSError:
            return None
        if not (path == self.root or path.startswith(self.root + os.sep)):
            return None
        return st, path

    def write(self, fd: int, position: int, length: int) -> None:
        found = self._mine(fd)
        if found is None or not stat.S_ISREG(found[0].st_mode):
            return
        st, path = found
        prior = os.pread(fd, min(length, st.st_size - position), position) if position < st.st_size else b""
        self._emit({"op": "w", "ino": st.st_ino, "path": path, "off": position, "len": length,
                    "size": st.st_size, "prior": base64.b64encode(prior).decode()})  # fmt: skip

    def truncate(self, fd: int, size: int) -> None:
        found = self._mine(fd)
        if found is not None:
            self._emit({"op": "t", "ino": found[0].st_ino, "size": size})

    def sync_begin(self, fd: int) -> int | None:
        found = self._mine(fd)
        if found is None:
            return None
        st, path = found
        sync_id = next(self._ids)
        if stat.S_ISDIR(st.st_mode):
            self._emit({"op": "db", "id": sync_id, "path": path, "entries": _entries(path)})
        else:
            self._emit({"op": "sb", "id": sync_id, "ino": st.st_ino})
        return sync_id

    def sync_end(self, sync_id: int | None) -> None:
        if sync_id is not None:
            self._emit({"op": "se", "id": sync_id})

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        target = os.path.realpath(dst)
        if not target.startswith(self.root + os.sep):
            return
        try:
            st = os.stat(target)
        except FileNotFoundError:
            return
        content = b""
        if st.st_size <= _MAX_SAVED_CONTENT:
            with open(target, "rb") as f:
                content = f.read()
        self._emit({"op": "r", "src": os.path.realpath(src), "dst": target, "old_ino": st.st_ino,
                    "saved": st.st_size <= _MAX_SAVED_CONTENT, "old": base64.b64encode(content).decode()})  # fmt: skip


def _entries(directory: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with os.scandir(directory) as it:
            for entry in it:
                out[entry.name] = entry.inode()
    except FileNotFoundError:
        pass
    return out
