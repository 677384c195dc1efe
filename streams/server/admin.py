"""Admin APIs of the store: topic configs, partition counts, record deletion.

Each handler takes the :class:`~streams.server.broker.Broker` and the decoded request and returns
the response frame parts, like the broker's own handlers.

Served: DescribeConfigs v1-3, AlterConfigs v0-1, IncrementalAlterConfigs v0, CreatePartitions
v0-1, DeleteRecords v0-1. The error codes, messages and checks follow Apache Kafka 4 (KRaft:
``ConfigAdminManager.preprocess``, ``ConfigurationControlManager``, ``ConfigHelper``,
``ReplicationControlManager.createPartitions``, ``Partition.deleteRecordsOnLeader``), so admin
tools react to the store as they do to Kafka. Where the store differs it says why in the message:
it honours only the topic configs in :data:`streams.storage.TOPIC_CONFIG_KEYS`, and broker
settings are command-line flags, so BROKER resources are read-only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kafka.protocol.admin.configs import (
    AlterConfigsResponse,
    DescribeConfigsResponse,
    IncrementalAlterConfigsResponse,
)
from kafka.protocol.admin.topics import CreatePartitionsResponse, DeleteRecordsResponse

from streams import storage
from streams.errors import CorruptLogError
from streams.protocol.apis import ApiKey, encode_response
from streams.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from streams.protocol.apis import DecodedRequest

    from .broker import Broker, Reply

__all__ = ["ADMIN_HANDLERS"]

log = logging.getLogger(__name__)

# ConfigResource.Type ids.
_TOPIC = 2
_BROKER = 4
_RESOURCE_TYPE_NAMES = {0: "UNKNOWN", 2: "TOPIC", 4: "BROKER", 8: "BROKER_LOGGER", 16: "CLIENT_METRICS", 32: "GROUP"}

# DescribeConfigsResponse.ConfigSource ids.
_DYNAMIC_TOPIC_CONFIG = 1
_STATIC_BROKER_CONFIG = 4
_DEFAULT_CONFIG = 5

# DescribeConfigsResponse.ConfigType ids.
_UNKNOWN_TYPE = 0
_BOOLEAN = 1
_STRING = 2
_INT = 3
_LONG = 5
_LIST = 7

# IncrementalAlterConfigs operations (AlterConfigOp.OpType).
_SET = 0
_DELETE = 1
_APPEND = 2
_SUBTRACT = 3
_OP_NAMES = {_SET: "SET", _DELETE: "DELETE", _APPEND: "APPEND", _SUBTRACT: "SUBTRACT"}

_MAX_NEW_PARTITIONS = 10_000
"""Partitions one CreatePartitions may add to a topic (Kafka's controller caps the records of
one operation at 10,000 as well); keeps a single request from creating a million directories."""

_INVALID_LOW_WATERMARK = -1

_KAFKA_DEFAULTS = storage.TopicConfig()
"""Kafka's own defaults: the store's built-in topic defaults are the same values."""

_Synonym = DescribeConfigsResponse.DescribeConfigsResult.DescribeConfigsResourceResult.DescribeConfigsSynonym
_ConfigEntry = DescribeConfigsResponse.DescribeConfigsResult.DescribeConfigsResourceResult
_DescribeResult = DescribeConfigsResponse.DescribeConfigsResult
_DeleteRecordsTopic = DeleteRecordsResponse.DeleteRecordsTopicResult
_DeleteRecordsPartition = DeleteRecordsResponse.DeleteRecordsTopicResult.DeleteRecordsPartitionResult


@dataclass(frozen=True, slots=True)
class _TopicKey:
    """How a topic config is described: its broker-level name and Kafka's default synonym."""

    broker_name: str
    """The broker setting that provides the default (Kafka's ``ServerTopicConfigSynonyms``)."""
    default_synonym: tuple[str, str]
    """What Kafka lists as the DEFAULT_CONFIG synonym (e.g. ``log.retention.hours=168``)."""
    config_type: int
    doc: str


