"""The doorbell: how a relay learns about new events without NOTIFY on the writers' hot path.

Why not NOTIFY on every insert: a committing transaction with pending notifications takes a
cluster-wide lock and holds it through its WAL flush, so notifying commits cannot group-commit.
performance.md 3.2 measured -48 % TPS at 4 writers and -69 % at 16 (-80 % in a quiet re-check).

The design (migration 0002): a statement-level AFTER INSERT trigger on the outbox table calls
``pg_try_advisory_xact_lock_shared(doorbell_lock)``.

* No relay asleep: the shared lock is granted (uncontended; the transaction keeps it until it
  ends) and nothing else happens. This is the cost a busy relay puts on writers: one lock-table
  entry per transaction, no NOTIFY.
* A relay asleep holds ``doorbell_lock`` exclusively (a session lock on its LISTEN connection):
  the try fails and the trigger runs ``pg_notify(channel, '')``, delivered at commit only.

The relay's side (functions below; the SQL is in ``queries.sql``), on its dedicated, autocommit,
non-pooled LISTEN connection:

1. ``LISTEN channel``; then loop: claim and publish until a claim comes back empty.
2. Linger: keep polling for a short while (e.g. 10-50 ms) before sleeping, so that a steady
   trickle of writes is picked up by polls rather than by a NOTIFY per transaction.
3. :func:`try_arm`. False means some writer's transaction that inserted is still open: its event
   is about to commit, so poll again shortly instead of sleeping.
4. True: scan once more (anything committed before arming is visible now). Rows: :func:`disarm`
   and go to 1. None: wait for a notification or the fallback poll interval, then :func:`disarm`
   and go to 1.

Why no event is slept through: a writer whose row the last scan missed had not committed. If its
trigger ran before the relay armed, it still held the shared lock, so arming would have failed;
so its trigger ran after arming, found the lock taken, and notified. Snapshots play no part (lock
state is not MVCC), so this holds for REPEATABLE READ and SERIALIZABLE writers too.

Costs and limits: while a relay sleeps, every committing writer notifies (the relay disarms on
the first wake-up, so this lasts about one wake-up latency); a relay stuck while armed makes
every commit notify (correct, but as slow as the classic design), so the relay must hold the lock
only while it waits. A writer transaction that stays open for long keeps relays from arming:
they keep polling. Only one relay can hold the doorbell; other idle relays on the same channel
are woken by the same NOTIFY (they LISTEN too) but must poll at their fallback interval while
another relay holds it. Notifications are lost when the relay's connection drops; the relay
always scans after (re)connecting and always polls as a fallback.
"""

from __future__ import annotations

from typing import Any

import psycopg

from outbox._table import DEFAULT_SCHEMA, DEFAULT_TABLE, OutboxTable

__all__ = ["disarm", "try_arm"]


def try_arm(
    conn: psycopg.Connection[Any], doorbell_lock: int, *, schema: str = DEFAULT_SCHEMA, table: str = DEFAULT_TABLE
) -> bool:
    """Take the doorbell (session lock) if no writer's transaction is open; True if taken.

    Call on the relay's autocommit LISTEN connection, after LISTEN, when there was no work.
    """
    row = conn.execute(OutboxTable(schema, table).query("arm_doorbell"), {"doorbell_lock": doorbell_lock}).fetchone()
    return bool(row and row[0])


def disarm(
    conn: psycopg.Connection[Any], doorbell_lock: int, *, schema: str = DEFAULT_SCHEMA, table: str = DEFAULT_TABLE
) -> None:
    """Release the doorbell as soon as the relay is awake (a notification or the poll timeout)."""
    conn.execute(OutboxTable(schema, table).query("disarm_doorbell"), {"doorbell_lock": doorbell_lock})
