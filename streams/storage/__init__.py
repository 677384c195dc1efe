"""The stream store's storage layer: files on disk, no network, no asyncio.

``Store`` owns a data directory of topics; each partition is a ``PartitionLog`` of segment
files holding RecordBatch v2 bytes exactly as producers sent them. ``OffsetStore`` keeps the
consumer groups' committed offsets. See the module docstrings of ``segment``, ``index``,
``recovery``, ``store`` and ``offsets`` for the on-disk formats.
"""

from __future__ import annotations

from .config import TOPIC_CONFIG_KEYS, StoreConfig, TopicConfig
from .errors import (
    DataDirLockedError,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    RecordTooLargeError,
    TopicExistsError,
    UnknownTopicError,
)
from .log import AppendResult, PartitionLog, ReadSlice, SyncTicket
from .offsets import (
    CommittedOffset,
    InvalidOffsetCommitError,
    OffsetCommitEntry,
    OffsetMetadataTooLargeError,
    OffsetStore,
    OffsetSyncTicket,
)
from .store import CheckpointTicket, Store, TopicMeta, validate_topic_name

__all__ = [
    "TOPIC_CONFIG_KEYS",
    "AppendResult",
    "CheckpointTicket",
    "CommittedOffset",
    "DataDirLockedError",
    "InvalidConfigError",
    "InvalidOffsetCommitError",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "InvalidTopicError",
    "OffsetCommitEntry",
    "OffsetMetadataTooLargeError",
    "OffsetOutOfRangeError",
    "OffsetStore",
    "OffsetSyncTicket",
    "OutOfOrderSequenceError",
    "PartitionLog",
    "ReadSlice",
    "RecordTooLargeError",
    "Store",
    "StoreConfig",
    "SyncTicket",
    "TopicConfig",
    "TopicExistsError",
    "TopicMeta",
    "UnknownTopicError",
    "validate_topic_name",
]
