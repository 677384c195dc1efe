"""What the demo measures while it runs, and what it checks at the end."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from examples.consumer import EFFECT_TABLES

__all__ = ["Sample", "Sampler", "Verdict", "latency_overall", "verify"]

# p50 and p99 of commit-to-effect latency over the effects applied in the last few seconds.
_GROUP_QUERY = """
SELECT count(*),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - placed_at))
           FILTER (WHERE applied_at > clock_timestamp() - interval '3 seconds')
FROM {table}
"""

_OVERALL_QUERY = """
SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM applied_at - placed_at))
FROM {table}
"""


@dataclass
class Sample:
    at: float
    written: int
    backlog: int
    applied: dict[str, int]
    p50_ms: dict[str, float | None]
    p99_ms: dict[str, float | None]

    @property
    def relayed(self) -> int:
        """Events the broker acknowledged: the relay deletes a row only after its ack."""
        return max(0, self.written - self.backlog)

    def lag(self, group: str) -> int:
        return max(0, self.relayed - self.applied[group])


class Sampler:
    """One autocommit connection per database, queried a few times per second."""

    def __init__(self, app_url: str, group_urls: dict[str, str]) -> None:
        self._app = psycopg.connect(app_url, autocommit=True)
        self._groups = {g: psycopg.connect(url, autocommit=True) for g, url in group_urls.items()}

    def sample(self, at: float) -> Sample:
        row = self._app.execute(
            "SELECT (SELECT count(*) FROM shop.orders), (SELECT count(*) FROM outbox.events)"
        ).fetchone()
        assert row is not None
        applied: dict[str, int] = {}
        p50: dict[str, float | None] = {}
        p99: dict[str, float | None] = {}
        for group, conn in self._groups.items():
            grow = conn.execute(_GROUP_QUERY.format(table=EFFECT_TABLES[group]).encode()).fetchone()
            assert grow is not None
            applied[group] = int(grow[0])
            quantiles = grow[1]
            p50[group] = None if quantiles is None else float(quantiles[0]) * 1000
            p99[group] = None if quantiles is None else float(quantiles[1]) * 1000
        return Sample(at, int(row[0]), int(row[1]), applied, p50, p99)

    def close(self) -> None:
        for conn in (self._app, *self._groups.values()):
            conn.close()


def latency_overall(group_urls: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Commit-to-effect p50 and p99 in ms per group over the whole run."""
    out: dict[str, tuple[float, float]] = {}
    for group, url in group_urls.items():
        with psycopg.connect(url) as conn:
            row = conn.execute(_OVERALL_QUERY.format(table=EFFECT_TABLES[group]).encode()).fetchone()
        if row is not None and row[0] is not None:
            out[group] = (float(row[0][0]) * 1000, float(row[0][1]) * 1000)
    return out


@dataclass
class Verdict:
    events: int
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    #: effects of orders that never committed (a rolled-back order's event must not exist: G1)
    phantoms: int = 0
    #: inventory.stock totals that differ from the orders' quantities
    stock_mismatches: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.out_of_order or self.phantoms or self.stock_mismatches)

    def line(self) -> str:
        return (
            f"verified: {self.events} events, {self.lost} lost, {self.duplicates} duplicate effects, "
            f"{self.out_of_order} out of order"
        )


def verify(app_url: str, group_urls: dict[str, str]) -> Verdict:
    """Compare every group's effects with the committed orders.

    Lost: a committed order a group did not apply. Duplicate: an order applied more than once by a
    group. Out of order: an effect whose customer sequence number is lower than one that group
    applied before it for the same customer (effects are numbered by a sequence in apply order).
    """
    with psycopg.connect(app_url) as conn:
        orders: dict[int, tuple[str, int, str, int]] = {
            int(r[0]): (str(r[1]), int(r[2]), str(r[3]), int(r[4]))
            for r in conn.execute("SELECT id, customer, seq, sku, quantity FROM shop.orders")
        }
    verdict = Verdict(events=len(orders))
    for group, url in group_urls.items():
        with psycopg.connect(url) as conn:
            rows: list[tuple[Any, ...]] = conn.execute(
                f"SELECT order_id, customer, seq FROM {EFFECT_TABLES[group]} ORDER BY id".encode()
            ).fetchall()
            stock: dict[str, int] = {}
            if group == "inventory":
                stock = {str(s): int(r) for s, r in conn.execute("SELECT sku, reserved FROM inventory.stock")}
        counts = Counter(int(r[0]) for r in rows)
        lost = len(orders.keys() - counts.keys())
        duplicates = sum(c - 1 for c in counts.values() if c > 1)
        phantoms = len(counts.keys() - orders.keys())
        highest: dict[str, int] = {}
        out_of_order = 0
        for _, customer, seq in rows:
            if seq < highest.get(customer, 0):
                out_of_order += 1
            highest[customer] = max(seq, highest.get(customer, 0))
        verdict.lost += lost
        verdict.duplicates += duplicates
        verdict.out_of_order += out_of_order
        verdict.phantoms += phantoms
        verdict.details.append(
            f"{group}: {len(rows)} effects for {len(counts)} orders "
            f"({lost} lost, {duplicates} duplicates, {out_of_order} out of order, {phantoms} of uncommitted orders)"
        )
        if group == "inventory":
            expected: Counter[str] = Counter()
            for _, _, sku, quantity in orders.values():
                expected[sku] += quantity
            mismatches = sum(1 for sku in expected.keys() | stock.keys() if expected[sku] != stock.get(sku, 0))
            verdict.stock_mismatches += mismatches
            if mismatches:
                verdict.details.append(f"inventory: {mismatches} SKUs whose reserved stock differs from the orders")
    return verdict
