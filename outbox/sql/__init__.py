"""SQL as data: the migrations (``migrations/NNNN_name.sql``) and the named queries (``queries.sql``).

Both are templates: ``{name}`` placeholders are filled in by :func:`render` with quoted identifiers
and literals (``psycopg.sql``), ``%(param)s`` placeholders are left to psycopg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = [
    "MIGRATIONS_TABLE",
    "RECORD_MIGRATION",
    "Migration",
    "load_migrations",
    "load_queries",
    "migrations",
    "queries",
]

# The bookkeeping every migration set keeps: one row per applied version, with a checksum of the
# SQL it ran ({migrations}, {version}, {name}, {checksum} are filled in by the caller).
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS {migrations} (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

RECORD_MIGRATION = (
    "INSERT INTO {migrations} (version, name, checksum) VALUES ({version}, {name}, {checksum}) "
    "ON CONFLICT (version) DO NOTHING"
)

_MIGRATION_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_QUERY_HEADER = re.compile(r"^-- name: ([a-z_]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    """One numbered migration file (a template)."""

    version: int
    name: str
    template: str


def load_migrations(package: str, what: str) -> tuple[Migration, ...]:
    """Every ``migrations/NNNN_name.sql`` of ``package``, in version order (``what`` names them in errors).

    Shared by the outbox's and the consumer SDK's migrations, each numbered on its own.
    """
    found: list[Migration] = []
    for entry in resources.files(package).joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{what} migrations must be numbered 1..n without gaps, found {versions}")
    return tuple(found)


def load_queries(package: str) -> dict[str, str]:
    """The named queries (``-- name: <name>`` blocks) of ``package``'s ``queries.sql``, by name."""
    text = resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _QUERY_HEADER.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        named[name] = "\n".join(lines).strip()
    return named


@cache
def migrations() -> tuple[Migration, ...]:
    """Every outbox migration, in version order."""
    return load_migrations(__name__, "outbox")


@cache
def queries() -> dict[str, str]:
    """The named queries of ``queries.sql`` (templates), by name."""
    return load_queries(__name__)
