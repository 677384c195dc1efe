"""G5/G6 in-process: duplicates, replay from offset 0, poison events and the dead-letter topic,
persisted attempts, fencing of a member whose partition moved, typed handlers, start_from,
metrics. The main ones run with Consumer and AsyncConsumer, against the store and Apache Kafka."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, Literal

import psycopg
import pytest
from kafka import KafkaProducer
from pydantic import BaseModel

from consumers import AsyncConsumer, ConsumedEvent, Consumer, list_dead_letters
from outbox import Event
from outbox.cli import main
from tests.integration.consumers._support import create_topic, effects, make_events, produce
from tests.integration.consumers.conftest import Running, Target, fast
from tests.support.waiting import wait_until

INSERT = "INSERT INTO effects (event_id, key, n) VALUES (%s, %s, %s)"

Check = Callable[[ConsumedEvent], None]
#: Both consumers, each with both Kafka clients.
MODES = ["sync", "async", "sync-confluent", "async-confluent"]


def consumer_for(mode: str, check: Check | None = None, **options: Any) -> Consumer | AsyncConsumer:
    """A consumer whose catch-all handler writes one effect row, then calls ``check`` (which may raise).

    ``mode`` is ``sync`` or ``async``, with ``-confluent`` for the confluent-kafka client."""
    mode, _, client = mode.partition("-")
    if client:
        options["client"] = client

    def n_of(event: ConsumedEvent) -> int | None:
        return event.payload.get("n") if isinstance(event.payload, dict) else None

    if mode == "sync":
        c = Consumer(**options)

        @c.handler()
        def handle(event: ConsumedEvent, conn: psycopg.Connection[Any]) -> None:
            conn.execute(INSERT, (event.id, event.key, n_of(event)))
            if check is not None:
                check(event)

        return c
    a = AsyncConsumer(**options)

    @a.handler()
    async def ahandle(event: ConsumedEvent, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(INSERT, (event.id, event.key, n_of(event)))
        if check is not None:
            check(event)

    return a


def options(target: Target, url: str, topic: str, **more: Any) -> dict[str, Any]:
    return fast(group=f"g-{topic}", topics=[topic], bootstrap_servers=target.bootstrap, database_url=url, **more)


def _scalar(url: str, query: str, *params: Any) -> Any:
    """The first column of the first row (None also while the SDK's tables do not exist yet)."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            row = conn.execute(query, params).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return None if row is None else row[0]


@pytest.mark.parametrize("mode", MODES)
def test_duplicates_have_one_effect_and_replay_from_zero_adds_none(
    mode: str, target: Target, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    create_topic(target.bootstrap, topic, 2)
    events = make_events(topic, ["a", "b", "c"], 10)
    produce(target.bootstrap, topic, events)
    produce(target.bootstrap, topic, events[:10])  # a relay re-publish: same ids at later offsets
    foreign = KafkaProducer(bootstrap_servers=target.bootstrap, acks="all")  # kcat-like, no event-id
    for i in range(3):
        foreign.send(topic, key=b"x", value=b'{"n": %d}' % i)
    foreign.flush()
    foreign.close()
    total = len(events) + 10 + 3

    running = start(consumer_for(mode, **options(target, effects_url, topic)))
    wait_until(lambda: len(effects(effects_url)) >= len(events) + 3, "effects of every event")
    wait_until(lambda: running.consumer.metrics().duplicates >= 10, "the duplicates seen")
    running.stop()
    first = effects(effects_url)
    assert len(first) == len({row[0] for row in first}) == len(events) + 3
    snap = running.consumer.metrics()
    assert (snap.processed, snap.duplicates) == (len(events) + 3, 10)

    # Replay both partitions from offset 0 (as after a mistaken reset): nothing is applied again.
    with psycopg.connect(effects_url, autocommit=True) as conn:
        conn.execute("UPDATE outbox.consumer_offsets SET next_offset = 0 WHERE group_id = %s", (f"g-{topic}",))
    again = start(consumer_for(mode, **options(target, effects_url, topic)))
    wait_until(lambda: again.consumer.metrics().duplicates >= total, "every record skipped")
    again.stop()
    assert effects(effects_url) == first
    assert again.consumer.metrics().processed == 0


@pytest.mark.parametrize("mode", MODES)
def test_poison_event_goes_to_the_dead_letter_topic_while_others_flow_then_replays_once(
    mode: str, target: Target, effects_url: str, topic: str, start: Callable[..., Running], tmp_path: Any
) -> None:
    create_topic(target.bootstrap, topic, 2)
    before = make_events(topic, ["a", "b", "bad"], 3)
    poison = Event(topic=topic, key="bad", type="thing.happened", payload={"key": "bad", "n": 99})
    after = make_events(topic, ["a", "b"], 3)
    after = [
        Event(topic=topic, key=e.key, type=e.type, payload={"key": e.key, "n": 10 + e.payload["n"]}) for e in after
    ]
    produce(target.bootstrap, topic, [*before, poison, *after])
    fixed = {"yes": False}

    def check(event: ConsumedEvent) -> None:
        if event.id == poison.id and not fixed["yes"]:
            raise ValueError("cannot handle this one")

    running = start(consumer_for(mode, check, **options(target, effects_url, topic, max_attempts=3)))
    wait_until(lambda: running.consumer.metrics().dead_lettered == 1, "the poison event dead-lettered")
    wait_until(lambda: len(effects(effects_url)) == len(before) + len(after), "the other events applied")
    snap = running.consumer.metrics()
    assert snap.failed == 3
    assert poison.id not in {row[0] for row in effects(effects_url)}
    with psycopg.connect(effects_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT attempts, dead_lettered_at IS NOT NULL FROM outbox.consumer_failures WHERE event_id = %s",
            (poison.id,),
        ).fetchone()
    assert row == (3, True)

    letters = list_dead_letters(target.bootstrap, f"{topic}.dlq")
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.event_id, letter.attempts, letter.original_topic) == (str(poison.id), 3, topic)
    assert letter.error is not None and "ValueError: cannot handle this one" in letter.error
    assert letter.key == b"bad" and letter.value == poison.payload_json()

    # Per key, in log order: "bad"'s earlier events before the poison; the others all in order.
    per_key: dict[str | None, list[int]] = {}
    for _, key, n in effects(effects_url):
        per_key.setdefault(key, []).append(n)
    assert per_key == {"a": [0, 1, 2, 10, 11, 12], "b": [0, 1, 2, 10, 11, 12], "bad": [0, 1, 2]}

    fixed["yes"] = True
    assert main(["dlq", "replay", "--bootstrap-servers", target.bootstrap, "--topic", f"{topic}.dlq", "--all"]) == 0
    wait_until(lambda: poison.id in {row[0] for row in effects(effects_url)}, "the replayed event applied")
    assert main(["dlq", "replay", "--bootstrap-servers", target.bootstrap, "--topic", f"{topic}.dlq",
                 "--record", letter.id]) == 0  # fmt: skip
    wait_until(lambda: running.consumer.metrics().duplicates >= 1, "the second replay skipped")
    running.stop()
    assert [row[0] for row in effects(effects_url)].count(poison.id) == 1


def test_dlq_list_cli(store_target: Target, effects_url: str, topic: str, start: Callable[..., Running],
                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    produce(store_target.bootstrap, topic, make_events(topic, ["k"], 1))

    def always(event: ConsumedEvent) -> None:
        raise RuntimeError("boom")

    running = start(consumer_for("sync", always, **options(store_target, effects_url, topic, max_attempts=1)))
    wait_until(lambda: running.consumer.metrics().dead_lettered == 1, "dead-lettered")
    running.stop()
    assert main(["dlq", "list", "--bootstrap-servers", store_target.bootstrap, "--topic", f"{topic}.dlq"]) == 0
    out = capsys.readouterr().out
    assert "RuntimeError: boom" in out and f"{topic}/0@0" in out and "0:0" in out
    assert main(["dlq", "replay", "--bootstrap-servers", store_target.bootstrap, "--topic", f"{topic}.dlq",
                 "--record", "0:7"]) == 1  # fmt: skip
    assert "no record 0:7" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["sync", "sync-confluent"])
def test_attempt_count_survives_a_restart(
    mode: str, store_target: Target, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    produce(store_target.bootstrap, topic, make_events(topic, ["k"], 1))

    def always(event: ConsumedEvent) -> None:
        raise RuntimeError("still broken")

    opts = options(store_target, effects_url, topic, max_attempts=3, retry_backoff=0.3, retry_backoff_max=0.3)
    first = start(consumer_for(mode, always, **opts))
    wait_until(lambda: first.consumer.metrics().failed >= 2, "two failed attempts")
    first.stop()
    assert first.consumer.metrics().dead_lettered == 0
    stored = int(_scalar(effects_url, "SELECT attempts FROM outbox.consumer_failures"))
    assert stored == first.consumer.metrics().failed
    second = start(consumer_for(mode, always, **opts))
    wait_until(lambda: second.consumer.metrics().dead_lettered == 1, "dead-lettered after the remaining attempts")
    second.stop()
    assert second.consumer.metrics().failed == 3 - stored
    assert effects(effects_url) == []


@pytest.mark.parametrize("mode", ["sync", "sync-confluent"])
def test_a_member_whose_partition_moved_cannot_commit(
    mode: str, store_target: Target, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    """The offset compare-and-set: another member moved the stored offset; this one rolls back and follows."""
    create_topic(store_target.bootstrap, topic, 1)
    running = start(consumer_for(mode, **options(store_target, effects_url, topic)))
    group = f"g-{topic}"
    wait_until(lambda: _scalar(effects_url, "SELECT count(*) FROM outbox.consumer_offsets WHERE group_id = %s", group),
               "the partition's offset row")  # fmt: skip
    with psycopg.connect(effects_url, autocommit=True) as conn:  # "another member" applied 0..4
        conn.execute("UPDATE outbox.consumer_offsets SET next_offset = 5 WHERE group_id = %s", (group,))
    events = make_events(topic, ["k"], 10)
    produce(store_target.bootstrap, topic, events)
    wait_until(lambda: len(effects(effects_url)) >= 5, "records 5..9 applied")
    running.stop()
    assert [n for _, _, n in effects(effects_url)] == [5, 6, 7, 8, 9]
    assert running.consumer.metrics().lost_partitions >= 1
    assert _scalar(effects_url, "SELECT next_offset FROM outbox.consumer_offsets WHERE group_id = %s", group) == 10


class Payload(BaseModel):
    key: str
    n: int


class ThingHappened(Event):
    type: Literal["thing.happened"] = "thing.happened"
    payload: Payload


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_typed_handlers_get_validated_events_and_bad_payloads_are_failed_attempts(
    mode: str, store_target: Target, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    good = make_events(topic, ["k"], 2)
    bad = Event(topic=topic, key="k", type="thing.happened", payload={"key": "k", "n": "not a number"})
    other = Event(topic=topic, key="k", type="other", payload=None)
    produce(store_target.bootstrap, topic, [good[0], bad, other, good[1]])
    seen: list[Any] = []
    opts = options(store_target, effects_url, topic, max_attempts=2)
    if mode == "sync":
        c: Consumer | AsyncConsumer = Consumer(**opts)

        @c.handler("thing.happened")
        def typed(event: ThingHappened, conn: psycopg.Connection[Any]) -> None:
            seen.append(event)
            conn.execute(INSERT, (event.id, event.key, event.payload.n))
    else:
        c = AsyncConsumer(**opts)

        @c.handler("thing.happened")
        async def atyped(event: ThingHappened, conn: psycopg.AsyncConnection[Any]) -> None:
            seen.append(event)
            await conn.execute(INSERT, (event.id, event.key, event.payload.n))

    running = start(c)
    wait_until(lambda: running.consumer.metrics().processed == 2 and running.consumer.metrics().skipped == 1,
               "the good events applied, the other type skipped")  # fmt: skip
    running.stop()
    assert running.consumer.metrics().dead_lettered == 1
    # A batch that fails is re-run record by record: a handler may see an event twice (effects: once).
    assert list(dict.fromkeys(e.id for e in seen)) == [good[0].id, good[1].id]
    assert all(isinstance(e, ThingHappened) and e.created_at == good[0].created_at.replace(
        microsecond=good[0].created_at.microsecond // 1000 * 1000) for e in seen[:1])  # fmt: skip
    assert [n for _, _, n in effects(effects_url)] == [0, 1]


@pytest.mark.parametrize("mode", ["sync", "async-confluent"])
def test_start_from_latest_skips_what_came_before(
    mode: str, store_target: Target, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    create_topic(store_target.bootstrap, topic, 1)
    produce(store_target.bootstrap, topic, make_events(topic, ["old"], 3))
    running = start(consumer_for(mode, **options(store_target, effects_url, topic, start_from="latest")))
    wait_until(lambda: _scalar(effects_url, "SELECT next_offset FROM outbox.consumer_offsets") == 3, "pinned at 3")
    produce(store_target.bootstrap, topic, make_events(topic, ["new"], 2))
    wait_until(lambda: len(effects(effects_url)) == 2, "the new events")
    running.stop()
    assert {key for _, key, _ in effects(effects_url)} == {"new"}


def test_metrics_snapshot_and_prometheus_text(
    store_target: Target, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    produce(store_target.bootstrap, topic, make_events(topic, ["k"], 5))
    running = start(consumer_for("sync", **options(store_target, effects_url, topic, metrics_port=0)))
    wait_until(lambda: running.consumer.metrics().processed == 5, "processed")
    wait_until(lambda: running.consumer.metrics().lag.get(f"{topic}/0") == 0, "lag 0")
    port = running.consumer.metrics_port
    assert port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    running.stop()
    group = f'group="g-{topic}"'
    assert f"outbox_consumer_processed_total{{{group}}} 5" in text
    assert f'outbox_consumer_lag{{{group},topic="{topic}",partition="0"}} 0' in text
    assert f'outbox_consumer_handler_seconds_bucket{{{group},le="+Inf"}} 5' in text
    snap = running.consumer.metrics()
    assert snap.handler_seconds_count == 5 and snap.handler_seconds_quantile(0.99) is not None


def test_processed_ids_are_pruned_by_age(
    store_target: Target, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    produce(store_target.bootstrap, topic, make_events(topic, ["k"], 4))
    c = consumer_for("sync", **options(store_target, effects_url, topic))
    running = start(c)
    wait_until(lambda: c.metrics().processed == 4, "processed")
    running.stop()
    with psycopg.connect(effects_url, autocommit=True) as conn:
        conn.execute("UPDATE outbox.consumer_processed SET processed_at = now() - interval '15 days' "
                     "WHERE event_id IN (SELECT event_id FROM outbox.consumer_processed LIMIT 3)")  # fmt: skip
    assert isinstance(c, Consumer)
    assert c.prune() == 3
    assert _scalar(effects_url, "SELECT count(*) FROM outbox.consumer_processed") == 1


def test_db_cli_creates_and_prints_the_consumer_tables(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "migrate", "--database-url", database_url, "--schema", "svc"]) == 0
    out = capsys.readouterr().out
    assert "svc consumer tables: applied migration(s) 0001" in out
    assert main(["db", "migrate", "--database-url", database_url, "--schema", "svc", "--only", "consumers"]) == 0
    assert capsys.readouterr().out == "svc consumer tables: up to date\n"
    assert main(["db", "sql", "--schema", "svc"]) == 0
    printed = capsys.readouterr().out
    assert 'CREATE TABLE IF NOT EXISTS "svc"."consumer_offsets"' in printed
    assert 'CREATE TABLE IF NOT EXISTS "svc"."events"' in printed


def test_printed_sql_builds_what_migrate_builds(postgres: Any) -> None:
    from consumers import migrate, sql_text

    names = [f"c_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    urls = [postgres.create_database(n) for n in names]
    catalog = (
        "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'My Schema' ORDER BY 1, 2"
    )
    try:
        with psycopg.connect(urls[0]) as conn:
            assert migrate(conn, schema="My Schema") == [1]
            assert migrate(conn, schema="My Schema") == []
        with psycopg.connect(urls[1]) as conn:
            conn.execute(sql_text(schema="My Schema").encode())
            conn.commit()
            assert migrate(conn, schema="My Schema") == []
        results = []
        for url in urls:
            with psycopg.connect(url) as conn:
                results.append(conn.execute(catalog).fetchall())
        assert results[0] == results[1] and len(results[0]) > 10
    finally:
        for n in names:
            postgres.drop_database(n)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_store_restart_does_not_end_the_consumer(
    mode: str, store: Any, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    """A store killed and restarted under a running consumer: it reconnects and goes on."""
    target = Target("store", store.bootstrap)
    create_topic(target.bootstrap, topic, 1)
    first = make_events(topic, ["k"], 5)
    produce(target.bootstrap, topic, first)
    running = start(consumer_for(mode, **options(target, effects_url, topic)))
    wait_until(lambda: len(effects(effects_url)) >= 5, "the first five effects")
    store.restart(kill=True)
    second = make_events(topic, ["k"], 5)
    produce(target.bootstrap, topic, second)
    wait_until(lambda: len(effects(effects_url)) >= 10, "the five produced after the restart", timeout=60)
    assert running.thread.is_alive() and running.error is None, running.error
    running.stop()
    assert sorted(e[0] for e in effects(effects_url)) == sorted(e.id for e in first + second)


@pytest.mark.parametrize("mode", ["sync", "async-confluent"])
def test_batch_handler_applies_each_event_once_in_order_and_dead_letters_a_poison_event_alone(
    mode: str, store_target: Target, effects_url: str, topic: str, start: Callable[..., Running]
) -> None:
    """A batch handler gets lists of consecutive records of its type (duplicates left out); a record
    for a per-event handler splits them; a failing list is re-run one record at a time, so only the
    poison event is retried and dead-lettered."""
    create_topic(store_target.bootstrap, topic, 1)
    before = make_events(topic, ["a", "b"], 20)
    poison = Event(topic=topic, key="a", type="thing.happened", payload={"key": "a", "n": 99})
    other = Event(topic=topic, key="b", type="other.thing", payload={"key": "b", "n": 50})
    after = [
        Event(topic=topic, key=e.key, type=e.type, payload={"key": e.key, "n": 100 + e.payload["n"]})
        for e in make_events(topic, ["a", "b"], 5)
    ]
    produce(store_target.bootstrap, topic, [*before, other, *before[:5], poison, *after])
    sizes: list[int] = []

    def rows(events: list[ConsumedEvent]) -> list[tuple[Any, ...]]:
        sizes.append(len(events))
        if any(e.id == poison.id for e in events):
            raise ValueError("cannot handle this one")
        return [(e.id, e.key, e.payload["n"]) for e in events]

    mode, _, client = mode.partition("-")
    opts = options(store_target, effects_url, topic, max_attempts=2, **({"client": client} if client else {}))
    c: Consumer | AsyncConsumer
    if mode == "sync":
        c = Consumer(**opts)

        @c.batch_handler("thing.happened")
        def many(events: list[ConsumedEvent], conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(INSERT, rows(events))

        @c.handler("other.thing")
        def one(event: ConsumedEvent, conn: psycopg.Connection[Any]) -> None:
            conn.execute(INSERT, (event.id, event.key, event.payload["n"]))

    else:
        c = AsyncConsumer(**opts)

        @c.batch_handler("thing.happened")
        async def amany(events: list[ConsumedEvent], conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(INSERT, rows(events))

        @c.handler("other.thing")
        async def aone(event: ConsumedEvent, conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(INSERT, (event.id, event.key, event.payload["n"]))

    running = start(c)
    wait_until(lambda: running.consumer.metrics().dead_lettered == 1, "the poison event dead-lettered")
    wait_until(lambda: len(effects(effects_url)) == len(before) + 1 + len(after), "the other events applied")
    running.stop()
    snap = running.consumer.metrics()
    assert (snap.failed, snap.duplicates) == (2, 5)
    applied = effects(effects_url)
    assert len({row[0] for row in applied}) == len(applied) and poison.id not in {row[0] for row in applied}
    per_key: dict[str | None, list[int | None]] = {}
    for _, key, n in applied:
        per_key.setdefault(key, []).append(n)
    assert per_key == {"a": [*range(20), *range(100, 105)], "b": [*range(20), 50, *range(100, 105)]}
    assert max(sizes) > 1  # lists, not one call per record
    assert len(letters := list_dead_letters(store_target.bootstrap, f"{topic}.dlq")) == 1
    assert letters[0].event_id == str(poison.id)
