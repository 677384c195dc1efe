"""The relay's exceptions: one root, :class:`RelayError`, so callers can catch everything we raise."""

from __future__ import annotations

__all__ = ["ConfigError", "PublishError", "RelayError"]


class RelayError(Exception):
    """Root of the relay's errors; the message says what to do."""


class ConfigError(RelayError):
    """A setting is invalid (e.g. an unknown producer, a non-positive batch size)."""


class PublishError(RelayError):
    """The producer cannot be created or used (e.g. a bad producer option)."""
