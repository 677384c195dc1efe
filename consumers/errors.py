"""The consumer SDK's exceptions: one root, :class:`ConsumerError`."""

from __future__ import annotations

__all__ = ["ConsumerError", "HandlerError", "MigrationError"]


class ConsumerError(Exception):
    """Root of every error the consumer SDK raises; the message says what to do."""


class MigrationError(ConsumerError):
    """The SDK's tables cannot be created or are not what this version expects."""


class HandlerError(ConsumerError):
    """A record could not be handed to its handler (undecodable payload, failed validation).

    Raised inside a handler attempt, so it counts as a failed attempt like any handler exception.
    """
