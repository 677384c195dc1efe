"""Disk faults of the store for the chaos campaign: simulated power cuts and a really full disk.

* **Power cut** (:meth:`StorageFaults.power_cut`): the store runs with the write ledger armed
  (``STREAMS_WRITE_LEDGER``); the fault SIGKILLs it and lets tests/chaos/powercut.py take back
  what a power cut could have lost. Each cut's decisions go to ``powercut-N.log`` in the work
  dir, and the ledger is set aside (``ledger.N.jsonl``) so the next start begins a new epoch.
* **Full disk** (:meth:`StorageFaults.fill`): the data dir is a small tmpfs of its own, mounted
  by :class:`Tmpfs` (root only); a ballast file takes all its free space for a while, then goes.
  The store must answer produce requests with a retriable error meanwhile and recover after.
  When mounting is not possible the fault falls back to the ENOSPC failpoint the campaign arms
  anyway, and says so loudly.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import random
import signal
import subprocess
import threading
from pathlib import Path

from tests.chaos.powercut import power_cut

__all__ = ["StorageFaults", "Tmpfs", "TmpfsUnavailable"]

logger = logging.getLogger("chaos.disk")


class TmpfsUnavailable(RuntimeError):
    """``mount -t tmpfs`` is not permitted here (not root, or no CAP_SYS_ADMIN: EPERM)."""


class Tmpfs:
    """A tmpfs of ``size_mb`` at ``path``, unmounted by :meth:`unmount` (and at exit, as a backstop)."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False
        self._lock = threading.Lock()

    def mount(self) -> Tmpfs:
        """Mount; TmpfsUnavailable only for a permission problem, RuntimeError for anything else."""
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            raise TmpfsUnavailable(f"mounting a tmpfs needs root (euid is {os.geteuid()})")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            text = (done.stderr or done.stdout).strip()
            if "permission denied" in text.lower() or "not permitted" in text.lower():
                raise TmpfsUnavailable(f"mount -t tmpfs at {self.path}: {text} ({os.strerror(errno.EPERM)})")
            raise RuntimeError(f"mount -t tmpfs at {self.path} failed ({done.returncode}): {text}")
        self.mounted = True
        atexit.register(self.unmount)
        logger.info("tmpfs of %d MiB mounted at %s", self.size_mb, self.path)
        return self

    def unmount(self) -> None:
        """Unmount (lazily if something still holds a file open); idempotent."""
        with self._lock:
            if not self.mounted:
                return
            done = subprocess.run(["umount", str(self.path)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                logger.warning("umount %s: %s; detaching it lazily", self.path, done.stderr.strip())
                subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize


def fill_with_ballast(directory: Path, name: str = "ballast") -> Path:
    """Take every free byte of ``directory``'s file system with one file; returns its path.

    ``posix_fallocate`` reserves blocks without writing them; if the exact free size fails
    (metadata took a block meanwhile), smaller sizes follow until nothing fits.
    """
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        chunk = 1 << 30
        offset = 0
        while chunk >= 4096:
            try:
                os.posix_fallocate(fd, offset, chunk)
                offset += chunk
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                chunk //= 2
    finally:
        os.close(fd)
    return path


class StorageFaults:
    """The campaign's store disk faults; see the module docstring."""

    def __init__(
        self, work: Path, rng: random.Random, *, power_cuts: bool, disk_full: bool, tmpfs_mb: int = 512
    ) -> None:
        self.work = work
        self.rng = rng
        self.power_cuts = power_cuts
        self.disk_full = disk_full
        self.tmpfs_mb = tmpfs_mb
        self.ledger = work / "store-write-ledger.jsonl"
        self.tmpfs: Tmpfs | None = None
        self.cuts = 0
        self.fills = 0
        self.fallback_reason: str | None = None

    def store_env(self) -> dict[str, str]:
        return {"STREAMS_WRITE_LEDGER": str(self.ledger)} if self.power_cuts else {}

    def prepare_data_dir(self, path: Path) -> Path:
        """Create the store's data dir, on its own tmpfs when the full-disk fault is on."""
        path.mkdir(parents=True, exist_ok=True)
        if self.disk_full:
            try:
                self.tmpfs = Tmpfs(path, self.tmpfs_mb).mount()
            except TmpfsUnavailable as exc:
                self.fallback_reason = str(exc)
                logger.error(
                    "FULL-DISK FAULT DEGRADED: %s; 'disk full store' only notes the injected ENOSPC "
                    "failpoint (storage.write_enospc) instead of filling a real file system",
                    exc,
                )
        return path

    def power_cut(self, store: object) -> str:
        """SIGKILL ``store`` (a StoreProcess), damage its data dir like a power cut; returns a summary."""
        from tests.support.store import StoreProcess

        assert isinstance(store, StoreProcess)
        if store.is_running():
            os.kill(store.pid or 0, signal.SIGCONT)
        store.kill()
        seed = self.rng.randrange(2**32)
        self.cuts += 1
        report = power_cut(store.data_dir, self.ledger, random.Random(seed))
        (self.work / f"powercut-{self.cuts}.log").write_text(
            f"seed {seed}\n" + "\n".join(report.decisions) + "\n", encoding="utf-8"
        )
        if self.ledger.exists():
            self.ledger.rename(self.work / f"store-write-ledger.{self.cuts}.jsonl")
        return f"seed {seed}: {report.summary()}"

    def fill(self, hold: float, stop: threading.Event) -> str:
        """Fill the store's tmpfs for ``hold`` seconds (or until ``stop``), then free it."""
        if self.tmpfs is None or not self.tmpfs.mounted:
            return f"no tmpfs ({self.fallback_reason}): injected ENOSPC failpoint only"
        self.fills += 1
        before = self.tmpfs.free_bytes()
        ballast = fill_with_ballast(self.tmpfs.path, f".ballast-{self.fills}")
        try:
            left = self.tmpfs.free_bytes()
            logger.info("disk full: ballast of %d bytes, %d bytes left, for %.1f s", before - left, left, hold)
            stop.wait(hold)
        finally:
            ballast.unlink(missing_ok=True)
        return f"{before >> 20} MiB filled for {hold:.1f} s"

    def close(self) -> None:
        if self.tmpfs is not None:
            self.tmpfs.unmount()
