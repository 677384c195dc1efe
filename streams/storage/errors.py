"""Storage errors; each carries the Kafka error code the server answers with.

They all derive from :class:`streams.errors.StorageError`, so a caller that does not care about
the kind can catch that one root. Messages say what the client or operator can do about them.
"""

from __future__ import annotations

from streams.errors import StorageError

__all__ = [
    "DataDirLockedError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "InvalidTopicError",
    "OffsetOutOfRangeError",
    "OutOfOrderSequenceError",
    "RecordTooLargeError",
    "TopicExistsError",
    "UnknownTopicError",
]


class _KafkaMapped(StorageError):
    kafka_error_code: int = -1
    """The Kafka protocol error code for this failure (-1: no protocol equivalent)."""


class TopicExistsError(_KafkaMapped):
    kafka_error_code = 36  # TOPIC_ALREADY_EXISTS


class UnknownTopicError(_KafkaMapped):
    kafka_error_code = 3  # UNKNOWN_TOPIC_OR_PARTITION


class InvalidTopicError(_KafkaMapped):
    kafka_error_code = 17  # INVALID_TOPIC_EXCEPTION


class InvalidConfigError(_KafkaMapped):
    kafka_error_code = 40  # INVALID_CONFIG


class InvalidPartitionsError(_KafkaMapped):
    kafka_error_code = 37  # INVALID_PARTITIONS


class OffsetOutOfRangeError(_KafkaMapped):
    kafka_error_code = 1  # OFFSET_OUT_OF_RANGE


class OutOfOrderSequenceError(_KafkaMapped):
    kafka_error_code = 45  # OUT_OF_ORDER_SEQUENCE_NUMBER


class InvalidProducerEpochError(_KafkaMapped):
    kafka_error_code = 47  # INVALID_PRODUCER_EPOCH


class RecordTooLargeError(_KafkaMapped):
    kafka_error_code = 10  # MESSAGE_TOO_LARGE


class InvalidRecordError(_KafkaMapped):
    kafka_error_code = 87  # INVALID_RECORD


class DataDirLockedError(_KafkaMapped):
    """Another process (or another Store in this process) has the data directory open."""
