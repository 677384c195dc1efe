"""The exceptions of the outbox library: one root, :class:`OutboxError`.

psycopg errors raised while publishing are translated here only where the library can say what to
do about them (a missing table); anything else propagates unchanged, because the caller's
transaction, not the library, decides what happens next.
"""

from __future__ import annotations

__all__ = [
    "InvalidEventError",
    "MigrationError",
    "OutboxError",
    "SchemaError",
    "TransactionStateError",
]


class OutboxError(Exception):
    """Root of every error raised by the outbox library."""


class InvalidEventError(OutboxError, ValueError):
    """An event cannot be published as it is (bad topic, payload, header, size...).

    Raised before anything is sent to the database, so the caller's transaction stays usable.
    ``event_id`` names the offending event when the event got that far.
    """

    def __init__(self, message: str, *, event_id: object = None) -> None:
        super().__init__(message if event_id is None else f"event {event_id}: {message}")
        self.event_id = event_id


class TransactionStateError(OutboxError):
    """``publish`` was called where it cannot join the caller's transaction.

    For example on an autocommit connection outside ``with conn.transaction():`` (each statement
    would commit on its own, so the event would not share the fate of the business change), or in
    a transaction that already failed.
    """


class SchemaError(OutboxError):
    """The outbox table is missing or was set up differently; the message says which command fixes it."""


class MigrationError(OutboxError):
    """A migration could not be applied, or the database disagrees with the migration files."""