_TOPIC_KEYS: dict[str, _TopicKey] = {
    "cleanup.policy": _TopicKey(
        "log.cleanup.policy",
        ("log.cleanup.policy", "delete"),
        _LIST,
        'What happens to old log segments. This store only deletes them ("delete"), by retention.ms '
        "and retention.bytes; log compaction is not implemented.",
    ),
    "max.message.bytes": _TopicKey(
        "message.max.bytes",
        ("message.max.bytes", "1048588"),
        _INT,
        "The largest record batch size allowed in this topic.",
    ),
    "message.timestamp.type": _TopicKey(
        "log.message.timestamp.type",
        ("log.message.timestamp.type", "CreateTime"),
        _STRING,
        "Whether record timestamps are the producer's (CreateTime, the only type this store keeps) "
        "or the broker's append time.",
    ),
    "retention.bytes": _TopicKey(
        "log.retention.bytes",
        ("log.retention.bytes", "-1"),
        _LONG,
        "The largest size a partition may grow to before its oldest segments are deleted; -1 means "
        "no size limit. Whole segments are deleted, never the active one.",
    ),
    "retention.ms": _TopicKey(
        "log.retention.ms",
        ("log.retention.hours", "168"),
        _LONG,
        "How long a segment is kept after its newest record's timestamp before it is deleted; -1 "
        "means no time limit. Whole segments are deleted, never the active one.",
    ),
    "segment.bytes": _TopicKey(
        "log.segment.bytes",
        ("log.segment.bytes", "1073741824"),
        _INT,
        "The size at which a partition rolls to a new segment file; retention deletes whole segments.",
    ),
    "segment.ms": _TopicKey(
        "log.roll.ms",
        ("log.roll.hours", "168"),
        _LONG,
        "The age after which a partition rolls to a new segment file even if it is not full.",
    ),
}
"""Every topic config the store honours (the keys of ``TopicConfig.to_kafka()``)."""

_UNLISTED_KEY = _TopicKey("", ("", ""), _UNKNOWN_TYPE, "")
"""For a config the storage layer knows but this table does not (yet): described without synonyms."""

_LIST_KEYS = frozenset(k for k, v in _TOPIC_KEYS.items() if v.config_type == _LIST)


