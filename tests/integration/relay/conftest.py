"""Fixtures for the relay's integration tests: a migrated database, a store, relays in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import pytest

from outbox import migrate
from relay import Relay, RelayConfig

RelayRunner = Callable[..., AbstractContextManager[Relay]]


@pytest.fixture
def outbox_url(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        migrate(conn)
    return database_url


@pytest.fixture
def run_relay(outbox_url: str) -> Iterator[RelayRunner]:
    """``with run_relay(bootstrap, **config) as relay:`` runs a relay in a thread until the block ends."""
    started: list[tuple[Relay, threading.Thread]] = []

    @contextmanager
    def run(bootstrap: str, **overrides: Any) -> Iterator[Relay]:
        config = RelayConfig(
            database_url=overrides.pop("database_url", outbox_url), bootstrap_servers=bootstrap, **overrides
        )
        relay = Relay(config)
        errors: list[BaseException] = []

        def target() -> None:
            try:
                relay.run()
            except BaseException as exc:  # surfaced by the test below
                errors.append(exc)

        thread = threading.Thread(target=target, name=f"relay-{config.name}", daemon=True)
        started.append((relay, thread))
        thread.start()
        try:
            yield relay
        finally:
            relay.stop()
            thread.join(30)
            assert not thread.is_alive(), "the relay did not stop within 30 s of stop()"
        if errors:
            raise errors[0]

    yield run
    for relay, thread in started:
        relay.stop()
        thread.join(30)
