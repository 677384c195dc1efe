"""Every rule about making bytes durable lives here, so there is one place to audit.

* ``atomic_write``: write a temp file in the same directory, fsync it, rename it over the target,
  fsync the directory. A crash leaves the old or the new content, never a mix, and the rename
  itself survives power loss only once the directory is fsynced.
* ``fsync_dir``: a new, renamed or deleted directory entry is durable only after this.
* ``pwrite_all`` / ``pread_exact``: unbuffered positional I/O that handles short transfers, so
  callers know exactly which bytes reached the file (no hidden Python buffer).
* ``fsync`` / ``fdatasync`` / ``truncate`` / ``replace``: the system calls, plus a note to the
  test-only write ledger (``streams._faults.ledger``) when one is armed, so a simulated power cut
  knows what was durable. Every write, sync, truncate and rename of the store goes through here.
* ``DataDirLock``: an exclusive ``flock`` on ``meta/.lock``. flock locks belong to the open file
  description, so a second Store in the *same* process is refused too, and the kernel drops the
  lock when the process dies (no stale lock after kill -9).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from streams import _faults

from .errors import DataDirLockedError

__all__ = [
    "TEMP_SUFFIX",
    "DataDirLock",
    "atomic_write",
    "fdatasync",
    "fsync",
    "fsync_dir",
    "pread_exact",
    "pwrite_all",
    "remove_temp_files",
    "replace",
    "truncate",
]

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


def _sync(call: Callable[[int], None], fd: int) -> None:
    ledger = _faults.ledger
    if ledger is None:
        call(fd)
        return
    sync_id = ledger.sync_begin(fd)
    call(fd)
    ledger.sync_end(sync_id)


def fsync(fd: int) -> None:
    """``os.fsync``, noted in the write ledger when one is armed."""
    _sync(os.fsync, fd)


def fdatasync(fd: int) -> None:
    """``os.fdatasync``, noted in the write ledger when one is armed."""
    _sync(os.fdatasync, fd)


def truncate(fd: int, size: int) -> None:
    """``os.ftruncate``, noted in the write ledger when one is armed."""
    os.ftruncate(fd, size)
    if _faults.ledger is not None:
        _faults.ledger.truncate(fd, size)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """``os.replace``; durable only after ``fsync_dir`` of the directory."""
    if _faults.ledger is not None:
        _faults.ledger.rename(src, dst)
    os.replace(src, dst)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make entries created, renamed or removed in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, position: int) -> None:
    """Write all of ``data`` at ``position``; loops because ``pwrite`` may write less."""
    if _faults.ledger is not None:
        _faults.ledger.write(fd, position, len(data))
    view = memoryview(data)
    try:
        while view:
            written = os.pwrite(fd, view, position)
            if written == 0:  # pragma: no cover - the kernel does not do this for regular files
                raise OSError("pwrite wrote 0 bytes")
            view = view[written:]
            position += written
    finally:
        view.release()


def pread_exact(fd: int, size: int, position: int) -> bytes:
    """Read up to ``size`` bytes at ``position``; fewer only at end of file."""
    data = os.pread(fd, size, position)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, position + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file.

    The temp name is unique (and short: a 249-character topic name must still fit in 255
    bytes), so concurrent writers never share a temp file; ordering between them is the
    caller's business.
    """
    target = Path(path)
    tmp = target.with_name(f"tmp-{secrets.token_hex(8)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        pwrite_all(fd, data, 0)
        fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    replace(tmp, target)
    fsync_dir(target.parent)


def remove_temp_files(directory: Path) -> None:
    """Drop temp files an interrupted ``atomic_write`` left behind (the target is intact)."""
    for tmp in directory.glob(f"*{TEMP_SUFFIX}"):
        log.info("removing leftover temp file %s", tmp)
        tmp.unlink(missing_ok=True)


class DataDirLock:
    """An exclusive, process-lifetime lock on a data directory."""

    def __init__(self, path: Path, data_dir: Path) -> None:
        self._path = path
        self._data_dir = data_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLockedError(
                f"data directory {self._data_dir} is in use by another store (lock {self._path} is held); "
                "stop the other process or point this one at a different directory",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        truncate(fd, 0)
        pwrite_all(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
