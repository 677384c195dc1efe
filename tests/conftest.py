"""Shared fixtures: a real PostgreSQL, a real Apache Kafka and the real stream store (tests/support).

A dependency that is missing (PostgreSQL binaries, Java, Maven) makes the tests that need it
error with a message saying what to install; nothing is skipped silently. Tests that use these
fixtures get the ``postgres``/``kafka`` markers automatically, so ``-m 'not kafka'`` works.

Every server is a child process that the kernel kills if pytest dies; fixture teardown stops
them on failures and Ctrl-C, and SIGTERM to pytest is turned into an interrupt so teardown runs.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Protocol

import pytest

from tests.support._proc import log_tail
from tests.support.kafka import KafkaBroker, kafka_jars, kafka_jars_cached
from tests.support.postgres import PostgresServer
from tests.support.store import StoreError, StoreProcess

logger = logging.getLogger(__name__)

_POSTGRES_FIXTURES = frozenset({"postgres", "database_url", "private_postgres"})
_KAFKA_FIXTURES = frozenset({"kafka_broker"})

_stores_key = pytest.StashKey[list[StoreProcess]]()


# -- hooks ------------------------------------------------------------------------------------


def _sigterm_to_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A CI timeout or `kill` sends SIGTERM; as an interrupt it lets fixture teardown stop servers
    # and delete their temp dirs (the kernel would kill the servers anyway, but not clean up).
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the servers they use, before ``-m`` deselection runs."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if names & _KAFKA_FIXTURES:
            item.add_marker(pytest.mark.kafka)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    """Attach the log of every store a failed test started to its report."""
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed:
        for store in item.stash.get(_stores_key, []):
            report.sections.append((f"store log {store.log_path}", log_tail(store.log_path, 20_000)))
    return report


# -- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL: ``OUTBOX_TEST_DATABASE_URL`` if set, else a throw-away cluster.

    Do not stop or restart it (it may be external, and other tests share it): use
    ``private_postgres`` for that.
    """
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


_database_numbers = itertools.count(1)


@pytest.fixture
def database_url(postgres: PostgresServer) -> Iterator[str]:
    """DSN of a fresh, empty database for this test (dropped afterwards)."""
    if postgres.managed and not postgres.is_running():
        logger.warning("the session PostgreSQL was left stopped by an earlier test; starting it again")
        postgres.start()
    name = f"test_{os.getpid()}_{next(_database_numbers)}_{uuid.uuid4().hex[:8]}"
    dsn = postgres.create_database(name)
    yield dsn
    try:
        postgres.drop_database(name)
    except Exception as exc:  # litter in a throw-away cluster is harmless; say so and go on
        logger.warning("could not drop test database %s: %s", name, exc)


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, for tests that stop, restart or crash it."""
    server = PostgresServer(use_env=False)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# -- Apache Kafka -----------------------------------------------------------------------------


def _resolve_kafka_jars_visibly(config: pytest.Config) -> None:
    """Resolve the jars with pytest's capture off, so a first (slow) Maven download shows up."""
    if kafka_jars_cached():
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        # Created inside the block: sys.stderr is pytest's capture buffer outside it.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[kafka jars] %(message)s"))
        kafka_logger = logging.getLogger("tests.support.kafka")
        previous_level = kafka_logger.level
        kafka_logger.addHandler(handler)
        kafka_logger.setLevel(logging.INFO)
        try:
            sys.stderr.write("\n")
            kafka_jars()
        finally:
            kafka_logger.removeHandler(handler)
            kafka_logger.setLevel(previous_level)


@pytest.fixture(scope="session")
def kafka_broker(pytestconfig: pytest.Config) -> Iterator[KafkaBroker]:
    """A session-wide single-node Apache Kafka (KRaft), topic auto-creation on."""
    _resolve_kafka_jars_visibly(pytestconfig)
    broker = KafkaBroker(auto_create_topics=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.cleanup()


# -- the stream store -------------------------------------------------------------------------


class StoreFactory(Protocol):
    """Signature of the ``store_factory`` fixture."""

    def __call__(
        self,
        extra_args: Sequence[str] = (),
        *,
        data_dir: Path | None = None,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> StoreProcess: ...


@pytest.fixture
def store_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    """Make stream store processes (started unless ``start=False``); all are stopped after the test.

    Each gets its own work dir under ``tmp_path`` (ready file, log); ``data_dir`` defaults to
    ``<work dir>/data``, pass the same one to a second store to reopen a data dir.
    A store that does not exit on SIGTERM within its timeout fails the test in teardown.
    """
    stores: list[StoreProcess] = []
    request.node.stash[_stores_key] = stores
    numbers: Callable[[], int] = itertools.count(1).__next__

    def make(
        extra_args: Sequence[str] = (),
        *,
        data_dir: Path | None = None,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> StoreProcess:
        work_dir = tmp_path / f"store-{numbers()}"
        work_dir.mkdir()
        proc = StoreProcess(data_dir, port=port, extra_args=extra_args, work_dir=work_dir, env=env)
        stores.append(proc)
        if start:
            proc.start()
        return proc

    yield make
    errors: list[StoreError] = []
    for proc in reversed(stores):
        try:
            proc.cleanup()
        except StoreError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def store(store_factory: StoreFactory) -> StoreProcess:
    """A fresh stream store on an ephemeral loopback port with its data dir in ``tmp_path``."""
    return store_factory()