class _ResourceError(Exception):
    """A per-resource (or per-topic) failure: the error code and message for its result."""

    def __init__(self, code: int, message: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- DescribeConfigs --------------------------------------------------------------------------


def describe_configs(broker: Broker, request: DecodedRequest) -> Reply:
    body = request.body
    synonyms = bool(body.include_synonyms)
    documentation = request.version >= 3 and bool(getattr(body, "include_documentation", False))
    results = []
    for resource in body.resources:
        error: int = ErrorCode.NONE
        message: str | None = ""  # Kafka's DescribeConfigs sends "" rather than null
        configs: list[Any] = []
        try:
            keys = resource.configuration_keys
            wanted = set(keys) if keys else None  # Kafka 4: null and [] both mean "all"
            if resource.resource_type == _TOPIC:
                configs = _describe_topic(broker, resource.resource_name, wanted, synonyms, documentation)
            elif resource.resource_type == _BROKER:
                configs = _describe_broker(broker, resource.resource_name, wanted, synonyms)
            else:
                raise _ResourceError(ErrorCode.INVALID_REQUEST, _unsupported_type(resource.resource_type))
        except _ResourceError as exc:
            error, message, configs = exc.code, exc.message, []
        results.append(
            _DescribeResult(
                error_code=error,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=configs,
            )
        )
    return [encode_response(request, DescribeConfigsResponse(throttle_time_ms=0, results=results))]


def _unsupported_type(resource_type: int) -> str:
    name = _RESOURCE_TYPE_NAMES.get(resource_type, str(resource_type))
    return (
        f"resource type {name} is not supported by this store: it has TOPIC ({_TOPIC}) and BROKER ({_BROKER}) configs"
    )


def _describe_topic(
    broker: Broker, name: str, wanted: set[str] | None, include_synonyms: bool, include_docs: bool
) -> list[Any]:
    _check_topic_name(name)
    meta = broker.store.topics().get(name)
    if meta is None:
        raise _ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "")  # no message, as in Kafka
    defaults = broker.store.config.topic_defaults.to_kafka()
    kafka_defaults = _KAFKA_DEFAULTS.to_kafka()
    out = []
    for key, value in sorted(meta.configs.items()):
        if wanted is not None and key not in wanted:
            continue
        info = _TOPIC_KEYS.get(key) or _UNLISTED_KEY
        chain: list[tuple[str, str, int]] = []
        if key in meta.overrides:
            chain.append((key, value, _DYNAMIC_TOPIC_CONFIG))
        flagged = defaults[key] != kafka_defaults[key]  # a --flag changed the store-wide default
        if flagged and info.broker_name:
            chain.append((info.broker_name, defaults[key], _STATIC_BROKER_CONFIG))
        default_name, default_value = info.default_synonym
        if default_name and (flagged or default_name == info.broker_name):
            # Kafka lists broker synonyms from the first one that is set: retention.ms shows
            # log.retention.hours=168 only after a log.retention.ms that is set.
            chain.append((default_name, default_value, _DEFAULT_CONFIG))
        source = chain[0][2] if chain else _DEFAULT_CONFIG
        out.append(
            _ConfigEntry(
                name=key,
                value=value,
                read_only=False,
                config_source=source,
                is_default=source == _DEFAULT_CONFIG,
                is_sensitive=False,
                synonyms=[_Synonym(name=n, value=v, source=s) for n, v, s in chain] if include_synonyms else [],
                config_type=info.config_type,
                documentation=(info.doc or None) if include_docs else None,
            )
        )
    return out


def _broker_settings(broker: Broker) -> list[tuple[str, str, int, str | None]]:
    """(name, value, config type, Kafka's default or None) of the broker settings described."""
    defaults = broker.store.config.topic_defaults.to_kafka()
    kafka_defaults = _KAFKA_DEFAULTS.to_kafka()
    node = str(broker.config.node_id)
    settings = [
        ("auto.create.topics.enable", str(broker.config.auto_create_topics).lower(), _BOOLEAN, "true"),
        ("broker.id", node, _INT, None),
        ("default.replication.factor", "1", _INT, "1"),
        ("min.insync.replicas", "1", _INT, "1"),
        ("node.id", node, _INT, None),
        ("num.partitions", str(broker.store.config.default_partitions), _INT, "1"),
        ("socket.request.max.bytes", str(broker.config.max_request_bytes), _INT, "104857600"),
    ]
    for key, info in _TOPIC_KEYS.items():
        settings.append((info.broker_name, defaults[key], info.config_type, kafka_defaults[key]))
    return sorted(settings)


def _describe_broker(broker: Broker, name: str, wanted: set[str] | None, include_synonyms: bool) -> list[Any]:
    if not name:
        return []  # cluster-wide dynamic defaults: the store has none (its settings are flags)
    _check_broker_name(broker, name, describe=True)
    out = []
    for key, value, config_type, kafka_default in _broker_settings(broker):
        if wanted is not None and key not in wanted:
            continue
        source = _DEFAULT_CONFIG if value == kafka_default else _STATIC_BROKER_CONFIG
        out.append(
            _ConfigEntry(
                name=key,
                value=value,
                read_only=True,  # set by command-line flags; AlterConfigs cannot change them
                config_source=source,
                is_default=source == _DEFAULT_CONFIG,
                is_sensitive=False,
                synonyms=[_Synonym(name=key, value=value, source=source)] if include_synonyms else [],
                config_type=config_type,
                documentation=None,
            )
        )
    return out


def _check_topic_name(name: str) -> None:
    if not name:
        raise _ResourceError(ErrorCode.INVALID_TOPIC_EXCEPTION, "Topic name is illegal, it can't be empty")
    try:
        storage.validate_topic_name(name)
    except storage.InvalidTopicError as exc:
        raise _ResourceError(ErrorCode.INVALID_TOPIC_EXCEPTION, str(exc)) from None


