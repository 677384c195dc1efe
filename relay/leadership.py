"""Which key buckets this relay publishes: session advisory locks, balanced across live relays.

Every bucket has at most one owner: the relay whose dedicated connection holds the session advisory
lock ``(namespace, bucket)``. PostgreSQL releases it when that connection ends (a crash, kill -9,
a network cut once TCP keepalives give up), so a standby takes over as soon as it next rebalances.
Each relay also holds one membership slot ``(namespace, -1 - slot)``; the number of held slots is
the number of live relays, and each relay aims at ``ceil(buckets / relays)`` buckets: it gives back
its surplus (only between batches, after their rows were deleted) and takes free buckets when it
has fewer. Everything is derived from ``pg_locks``, so there is no table to go stale.

Fencing: the relay claims, publishes and deletes through the very connection that holds the locks.
If it lost that connection it lost the locks, and its delete fails; it reconnects as a new member,
and publishes nothing before it has locked buckets again and re-read their rows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["LockHolders", "Plan", "lock_namespace", "member_slot_key", "plan_rebalance"]


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def lock_namespace(doorbell_lock: int) -> int:
    """The first int of the relay's two-int advisory locks, derived from the outbox's own lock id."""
    return _signed32((doorbell_lock >> 32) ^ doorbell_lock)


def member_slot_key(slot: int) -> int:
    """The second int of membership slot ``slot`` (negative, so never a bucket)."""
    return -1 - slot


@dataclass(frozen=True)
class LockHolders:
    """Who holds what, from one ``pg_locks`` read: bucket → backend pid, and live member pids."""

    buckets: Mapping[int, int]
    members: frozenset[int]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, int]]) -> LockHolders:
        buckets: dict[int, int] = {}
        members: set[int] = set()
        for objid, pid in rows:
            key = _signed32(objid)
            if key >= 0:
                buckets[key] = pid
            else:
                members.add(pid)
        return cls(buckets, frozenset(members))


@dataclass(frozen=True)
class Plan:
    release: list[int]
    acquire: list[int]
    target: int


def plan_rebalance(total: int, holders: LockHolders, my_pid: int, owned: set[int], *, rng: random.Random) -> Plan:
    """What to give back and what to try to take so that live relays share ``total`` buckets evenly.

    ``acquire`` lists candidates (free buckets, shuffled so that relays starting together do not
    all race for the same ones); the caller try-locks them and keeps what it gets.
    """
    members = len(holders.members | {my_pid})
    target = math.ceil(total / members)
    if len(owned) > target:
        surplus = sorted(owned)[target:]
        return Plan(release=surplus, acquire=[], target=target)
    free = [b for b in range(total) if b not in holders.buckets and b not in owned]
    rng.shuffle(free)
    return Plan(release=[], acquire=free[: target - len(owned)], target=target)
