"""Process helpers shared by the test servers: free ports, parent-death signals, log tails.

Every server a test starts is a child of the test process. On Linux a child started from the main
thread asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so a test run that
is killed hard (SIGKILL, a CI timeout) leaves no broker or database behind; orderly exits go
through ``stop()`` and, as a backstop, an atexit hook that kills every server still registered.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from demo._procs import free_port, kill_on_parent_death, log_tail

__all__ = [
    "REPO_ROOT",
    "ChildProcess",
    "ManagedServer",
    "ProcessHandle",
    "free_port",
    "kill_on_parent_death",
    "log_tail",
    "popen",
    "register_for_cleanup",
    "run",
    "terminate",
    "wait_for_port",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


class ManagedServer:
    """``with Server() as s:`` for the test servers: start on enter, clean up on exit.

    ``__exit__`` does not run when ``__enter__`` fails, so a failed start cleans up here.
    """

    def start(self) -> Self:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


class ProcessHandle:
    """What every launcher that keeps one ``subprocess.Popen`` in ``_proc`` can say about it."""

    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """Exit code of the last process, None while it runs (or before the first start)."""
        return self._proc.poll() if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


class ChildProcess(ProcessHandle, ManagedServer):
    """A server started as one child process with its output in ``log_path``: the stop, kill,
    pause and clean-up logic the store and relay launchers share.

    Subclasses set ``_proc`` when they start, ``log_path``, ``work_dir`` and ``_own_work_dir``,
    and name themselves in ``what`` and their error type in ``error``.
    """

    what = "the process"
    error: type[Exception] = RuntimeError
    log_path: Path
    work_dir: Path
    _own_work_dir: bool

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; return the exit code. A process that ignores SIGTERM is killed and reported."""
        proc = self._proc
        if proc is None:
            return None
        code = terminate(proc, signal.SIGTERM, timeout)
        if code is None:
            terminate(proc, signal.SIGKILL, 10.0)
            raise self.error(
                f"{self.what} did not exit within {timeout:.0f} s of SIGTERM and was killed; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )
        return code

    def kill(self) -> int | None:
        """SIGKILL (a crash: no shutdown code runs); return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        return terminate(proc, signal.SIGKILL, 10.0)

    def pause(self) -> None:
        """SIGSTOP: frozen, sockets open (a stalled process, not a dead one)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        """Stop the process if it runs (killing it if need be) and remove an owned work dir."""
        try:
            if self.is_running():
                self.resume()
                self.stop()
        finally:
            self.kill()
            if self._own_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)

    def log_text(self) -> str:
        """The whole log so far (every start)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class _Stoppable(Protocol):
    def kill(self) -> object: ...


_live: weakref.WeakSet[_Stoppable] = weakref.WeakSet()
_live_lock = threading.Lock()


def register_for_cleanup(server: _Stoppable) -> None:
    """Remember a running server so that interpreter exit kills it if nobody stopped it."""
    with _live_lock:
        _live.add(server)


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        try:
            server.kill()
        except Exception:  # best effort at exit
            logger.exception("cleanup of %r failed", server)


def terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int | None:
    """Send ``sig`` and wait up to ``timeout`` seconds; return the exit code, or None if still alive."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Return True once a TCP connect to host:port succeeds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _death_hook() -> Callable[[], None] | None:
    # The kernel's "parent" is the spawning *thread*: a child started from a worker thread would be
    # killed when that thread ends, so only children of the main thread get the parent-death signal.
    return kill_on_parent_death if threading.current_thread() is threading.main_thread() else None


def popen(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` for a server child: killed by the kernel if the test process dies.

    ``preexec_fn`` is unsafe only if another thread holds a lock the child needs between fork and
    exec; ``kill_on_parent_death`` calls nothing but prctl, so that cannot happen here.
    """
    return subprocess.Popen(cmd, preexec_fn=_death_hook(), **kwargs)  # noqa: PLW1509


def run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` (without ``check``) for a child that must not outlive the test process."""
    return subprocess.run(cmd, check=False, preexec_fn=_death_hook(), **kwargs)
