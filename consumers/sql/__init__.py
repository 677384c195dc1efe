"""The consumer SDK's SQL as data: numbered migrations (``migrations/NNNN_name.sql``).

They are templates: ``{name}`` placeholders are filled in by :mod:`consumers.schema` with quoted
identifiers. Their numbering is the SDK's own (recorded in ``<schema>.consumer_migrations``), separate
from the outbox table's migrations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["Migration", "migrations", "queries"]

_MIGRATION_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    """One numbered migration file (a template)."""

    version: int
    name: str
    template: str


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration, in version order."""
    found: list[Migration] = []
    for entry in resources.files(__name__).joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"consumer migrations must be numbered 1..n without gaps, found {versions}")
    return tuple(found)

_QUERY_HEADER = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """The named queries of ``queries.sql`` (templates), by name."""
    text = resources.files(__name__).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _QUERY_HEADER.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        named[name] = "\n".join(lines).strip()
    return named