def _check_broker_name(broker: Broker, name: str, *, describe: bool) -> None:
    try:
        node = int(name)
    except ValueError:
        what = "Broker" if describe else "Node"
        raise _ResourceError(ErrorCode.INVALID_REQUEST, f"{what} id must be an integer, but it is: {name}") from None
    if node != broker.config.node_id:
        expected = f"{broker.config.node_id} or empty string" if describe else str(broker.config.node_id)
        raise _ResourceError(
            ErrorCode.INVALID_REQUEST, f"Unexpected broker id, expected {expected}, but received {name}"
        )


# -- AlterConfigs / IncrementalAlterConfigs ---------------------------------------------------


def alter_configs(broker: Broker, request: DecodedRequest) -> Reply:
    """Legacy AlterConfigs: the given configs replace *all* of the topic's overrides."""
    body = request.body

    def changes(configs: Sequence[Any], current: Mapping[str, str]) -> dict[str, str]:
        nulls = [c.name for c in configs if c.value is None]
        if nulls:
            raise _ResourceError(ErrorCode.INVALID_REQUEST, f"Null value not supported for : {', '.join(nulls)}")
        return {c.name: c.value for c in configs}

    results = _alter(broker, body.resources, bool(body.validate_only), changes, "AlterConfigs")
    responses = [
        AlterConfigsResponse.AlterConfigsResourceResponse(
            error_code=code, error_message=message, resource_type=rtype, resource_name=rname
        )
        for code, message, rtype, rname in results
    ]
    return [encode_response(request, AlterConfigsResponse(throttle_time_ms=0, responses=responses))]


def incremental_alter_configs(broker: Broker, request: DecodedRequest) -> Reply:
    """IncrementalAlterConfigs: SET/DELETE/APPEND/SUBTRACT single keys, keep the other overrides."""
    body = request.body

    def changes(configs: Sequence[Any], current: Mapping[str, str]) -> dict[str, str]:
        nulls = [c.name for c in configs if c.config_operation != _DELETE and c.value is None]
        if nulls:
            raise _ResourceError(ErrorCode.INVALID_REQUEST, f"Null value not supported for : {', '.join(nulls)}")
        new = dict(current)
        for c in configs:
            op = c.config_operation
            if op == _SET:
                new[c.name] = c.value
            elif op == _DELETE:
                new.pop(c.name, None)
            elif op in (_APPEND, _SUBTRACT):
                if c.name not in _LIST_KEYS:
                    raise _ResourceError(
                        ErrorCode.INVALID_CONFIG,
                        f"Can't {_OP_NAMES[op]} to key {c.name} because its type is not LIST.",
                    )
                base = current.get(c.name, _KAFKA_DEFAULTS.to_kafka()[c.name])
                parts = [p for p in base.split(",") if p]
                for item in c.value.split(","):
                    if op == _APPEND and item not in parts:
                        parts.append(item)
                    elif op == _SUBTRACT and item in parts:
                        parts.remove(item)
                new[c.name] = ",".join(parts)
            else:
                raise _ResourceError(ErrorCode.INVALID_REQUEST, f"Unknown operation type {op} for config {c.name}")
        return new

    results = _alter(broker, body.resources, bool(body.validate_only), changes, "IncrementalAlterConfigs")
    responses = [
        IncrementalAlterConfigsResponse.AlterConfigsResourceResponse(
            error_code=code, error_message=message, resource_type=rtype, resource_name=rname
        )
        for code, message, rtype, rname in results
    ]
    return [encode_response(request, IncrementalAlterConfigsResponse(throttle_time_ms=0, responses=responses))]


_Changes = Callable[[Sequence[Any], Mapping[str, str]], dict[str, str]]


