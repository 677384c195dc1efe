"""The project's stream store as a real subprocess (``python -m streams serve``) for tests and benches.

The store announces readiness by writing its bound ``HOST:PORT\\n`` into ``--ready-file`` (atomically)
once it listens; that is the address it listens on, also when ``--advertised-listener`` names another
(a proxy's). With port 0 it binds an ephemeral port, which is read back from that file; ``restart()``
reuses the same data dir and the same port, so clients can reconnect to the address they had.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support._proc import REPO_ROOT, ChildProcess, free_port, log_tail, popen, register_for_cleanup

__all__ = ["StoreError", "StoreProcess", "free_port"]

logger = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The store did not start or stop as expected; the message carries its log."""


class StoreProcess(ChildProcess):
    """One ``python -m streams serve`` process.

    ``data_dir`` is created if missing. The ready file and the log (appended across restarts)
    live in ``work_dir`` (default: a fresh temp dir, removed by ``cleanup()``).
    """

    what = "the store"
    error = StoreError

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        work_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir if work_dir is not None else Path(tempfile.mkdtemp(prefix="outbox-store-"))
        self.data_dir = data_dir if data_dir is not None else self.work_dir / "data"
        self.host = host
        self.port = port
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.python = python
        self.ready_file = self.work_dir / "store.ready"
        self.log_path = self.work_dir / "store.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- properties -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``HOST:PORT`` the store listens on (as it reported in the ready file; not the advertised one)."""
        if not self.port:
            raise StoreError("the store has not been started yet")
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line the next ``start()`` runs."""
        return [
            self.python,
            "-m",
            "streams",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"{self.host}:{self.port}",
            "--ready-file",
            str(self.ready_file),
            *self.extra_args,
        ]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> StoreProcess:
        """Start the process and wait for its ready file; raise with its log if it exits first."""
        if self.is_running():
            raise StoreError("the store is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(self.env)
        cmd = self.command()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.work_dir,
            )
        register_for_cleanup(self)
        started = time.monotonic()
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        logger.info("store ready on %s in %.2f s (log: %s)", self.bootstrap, time.monotonic() - started, self.log_path)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            address = self._read_ready_file()
            if address is not None:
                host, _, port = address.rpartition(":")
                self.host = host.strip("[]") or self.host
                self.port = int(port)
                return
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise StoreError(
                    f"the store exited with {self._proc.returncode} before it was ready; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise StoreError(
                    f"the store wrote no ready file within {self.start_timeout:.0f} s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def _read_ready_file(self) -> str | None:
        try:
            text = self.ready_file.read_text()
        except FileNotFoundError:
            return None
        if not text.endswith("\n"):
            return None  # the contract is an atomic write; tolerate a writer that is not (yet) done
        address = text.strip()
        if ":" not in address or not address.rpartition(":")[2].isdigit():
            raise StoreError(f"ready file {self.ready_file} holds {text!r}, expected 'HOST:PORT\\n'")
        return address

    def restart(self, *, kill: bool = False) -> StoreProcess:
        """Stop (or kill) and start again on the same data dir and the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def __repr__(self) -> str:
        return f"<StoreProcess {self.host}:{self.port} data={self.data_dir} running={self.is_running()}>"
