"""A consumer process for the fault tests: ``python -m tests.integration.consumers._worker ...``.

Its handler writes one row to ``effects`` per event. ``--die-in-handler P`` makes it kill -9 itself
inside the handler (after its INSERT, before the commit) with probability P per call;
``--die-after-commit P`` right after a batch committed (before the broker offset commit).
``--fail-key K`` makes the handler raise for events of key K (a poison event) unless the
``fixed`` file exists. It exits 0 after SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

from consumers import AsyncConsumer, ConsumedEvent, Consumer
from consumers._core import PartitionState

INSERT = "INSERT INTO effects (event_id, key, n, member) VALUES (%s, %s, %s, %s)"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--member", required=True)
    p.add_argument("--mode", choices=("sync", "async"), default="sync")
    p.add_argument("--client", choices=("kafka-python", "confluent"), default="kafka-python")
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    p.add_argument("--die-in-handler", type=float, default=0.0)
    p.add_argument("--die-after-commit", type=float, default=0.0)
    p.add_argument("--fail-key")
    p.add_argument("--fixed-file")
    p.add_argument("--max-attempts", type=int, default=5)
    p.add_argument("--max-batch", type=int, default=50)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.member} %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    rng = random.Random()

    def fail(event: ConsumedEvent) -> None:
        poison = args.fail_key is not None and event.key == args.fail_key
        if poison and (args.fixed_file is None or not Path(args.fixed_file).exists()):
            raise RuntimeError(f"poison event {event.id}")

    def after_commit_hook(base: Any) -> Any:
        class Hooked(base):  # type: ignore[misc, valid-type]
            def _after_commit(self, state: PartitionState, next_offset: int) -> None:
                super()._after_commit(state, next_offset)
                if rng.random() < args.die_after_commit:
                    _die()

        return Hooked

    common = {
        "group": args.group,
        "topics": [args.topic],
        "bootstrap_servers": args.bootstrap,
        "database_url": args.database_url,
        "session_timeout_ms": args.session_timeout_ms,
        "heartbeat_interval_ms": min(500, args.session_timeout_ms // 3),
        "max_attempts": args.max_attempts,
        "retry_backoff": 0.05,
        "retry_backoff_max": 0.2,
        "max_batch": args.max_batch,
        "client_id": args.member,
        "client": args.client,
    }
    if args.mode == "sync":
        consumer = after_commit_hook(Consumer)(**common)

        @consumer.handler()
        def handle(event: ConsumedEvent, conn: Any) -> None:
            conn.execute(INSERT, (event.id, event.key, event.payload.get("n"), args.member))
            fail(event)
            if rng.random() < args.die_in_handler:
                _die()

        consumer.run()
    else:
        aconsumer = after_commit_hook(AsyncConsumer)(**common)

        @aconsumer.handler()
        async def ahandle(event: ConsumedEvent, conn: Any) -> None:
            await conn.execute(INSERT, (event.id, event.key, event.payload.get("n"), args.member))
            fail(event)
            if rng.random() < args.die_in_handler:
                _die()

        asyncio.run(aconsumer.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
