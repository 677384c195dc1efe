"""Bucket balancing and the order-keeping delete rule, as pure functions."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from relay.claimer import ClaimedRow, deletable
from relay.leadership import LockHolders, lock_namespace, member_slot_key, plan_rebalance


def _oid(key: int) -> int:
    return key & 0xFFFFFFFF


def test_lock_rows_split_into_buckets_and_members() -> None:
    rows = [(_oid(3), 100), (_oid(member_slot_key(0)), 100), (_oid(member_slot_key(7)), 200), (_oid(5), 200)]
    holders = LockHolders.from_rows(rows)
    assert holders.buckets == {3: 100, 5: 200}
    assert holders.members == {100, 200}


def test_namespace_is_a_signed_int32() -> None:
    for lock in (0, 1, -1, 2**63 - 1, -(2**63), 0x1234_5678_9ABC_DEF0):
        ns = lock_namespace(lock)
        assert -(2**31) <= ns < 2**31


def test_lone_relay_takes_everything() -> None:
    plan = plan_rebalance(64, LockHolders({}, frozenset({1})), 1, set(), rng=random.Random(1))
    assert sorted(plan.acquire) == list(range(64)) and plan.release == [] and plan.target == 64


def test_owner_gives_back_its_surplus_when_a_relay_joins() -> None:
    mine = set(range(64))
    holders = LockHolders(dict.fromkeys(mine, 1), frozenset({1, 2}))
    plan = plan_rebalance(64, holders, 1, mine, rng=random.Random(1))
    assert plan.target == 32 and len(plan.release) == 32 and plan.acquire == []


def test_newcomer_takes_only_free_buckets() -> None:
    held = dict.fromkeys(range(40), 1)
    plan = plan_rebalance(64, LockHolders(held, frozenset({1, 2})), 2, set(), rng=random.Random(1))
    assert plan.release == [] and set(plan.acquire) == set(range(40, 64))


@given(st.integers(1, 200), st.integers(1, 12), st.randoms(use_true_random=False))
def test_repeated_rebalancing_converges_to_an_even_split(buckets: int, relays: int, rng: random.Random) -> None:
    owned: dict[int, set[int]] = {pid: set() for pid in range(1, relays + 1)}
    for _ in range(6):
        for pid in rng.sample(sorted(owned), len(owned)):
            holders = LockHolders({b: p for p, bs in owned.items() for b in bs}, frozenset(owned))
            plan = plan_rebalance(buckets, holders, pid, owned[pid], rng=rng)
            owned[pid] -= set(plan.release)
            taken = {b for b in plan.acquire if b not in holders.buckets}
            owned[pid] |= taken
    all_owned = [b for bs in owned.values() for b in bs]
    assert len(all_owned) == len(set(all_owned)), "a bucket has two owners"
    assert set(all_owned) == set(range(buckets)), "a bucket has no owner"
    target = -(-buckets // relays)
    assert all(len(bs) <= target for bs in owned.values())


def _row(i: int, key: str | None, topic: str = "t") -> ClaimedRow:
    return ClaimedRow(i, topic, key.encode() if key is not None else None, b"{}", 0, f"e{i}".encode(), b"type", "{}")


def test_a_failed_row_keeps_the_later_rows_of_its_key_only() -> None:
    rows = [_row(1, "a"), _row(2, "b"), _row(3, "a"), _row(4, "b"), _row(5, None), _row(6, "a", topic="u")]
    errors: list[str | None] = [None, "timeout", None, None, None, None]
    ids, kept = deletable(rows, errors)
    assert ids == [1, 3, 5, 6]
    assert kept == 1  # row 4 (key b) was acknowledged but comes after b's failed row 2


def test_everything_acknowledged_is_deleted() -> None:
    rows = [_row(i, "k") for i in range(5)]
    assert deletable(rows, [None] * 5) == ([0, 1, 2, 3, 4], 0)
