"""Where an outbox lives (schema + table) and the names derived from it; SQL templates rendered for it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from psycopg import sql

from outbox import sql as sql_files
from outbox._hashing import string_hash
from outbox.errors import OutboxError

__all__ = ["DEFAULT_BUCKETS", "DEFAULT_SCHEMA", "DEFAULT_TABLE", "OutboxTable"]

DEFAULT_SCHEMA = "outbox"
DEFAULT_TABLE = "events"
DEFAULT_BUCKETS = 64

# Derived names add at most "_bucket_id_idx" (14 bytes) to the table name; PostgreSQL truncates
# identifiers to 63 bytes, which could make two derived names collide.
_MAX_NAME_BYTES = 40
_MAX_CHANNEL_BYTES = 63


def _check_name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise OutboxError(f"{what} name must be a non-empty str, got {name!r}")
    if "\x00" in name:
        raise OutboxError(f"{what} name {name!r} contains a NUL character")
    if "$$" in name:
        raise OutboxError(f"{what} name {name!r} contains '$$', which would end a function body's quoting")
    if len(name.encode()) > _MAX_NAME_BYTES:
        raise OutboxError(
            f"{what} name {name!r} is longer than {_MAX_NAME_BYTES} bytes; the names derived from it "
            "(indexes, functions) must fit PostgreSQL's 63-byte identifiers"
        )
    return name


@dataclass(frozen=True)
class OutboxTable:
    """An outbox table: ``schema.table`` plus its companions ``<table>_settings``,
    ``<table>_migrations``, ``<table>_relays``, ``<table>_key_hash()``, ``<table>_doorbell()``.

    Names are used verbatim (quoted), so ``OutboxTable("My Schema", "Events")`` is fine.
    """

    schema: str = DEFAULT_SCHEMA
    table: str = DEFAULT_TABLE

    def __post_init__(self) -> None:
        _check_name("schema", self.schema)
        _check_name("table", self.table)

    @property
    def qualified(self) -> str:
        """``schema.table`` as a readable (unquoted) name, for messages."""
        return f"{self.schema}.{self.table}"

    @property
    def channel(self) -> str:
        """The NOTIFY channel of the doorbell: ``schema.table``, or a hash of it when too long."""
        name = self.qualified
        if len(name.encode()) <= _MAX_CHANNEL_BYTES:
            return name
        return f"outbox_{string_hash('channel/' + name) & 0xFFFFFFFFFFFFFFFF:016x}"

    @property
    def doorbell_lock(self) -> int:
        """The advisory lock a waiting relay holds (see migration 0002)."""
        return string_hash(f"doorbell/{self.qualified}")

    @property
    def migration_lock(self) -> int:
        """The advisory lock ``migrate`` holds; per schema, since tables of a schema share it."""
        return string_hash(f"migrate/{self.schema}")

    def placeholders(self, buckets: int = DEFAULT_BUCKETS) -> dict[str, sql.Composable]:
        s, t = self.schema, self.table
        return {
            "schema": sql.Identifier(s),
            "table": sql.Identifier(s, t),
            "settings": sql.Identifier(s, f"{t}_settings"),
            "migrations": sql.Identifier(s, f"{t}_migrations"),
            "relays": sql.Identifier(s, f"{t}_relays"),
            "key_hash": sql.Identifier(s, f"{t}_key_hash"),
            "doorbell": sql.Identifier(s, f"{t}_doorbell"),
            "doorbell_trigger": sql.Identifier(f"{t}_doorbell"),
            "bucket_index": sql.Identifier(f"{t}_bucket_id_idx"),
            "buckets": sql.Literal(buckets),
            "channel": sql.Literal(self.channel),
            "doorbell_lock": sql.Literal(self.doorbell_lock),
        }

    def render(self, template: str, buckets: int = DEFAULT_BUCKETS) -> str:
        """``template`` with its ``{name}`` placeholders filled in for this table."""
        return sql.SQL(template).format(**self.placeholders(buckets)).as_string(None)

    def query(self, name: str) -> bytes:
        """The named query of ``queries.sql`` rendered for this table (cached)."""
        return _query(self, name)


@cache
def _query(table: OutboxTable, name: str) -> bytes:
    return table.render(sql_files.queries()[name]).encode()
