"""The consumer SDK's SQL as data: numbered migrations (``migrations/NNNN_name.sql``).

They are templates: ``{name}`` placeholders are filled in by :mod:`consumers.schema` with quoted
identifiers. Their numbering is the SDK's own (recorded in ``<schema>.consumer_migrations``), separate
from the outbox table's migrations.
"""

from __future__ import annotations

from functools import cache

from outbox.sql import Migration, load_migrations, load_queries

__all__ = ["Migration", "migrations", "queries"]


@cache
def migrations() -> tuple[Migration, ...]:
    """Every consumer migration, in version order."""
    return load_migrations(__name__, "consumer")


@cache
def queries() -> dict[str, str]:
    """The named queries of ``queries.sql`` (templates), by name."""
    return load_queries(__name__)