def _alter(
    broker: Broker, resources: Sequence[Any], validate_only: bool, changes: _Changes, api: str
) -> list[tuple[int, str | None, int, str]]:
    """Apply each resource's new overrides (computed by ``changes``); one result per resource.

    Each resource is all-or-nothing, as in Kafka; resources are independent of each other.
    """
    seen: dict[tuple[int, str], int] = {}
    for resource in resources:
        key = (resource.resource_type, resource.resource_name)
        seen[key] = seen.get(key, 0) + 1
    results = []
    for resource in resources:
        rtype, rname = resource.resource_type, resource.resource_name
        try:
            if seen[(rtype, rname)] > 1:
                raise _ResourceError(ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.")
            names = [c.name for c in resource.configs]
            if len(set(names)) != len(names):
                raise _ResourceError(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")
            if rtype == _TOPIC:
                _alter_topic(broker, rname, resource.configs, validate_only, changes, api)
            elif rtype == _BROKER:
                if rname:
                    _check_broker_name(broker, rname, describe=False)
                raise _ResourceError(
                    ErrorCode.INVALID_REQUEST,
                    "broker configs are read-only: change them with the store's command-line flags "
                    "(python -m streams serve --help) and restart it",
                )
            else:
                raise _ResourceError(ErrorCode.INVALID_REQUEST, _unsupported_type(rtype))
        except _ResourceError as exc:
            results.append((exc.code, exc.message, rtype, rname))
        else:
            results.append((ErrorCode.NONE, None, rtype, rname))
    return results


def _alter_topic(
    broker: Broker, name: str, configs: Sequence[Any], validate_only: bool, changes: _Changes, api: str
) -> None:
    # Kafka's order of checks: request shape, the operations, the topic name, the resulting
    # configs, and only then whether the topic exists.
    meta = broker.store.topics().get(name)
    current = dict(meta.overrides) if meta is not None else {}
    new = changes(configs, current)
    if not name:
        raise _ResourceError(ErrorCode.INVALID_REQUEST, "Default topic resources are not allowed.")
    _check_topic_name(name)
    try:
        broker.store.config.topic_defaults.with_overrides(new)
    except storage.InvalidConfigError as exc:
        raise _ResourceError(ErrorCode.INVALID_CONFIG, str(exc)) from None
    if meta is None:
        raise _ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.")
    if validate_only or new == current:
        return
    try:
        broker.store.alter_topic_configs(name, new, incremental=False)
    except storage.UnknownTopicError:
        raise _ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.") from None
    except storage.InvalidConfigError as exc:
        raise _ResourceError(ErrorCode.INVALID_CONFIG, str(exc)) from None
    log.info("%s: topic %r overrides are now %s", api, name, new or "{} (store defaults)")


# -- CreatePartitions -------------------------------------------------------------------------


def create_partitions(broker: Broker, request: DecodedRequest) -> Reply:
    body = request.body
    counts: dict[str, int] = {}
    for topic in body.topics:
        counts[topic.name] = counts.get(topic.name, 0) + 1
    results = []
    done: set[str] = set()
    for topic in body.topics:
        if topic.name in done:
            continue  # a duplicated name gets one (error) result, as in Kafka
        done.add(topic.name)
        error: int = ErrorCode.NONE
        message: str | None = None
        try:
            if counts[topic.name] > 1:
                raise _ResourceError(ErrorCode.INVALID_REQUEST, "Duplicate topic name.")
            _create_partitions(broker, topic, bool(body.validate_only))
        except _ResourceError as exc:
            error, message = exc.code, exc.message
        results.append(
            CreatePartitionsResponse.CreatePartitionsTopicResult(
                name=topic.name, error_code=error, error_message=message
            )
        )
    return [encode_response(request, CreatePartitionsResponse(throttle_time_ms=0, results=results))]


def _create_partitions(broker: Broker, topic: Any, validate_only: bool) -> None:
    meta = broker.store.topics().get(topic.name)
    if meta is None:
        raise _ResourceError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None)  # Kafka sends no message here
    current = meta.partitions
    if topic.count == current:
        raise _ResourceError(ErrorCode.INVALID_PARTITIONS, f"Topic already has {current} partition(s).")
    if topic.count < current:
        raise _ResourceError(
            ErrorCode.INVALID_PARTITIONS,
            f"The topic {topic.name} currently has {current} partition(s); {topic.count} would not be an increase.",
        )
    additional = topic.count - current
    if additional > _MAX_NEW_PARTITIONS:
        raise _ResourceError(
            ErrorCode.INVALID_PARTITIONS,
            f"Adding {additional} partitions at once is more than this store allows ({_MAX_NEW_PARTITIONS}); "
            "grow the topic in steps",
        )
    if topic.assignments is not None:
        if len(topic.assignments) != additional:
            raise _ResourceError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"Attempted to add {additional} additional partition(s), but only "
                f"{len(topic.assignments)} assignment(s) were specified.",
            )
        for assignment in topic.assignments:
            _check_assignment(broker, assignment.broker_ids)
    if validate_only:
        return
    try:
        broker.store.create_partitions(topic.name, topic.count)
    except storage.InvalidPartitionsError as exc:
        raise _ResourceError(ErrorCode.INVALID_PARTITIONS, str(exc)) from None
    log.info("CreatePartitions: topic %r grew from %d to %d partitions", topic.name, current, topic.count)


