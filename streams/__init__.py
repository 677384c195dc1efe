"""The built-in stream store: a single-node, durable broker that speaks the Kafka protocol."""

from .errors import CorruptLogError, FatalStorageError, StorageError, StreamsError

__all__ = ["CorruptLogError", "FatalStorageError", "StorageError", "StreamsError"]
