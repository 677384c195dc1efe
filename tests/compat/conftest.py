"""Fixtures for the client-compatibility suite: real clients against the real store and real Kafka.

``broker`` is parametrised over ``kafka`` (the session's Apache Kafka, fresh topic names per test)
and ``store`` (a fresh store process per test), so one scenario runs against both and asserts the
same exact observations. ``broker_no_auto_create`` does the same with topic auto-creation off: a
store started with ``--no-auto-create`` and a second, lazily started Kafka with
``auto.create.topics.enable=false``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import StoreFactory
from tests.support.kafka import KafkaBroker
from tests.support.store import StoreProcess


@dataclass(frozen=True)
class Target:
    """A broker a scenario runs against: ``kind`` is ``"kafka"`` or ``"store"``."""

    kind: str
    bootstrap: str
    log_dir: Path
    """Where the broker keeps ``<topic>-<partition>/<base offset>.log`` (the same layout on both)."""

    @property
    def is_store(self) -> bool:
        return self.kind == "store"

    def __str__(self) -> str:
        return f"{self.kind}@{self.bootstrap}"


def unique_topic(prefix: str = "compat") -> str:
    """A topic name no other test (or earlier run against the shared Kafka) has used."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return unique_topic(request.node.originalname.removeprefix("test_").replace("_", "-")[:60])


@pytest.fixture(params=[pytest.param("kafka", marks=pytest.mark.kafka), "store"])
def broker(request: pytest.FixtureRequest) -> Target:
    """The session's Apache Kafka or a fresh store process (the same scenario runs on both)."""
    if request.param == "kafka":
        kafka: KafkaBroker = request.getfixturevalue("kafka_broker")
        return Target("kafka", kafka.bootstrap, kafka.dir / "data")
    store: StoreProcess = request.getfixturevalue("store")
    return Target("store", store.bootstrap, store.data_dir)


@pytest.fixture(scope="session")
def kafka_no_auto_create() -> Iterator[KafkaBroker]:
    """A second Apache Kafka with ``auto.create.topics.enable=false`` (started only when needed)."""
    with KafkaBroker(auto_create_topics=False) as kafka:
        yield kafka


@pytest.fixture
def store_no_auto_create(store_factory: StoreFactory) -> StoreProcess:
    return store_factory(["--no-auto-create"])


@pytest.fixture(params=[pytest.param("kafka", marks=pytest.mark.kafka), "store"])
def broker_no_auto_create(request: pytest.FixtureRequest) -> Target:
    """Kafka or the store, both refusing to create unknown topics on Metadata/Produce."""
    if request.param == "kafka":
        kafka: KafkaBroker = request.getfixturevalue("kafka_no_auto_create")
        return Target("kafka", kafka.bootstrap, kafka.dir / "data")
    store: StoreProcess = request.getfixturevalue("store_no_auto_create")
    return Target("store", store.bootstrap, store.data_dir)
