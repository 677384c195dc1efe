"""A consumer started while its database is unreachable (PostgreSQL restarting, failing over, not
up yet) waits for it, as a running consumer does, instead of ending ``run()``; ``stop()`` still
ends the wait. Found by the chaos campaign: a worker started during a PostgreSQL restart exited 1.

The database sits behind a TCP proxy (tests/chaos/proxy.py) that is started only later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from consumers import AsyncConsumer, ConsumedEvent, Consumer
from tests.chaos.proxy import FaultProxy
from tests.integration.consumers._support import create_topic, effects, make_events, produce
from tests.integration.consumers.conftest import Running, Target, fast
from tests.support._proc import free_port
from tests.support.waiting import wait_until


def _via_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_consumer_started_before_its_database_waits_for_it(
    kind: str, effects_url: str, store_target: Target, topic: str, start: Callable[[Any], Running]
) -> None:
    create_topic(store_target.bootstrap, topic, 1)
    events = make_events(topic, ["a", "b"], 2)
    produce(store_target.bootstrap, topic, events)
    port = free_port()
    cls = AsyncConsumer if kind == "async" else Consumer
    consumer = cls(group=f"g-{topic}", topics=[topic], bootstrap_servers=store_target.bootstrap,
                   database_url=_via_port(effects_url, port), **fast())  # fmt: skip
    insert = "INSERT INTO effects (event_id, key, n) VALUES (%s, %s, %s)"
    if kind == "async":

        @consumer.handler()
        async def apply_async(event: ConsumedEvent, conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(insert, (event.id, event.key, event.payload["n"]))

    else:

        @consumer.handler()
        def apply(event: ConsumedEvent, conn: psycopg.Connection[Any]) -> None:
            conn.execute(insert, (event.id, event.key, event.payload["n"]))

    running = start(consumer)
    time.sleep(1.5)  # several refused connection attempts
    assert running.thread.is_alive() and running.error is None, running.error
    target = urlsplit(effects_url)
    proxy = FaultProxy(port, "127.0.0.1", int(target.port or 5432), name="postgres").start()
    try:
        wait_until(lambda: len(effects(effects_url)) == len(events), timeout=60, what="the events' effects")
        assert sorted(e[0] for e in effects(effects_url)) == sorted(e.id for e in events)
        running.stop()
    finally:
        proxy.close()


def test_stop_ends_the_wait_for_an_unreachable_database(database_url: str, start: Callable[[Any], Running]) -> None:
    consumer = Consumer(group="g-never", topics=["t"], bootstrap_servers="127.0.0.1:1",
                        database_url=_via_port(database_url, free_port()))  # fmt: skip

    @consumer.handler()
    def ignore(event: ConsumedEvent, conn: psycopg.Connection[Any]) -> None:
        raise AssertionError("no event can arrive")

    running = start(consumer)
    time.sleep(0.5)
    running.stop()  # returns, without an error, although the database never answered
