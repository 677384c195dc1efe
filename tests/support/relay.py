"""The relay as a real subprocess (``python -m outbox.cli relay``) for tests, benches and demos.

Ready when its log says it connected and took its first buckets (or, for a standby, connected).
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

from tests.support._proc import REPO_ROOT, ChildProcess, log_tail, popen, register_for_cleanup

__all__ = ["RelayError", "RelayProcess"]

logger = logging.getLogger(__name__)


class RelayError(RuntimeError):
    """The relay did not start or stop as expected; the message carries its log."""


class RelayProcess(ChildProcess):
    what = "the relay"
    error = RelayError

    def __init__(
        self,
        database_url: str,
        bootstrap_servers: str,
        *,
        name: str = "relay-1",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        work_dir: Path | None = None,
        start_timeout: float = 30.0,
        python: str = sys.executable,
    ) -> None:
        self.database_url = database_url
        self.bootstrap_servers = bootstrap_servers
        self.name = name
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir if work_dir is not None else Path(tempfile.mkdtemp(prefix="outbox-relay-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / f"{name}.log"
        self.start_timeout = start_timeout
        self.python = python
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "outbox.cli",
            "relay",
            "--database-url",
            self.database_url,
            "--bootstrap-servers",
            self.bootstrap_servers,
            "--name",
            self.name,
            *self.extra_args,
        ]

    def start(self, *, wait: bool = True) -> RelayProcess:
        if self.is_running():
            raise RelayError(f"relay {self.name} is already running")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(self.env)
        self.starts += 1
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self._proc = popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        register_for_cleanup(self)
        if wait:
            self._wait_connected(offset)
        return self

    def _wait_connected(self, offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            if "connected (backend pid" in text:
                return
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RelayError(f"relay {self.name} exited with {self._proc.returncode}:\n{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RelayError(
                    f"relay {self.name} did not connect within {self.start_timeout:.0f} s:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM: the relay gives the batch in hand 10 s (its shutdown grace) before abandoning it."""
        return super().stop(timeout)

    def __repr__(self) -> str:
        return f"<RelayProcess {self.name} running={self.is_running()}>"
