"""``outbox status``: what is waiting, who owns which bucket, when each relay last published."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from outbox._table import OutboxTable
from outbox.schema import read_settings
from relay.leadership import LockHolders, lock_namespace

__all__ = ["BucketStatus", "RelayStatus", "Status", "format_status", "read_status"]

# A relay's row whose heartbeat is older than this belongs to a relay that is gone.
STALE_AFTER = timedelta(seconds=15)


@dataclass(frozen=True)
class RelayStatus:
    name: str
    backend_pid: int
    host: str
    started_at: datetime
    heartbeat_at: datetime
    last_publish_at: datetime | None
    published: int
    buckets: list[int]
    alive: bool


@dataclass(frozen=True)
class BucketStatus:
    bucket: int
    owner: str | None
    events: int
    oldest: datetime | None


@dataclass(frozen=True)
class Status:
    table: str
    buckets: int
    backlog: int
    oldest: datetime | None
    relays: list[RelayStatus]
    bucket_status: list[BucketStatus] = field(default_factory=list)

    @property
    def oldest_age(self) -> float:
        return (datetime.now(UTC) - self.oldest).total_seconds() if self.oldest is not None else 0.0

    @property
    def orphaned_buckets(self) -> list[int]:
        return [b.bucket for b in self.bucket_status if b.owner is None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "buckets": self.buckets,
            "backlog": self.backlog,
            "oldest_event_at": _iso(self.oldest),
            "oldest_event_age_seconds": round(self.oldest_age, 3),
            "orphaned_buckets": self.orphaned_buckets,
            "relays": [
                {
                    "name": r.name,
                    "alive": r.alive,
                    "backend_pid": r.backend_pid,
                    "host": r.host,
                    "started_at": _iso(r.started_at),
                    "heartbeat_at": _iso(r.heartbeat_at),
                    "last_publish_at": _iso(r.last_publish_at),
                    "published": r.published,
                    "buckets": r.buckets,
                }
                for r in self.relays
            ],
            "bucket_status": [
                {"bucket": b.bucket, "owner": b.owner, "events": b.events, "oldest_event_at": _iso(b.oldest)}
                for b in self.bucket_status
            ],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def read_status(conn: psycopg.Connection[Any], *, schema: str, table: str) -> Status:
    """Read everything ``outbox status`` shows, in one snapshot-ish pass (read-only)."""
    target = OutboxTable(schema, table)
    settings = read_settings(conn, schema=schema, table=table)
    namespace = lock_namespace(settings.doorbell_lock)
    with conn.transaction():
        holders = LockHolders.from_rows(
            (int(o), int(p))
            for o, p in conn.execute(target.query("lock_holders"), {"namespace_oid": namespace & 0xFFFFFFFF}).fetchall()
        )
        relay_rows = conn.execute(target.query("relays")).fetchall()
        per_bucket = {int(b): (int(n), oldest) for b, n, oldest in conn.execute(target.query("backlog_by_bucket"))}
    live_pids = holders.members | set(holders.buckets.values())
    relays = []
    name_by_pid: dict[int, str] = {}
    for name, pid, host, started, heartbeat, last_publish, published, buckets, age in relay_rows:
        alive = pid in live_pids and age < STALE_AFTER
        if alive:
            name_by_pid[pid] = name
        relays.append(
            RelayStatus(name, pid, host, started, heartbeat, last_publish, int(published), list(buckets), alive)
        )
    bucket_status = []
    for b in range(settings.buckets):
        pid = holders.buckets.get(b)
        owner = None if pid is None else name_by_pid.get(pid, f"backend pid {pid}")
        events, oldest = per_bucket.get(b, (0, None))
        bucket_status.append(BucketStatus(b, owner, events, oldest))
    backlog = sum(n for n, _ in per_bucket.values())
    oldests = [o for _, o in per_bucket.values() if o is not None]
    return Status(target.qualified, settings.buckets, backlog, min(oldests) if oldests else None, relays, bucket_status)


def format_status(status: Status) -> str:
    """The human-readable report."""
    lines = [
        f"outbox {status.table}: {status.backlog} event(s) waiting"
        + (f", oldest {status.oldest_age:.1f} s old" if status.oldest is not None else ""),
    ]
    orphaned = status.orphaned_buckets
    owned = status.buckets - len(orphaned)
    lines.append(
        f"buckets: {owned} of {status.buckets} owned" + (f"; no owner: {_ranges(orphaned)}" if orphaned else "")
    )
    if not status.relays:
        lines.append("relays: none has run yet")
    for r in status.relays:
        state = "alive" if r.alive else "gone (stale heartbeat)"
        last = r.last_publish_at.isoformat(timespec="seconds") if r.last_publish_at else "never"
        lines.append(
            f"relay {r.name} [{state}] pid {r.backend_pid} on {r.host}: {len(r.buckets)} bucket(s) "
            f"{_ranges(r.buckets)}, published {r.published}, last publish {last}"
        )
    waiting = [b for b in status.bucket_status if b.events]
    if waiting:
        lines.append("waiting per bucket (bucket: events, owner):")
        lines.extend(f"  {b.bucket}: {b.events}, {b.owner or 'NO OWNER'}" for b in waiting[:64])
        if len(waiting) > 64:
            lines.append(f"  ... and {len(waiting) - 64} more bucket(s)")
    return "\n".join(lines)


def _ranges(values: list[int]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    out: list[str] = []
    start = prev = values[0]
    following: list[int | None] = [*values[1:], None]
    for v in following:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ",".join(out)