def _check_assignment(broker: Broker, broker_ids: Sequence[int]) -> None:
    node = broker.config.node_id
    if not broker_ids:
        raise _ResourceError(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT, "The manual partition assignment includes an empty replica list."
        )
    previous = None
    for broker_id in sorted(broker_ids):
        if broker_id != node:
            raise _ResourceError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"The manual partition assignment includes broker {broker_id}, but no such broker is registered.",
            )
        if broker_id == previous:
            raise _ResourceError(
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                f"The manual partition assignment includes the broker {broker_id} more than once.",
            )
        previous = broker_id


# -- DeleteRecords ----------------------------------------------------------------------------


def delete_records(broker: Broker, request: DecodedRequest) -> Reply:
    """Move each partition's log start offset up; durable (checkpointed) before the answer."""
    topics = []
    for topic in request.body.topics:
        parts = []
        for part in topic.partitions:
            error, low = _delete_records(broker, topic.name, part.partition_index, part.offset)
            parts.append(
                _DeleteRecordsPartition(partition_index=part.partition_index, low_watermark=low, error_code=error)
            )
        topics.append(_DeleteRecordsTopic(name=topic.name, partitions=parts))
    return [encode_response(request, DeleteRecordsResponse(throttle_time_ms=0, topics=topics))]


def _delete_records(broker: Broker, topic: str, partition: int, offset: int) -> tuple[int, int]:
    meta = broker.store.topics().get(topic)
    if meta is None or not 0 <= partition < meta.partitions:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, _INVALID_LOW_WATERMARK
    plog = broker.store.log(topic, partition)
    if plog.offline_reason is not None:
        return ErrorCode.KAFKA_STORAGE_ERROR, _INVALID_LOW_WATERMARK
    try:
        low = plog.delete_records(offset)
    except storage.OffsetOutOfRangeError as exc:
        log.info("DeleteRecords on %s-%d refused: %s", topic, partition, exc)
        return ErrorCode.OFFSET_OUT_OF_RANGE, _INVALID_LOW_WATERMARK
    except CorruptLogError:
        return ErrorCode.KAFKA_STORAGE_ERROR, _INVALID_LOW_WATERMARK
    return ErrorCode.NONE, low


ADMIN_HANDLERS: dict[int, Callable[[Broker, DecodedRequest], Reply]] = {
    ApiKey.DESCRIBE_CONFIGS: describe_configs,
    ApiKey.ALTER_CONFIGS: alter_configs,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: incremental_alter_configs,
    ApiKey.CREATE_PARTITIONS: create_partitions,
    ApiKey.DELETE_RECORDS: delete_records,
}
"""API key -> handler; the broker registers (and advertises) every entry."""
