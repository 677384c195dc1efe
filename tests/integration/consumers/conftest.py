"""Fixtures of the consumer SDK's integration tests: a broker (the store, or Apache Kafka), a fresh
consumer database with the ``effects`` table, and running consumers in background threads."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from consumers import AsyncConsumer, Consumer
from tests.integration.consumers._support import EFFECTS_DDL


@dataclass
class Target:
    name: str
    bootstrap: str


@pytest.fixture(params=["store", pytest.param("kafka", marks=pytest.mark.kafka)])
def target(request: pytest.FixtureRequest) -> Target:
    """The built-in store and Apache Kafka."""
    if request.param == "kafka":
        return Target("kafka", request.getfixturevalue("kafka_broker").bootstrap)
    return Target("store", request.getfixturevalue("store").bootstrap)


@pytest.fixture
def store_target(store: Any) -> Target:
    return Target("store", store.bootstrap)


@pytest.fixture
def effects_url(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)
    return database_url


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


class Running:
    """A consumer running ``run()`` in a thread (asyncio.run for an AsyncConsumer)."""

    def __init__(self, consumer: Consumer | AsyncConsumer) -> None:
        self.consumer = consumer
        self.error: BaseException | None = None

        def target() -> None:
            try:
                if isinstance(consumer, AsyncConsumer):
                    asyncio.run(consumer.run())
                else:
                    consumer.run()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.consumer.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "run() did not return after stop()"
        if self.error is not None:
            raise self.error


@pytest.fixture
def start() -> Iterator[Callable[[Consumer | AsyncConsumer], Running]]:
    running: list[Running] = []

    def make(consumer: Consumer | AsyncConsumer) -> Running:
        r = Running(consumer)
        running.append(r)
        return r

    yield make
    for r in running:
        if r.thread.is_alive():
            r.consumer.stop()
            r.thread.join(30)


def fast(**overrides: Any) -> dict[str, Any]:
    """Consumer options for quick tests: short group timings, fast retries."""
    options: dict[str, Any] = {
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "retry_backoff": 0.05,
        "retry_backoff_max": 0.2,
    }
    options.update(overrides)
    return options
