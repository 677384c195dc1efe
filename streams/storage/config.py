"""Topic and store configuration, with Kafka's names, defaults and validation rules.

A topic stores only its *overrides* (like Kafka's per-topic configs); the effective value of
anything not overridden comes from the store's defaults, so changing a default later applies to
every topic that did not set it explicitly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidConfigError

__all__ = ["TOPIC_CONFIG_KEYS", "StoreConfig", "TopicConfig"]

_DAY_MS = 24 * 60 * 60 * 1000
_INT32_MAX = 0x7FFFFFFF
_INT64_MAX = 0x7FFFFFFFFFFFFFFF

# Kafka name -> (TopicConfig field, minimum value) for the integer settings.
_INT_KEYS: dict[str, tuple[str, int, int]] = {
    "retention.ms": ("retention_ms", -1, _INT64_MAX),
    "retention.bytes": ("retention_bytes", -1, _INT64_MAX),
    "segment.bytes": ("segment_bytes", 14, _INT32_MAX),
    "segment.ms": ("segment_ms", 1, _INT64_MAX),
    "max.message.bytes": ("max_message_bytes", 0, _INT32_MAX),
}
TOPIC_CONFIG_KEYS = frozenset({*_INT_KEYS, "cleanup.policy", "message.timestamp.type"})
"""Every topic-level config key the store understands."""


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """Effective settings of a topic (Kafka's defaults unless overridden)."""

    retention_ms: int = 7 * _DAY_MS
    retention_bytes: int = -1
    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * _DAY_MS
    max_message_bytes: int = 1048588
    cleanup_policy: str = "delete"
    message_timestamp_type: str = "CreateTime"

    def to_kafka(self) -> dict[str, str]:
        """The settings under their Kafka names, as DescribeConfigs reports them."""
        out = {key: str(getattr(self, name)) for key, (name, _, _) in _INT_KEYS.items()}
        out["cleanup.policy"] = self.cleanup_policy
        out["message.timestamp.type"] = self.message_timestamp_type
        return out

    def with_overrides(self, overrides: Mapping[str, str]) -> TopicConfig:
        """Apply Kafka-named overrides; raises InvalidConfigError naming the bad key/value."""
        changes: dict[str, int | str] = {}
        for key, raw in overrides.items():
            value = str(raw).strip()
            if key in _INT_KEYS:
                name, low, high = _INT_KEYS[key]
                try:
                    number = int(value)
                except ValueError:
                    raise InvalidConfigError(f"config {key}={raw!r} is not an integer") from None
                if not low <= number <= high:
                    raise InvalidConfigError(f"config {key}={number} is out of range; use {low}..{high}")
                changes[name] = number
            elif key == "cleanup.policy":
                if value != "delete":
                    raise InvalidConfigError(
                        f"cleanup.policy={raw!r} is not supported: this store only deletes old segments "
                        "(log compaction is not implemented); use cleanup.policy=delete",
                    )
                changes["cleanup_policy"] = value
            elif key == "message.timestamp.type":
                if value != "CreateTime":
                    raise InvalidConfigError(
                        f"message.timestamp.type={raw!r} is not supported; this store keeps the "
                        "producer's timestamps (CreateTime)",
                    )
                changes["message_timestamp_type"] = value
            else:
                raise InvalidConfigError(
                    f"unknown topic config {key!r}; supported keys are "
                    f"{', '.join(sorted(TOPIC_CONFIG_KEYS))}",
                )
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store lives and the defaults new topics get."""

    data_dir: Path
    default_partitions: int = 1
    topic_defaults: TopicConfig = field(default_factory=TopicConfig)
    index_interval_bytes: int = 4096
    max_producers_per_partition: int = 10_000
    producer_id_block_size: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.default_partitions < 1:
            raise InvalidConfigError(f"default_partitions={self.default_partitions} must be at least 1")
        if self.index_interval_bytes < 1:
            raise InvalidConfigError(f"index_interval_bytes={self.index_interval_bytes} must be at least 1")
        if self.producer_id_block_size < 1:
            raise InvalidConfigError(f"producer_id_block_size={self.producer_id_block_size} must be >= 1")
