"""A consumer process of the chaos campaign: ``python -m tests.chaos.worker ...``.

Its handler writes one ``chaos_effects`` row per event (event id, key, per-key sequence, the
partition and offset it came from, this member and its incarnation), in the SDK's transaction, so
the effect table *is* the history of applied effects. Crash points are armed from
``OUTBOX_CRASH_POINTS`` (``consumer.in_handler``, ``consumer.after_effect_commit``), like the relay. ``$CHAOS_CLOCK_FILE`` names the file of
this process's wall-clock offset (:mod:`tests.chaos.clock`), installed before the SDK is imported.
Exits 0 after SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from tests.chaos import clock

if TYPE_CHECKING:
    from consumers import ConsumedEvent

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS chaos_effects (
    id bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    key text,
    seq integer,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    member text NOT NULL,
    incarnation integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""
INSERT = (
    'INSERT INTO chaos_effects (event_id, key, seq, partition, "offset", member, incarnation) '
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


def main() -> int:
    clock.install()
    from consumers import AsyncConsumer, Consumer
    from outbox import _faults

    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--member", required=True)
    p.add_argument("--incarnation", type=int, default=0)
    p.add_argument("--mode", choices=("sync", "async"), default="sync")
    p.add_argument("--session-timeout-ms", type=int, default=3000)
    p.add_argument("--max-batch", type=int, default=100)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.member} %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    _faults.arm(os.environ.get("OUTBOX_CRASH_POINTS"))

    def row(event: ConsumedEvent) -> tuple[Any, ...]:
        payload = event.payload if isinstance(event.payload, dict) else {}
        return (event.id, event.key, payload.get("seq"), event.partition, event.offset, args.member, args.incarnation)

    common: dict[str, Any] = {
        "group": args.group,
        "topics": [args.topic],
        "bootstrap_servers": args.bootstrap,
        "database_url": args.database_url,
        "session_timeout_ms": args.session_timeout_ms,
        "heartbeat_interval_ms": max(100, args.session_timeout_ms // 6),
        "retry_backoff": 0.05,
        "retry_backoff_max": 0.5,
        "max_attempts": 1_000_000,  # no poison events here: a failure is a fault, never a dead letter
        "max_batch": args.max_batch,
        "client_id": args.member,
    }
    if args.mode == "sync":
        consumer = Consumer(**common)

        @consumer.handler()
        def handle(event: ConsumedEvent, conn: Any) -> None:
            conn.execute(INSERT, row(event))

        consumer.run()
    else:
        aconsumer = AsyncConsumer(**common)

        @aconsumer.handler()
        async def ahandle(event: ConsumedEvent, conn: Any) -> None:
            await conn.execute(INSERT, row(event))

        asyncio.run(aconsumer.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
