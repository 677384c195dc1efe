"""The root of every error the stream store raises on purpose."""

from __future__ import annotations

__all__ = ["CorruptLogError", "FatalStorageError", "StorageError", "StreamsError"]


class StreamsError(Exception):
    """Root exception of the ``streams`` package."""


class StorageError(StreamsError):
    """A storage operation failed; the message says what to do about it."""


class CorruptLogError(StorageError):
    """Acknowledged (checkpointed) data failed validation: the partition is taken offline."""


class FatalStorageError(StorageError):
    """The store can no longer promise durability (e.g. a failed fsync) and must stop."""
