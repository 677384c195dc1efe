"""publish_async(): the same contract as publish() on psycopg's AsyncConnection/AsyncCursor."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from outbox import Event, OutboxError, SchemaError, TransactionStateError, publish, publish_async
from tests.integration.outbox._support import rows


def ev(key: str | None = "k") -> Event:
    return Event(topic="t", key=key, type="t", payload={"key": key})


def test_commit_and_rollback(outbox_url: str) -> None:
    kept, dropped = ev("a"), ev("b")

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(outbox_url) as conn:
            async with conn.transaction():
                await publish_async(conn, kept)
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await publish_async(conn, [dropped, ev(None)])
                    raise RuntimeError("fail")
            await publish_async(conn, ev("c"))  # implicit transaction, never committed by us
            assert conn.info.transaction_status == TransactionStatus.INTRANS
            await conn.rollback()

    asyncio.run(main())
    assert [r[0] for r in rows(outbox_url)] == [kept.id]


def test_cursor_autocommit_and_wrong_connection_kind(outbox_url: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(outbox_url, autocommit=True) as conn:
            with pytest.raises(TransactionStateError, match="autocommit"):
                await publish_async(conn, ev())
            async with conn.transaction(), conn.cursor() as cur:
                await publish_async(cur, [ev("x"), ev("y")])
            with pytest.raises(SchemaError, match="outbox db migrate"):
                async with conn.transaction():
                    await publish_async(conn, ev(), table="missing")
        with psycopg.connect(outbox_url) as sync_conn:
            with pytest.raises(OutboxError, match="use publish\\(\\)"):
                await publish_async(sync_conn, ev())  # type: ignore[arg-type]
            async with await psycopg.AsyncConnection.connect(outbox_url) as aconn:
                with pytest.raises(OutboxError, match="use publish_async\\(\\)"):
                    publish(aconn, ev())  # type: ignore[arg-type]

    asyncio.run(main())
    assert [r[2] for r in rows(outbox_url)] == ["x", "y"]


def test_a_second_publisher_of_a_key_waits_for_the_first_to_commit(outbox_url: str) -> None:
    first, second = ev("K"), ev("K")

    async def main() -> list[str]:
        order: list[str] = []
        async with (
            await psycopg.AsyncConnection.connect(outbox_url) as t1,
            await psycopg.AsyncConnection.connect(outbox_url) as t2,
        ):
            await publish_async(t1, first)

            async def later() -> None:
                await publish_async(t2, second)
                await t2.commit()
                order.append("t2")

            task = asyncio.create_task(later())
            await asyncio.sleep(0.3)
            assert not task.done()  # blocked on the key's lock
            await t1.commit()
            order.append("t1")
            await asyncio.wait_for(task, 10)
        return order

    assert asyncio.run(main()) == ["t1", "t2"]
    assert [r[0] for r in rows(outbox_url)] == [first.id, second.id]


def test_batches_in_many_tasks_do_not_deadlock(outbox_url: str) -> None:
    keys = [f"k{i}" for i in range(6)]

    async def writer(n: int) -> None:
        async with await psycopg.AsyncConnection.connect(outbox_url) as conn:
            await conn.execute("SET deadlock_timeout = '100ms'")
            await conn.commit()
            for r in range(15):
                picked = keys[n % 3 :] + keys[: n % 3] if (n + r) % 2 else list(reversed(keys))
                async with conn.transaction():
                    await publish_async(conn, [ev(k) for k in picked])

    async def main() -> None:
        await asyncio.gather(*(writer(n) for n in range(6)))

    asyncio.run(main())
    assert rows(outbox_url, "SELECT count(*) FROM outbox.events") == [(6 * 15 * 6,)]

