"""The admin APIs over raw TCP: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs,
CreatePartitions and DeleteRecords, against the real store process (and, in the differential test
at the end, against a real Apache Kafka 4.2 with the very same requests).

Raw requests show what admin clients hide: per-resource error codes and messages, config sources
and synonyms, and the low watermark DeleteRecords returns. Effects are checked where they land:
the records a fetch returns, the segment files on disk, and the state after a restart or kill -9.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kafka.protocol.admin.configs import (
    AlterConfigsRequest,
    AlterConfigsResponse,
    DescribeConfigsRequest,
    DescribeConfigsResponse,
    IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
)
from kafka.protocol.admin.topics import (
    CreatePartitionsRequest,
    CreatePartitionsResponse,
    DeleteRecordsRequest,
    DeleteRecordsResponse,
)

from tests.conftest import StoreFactory
from tests.e2e._wire import WireClient, build_batch, decode_records
from tests.support.kafka import KafkaBroker
from tests.support.store import StoreProcess
from tests.support.waiting import wait_until as _wait_until

T = TypeVar("T")

TOPIC, BROKER = 2, 4
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5
NONE, OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION = 0, 1, 3
INVALID_TOPIC_EXCEPTION, INVALID_PARTITIONS, INVALID_REPLICA_ASSIGNMENT = 17, 37, 39
INVALID_CONFIG, INVALID_REQUEST, KAFKA_STORAGE_ERROR = 40, 42, 56

STORE_KEYS = (
    "cleanup.policy",
    "max.message.bytes",
    "message.timestamp.type",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
)
"""The topic configs the store honours (and describes)."""

KAFKA_DEFAULT_SYNONYMS = {
    "cleanup.policy": [("log.cleanup.policy", "delete", 5)],
    "max.message.bytes": [("message.max.bytes", "1048588", 5)],
    "message.timestamp.type": [("log.message.timestamp.type", "CreateTime", 5)],
    "retention.bytes": [("log.retention.bytes", "-1", 5)],
    # Kafka lists synonyms from the first broker name that is set; log.retention.ms and log.roll.ms
    # have no default (log.retention.hours and log.roll.hours do), so nothing is listed.
    "retention.ms": [],
    "segment.bytes": [("log.segment.bytes", "1073741824", 5)],
    "segment.ms": [],
}
"""The synonyms Kafka 4.2 reports for a topic config that is not set anywhere."""
DEFAULT_VALUES = {
    "cleanup.policy": "delete",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.ms": "604800000",
}


# -- a small admin client on top of the e2e wire client ----------------------------------------


class Admin(WireClient):
    """One connection speaking the admin APIs with explicit versions; results as plain tuples."""

    def __enter__(self) -> Admin:
        return self

    def describe(
        self,
        resources: Sequence[tuple[int, str, list[str] | None]],
        *,
        version: int = 3,
        synonyms: bool = False,
        docs: bool = False,
    ) -> list[Any]:
        req = DescribeConfigsRequest(
            resources=[
                DescribeConfigsRequest.DescribeConfigsResource(resource_type=t, resource_name=n, configuration_keys=k)
                for t, n, k in resources
            ],
            include_synonyms=synonyms,
            include_documentation=docs,
        )
        return list(self.call(req, DescribeConfigsResponse, version).results)

    def topic_configs(self, topic: str, **kwargs: Any) -> dict[str, Any]:
        (result,) = self.describe([(TOPIC, topic, None)], **kwargs)
        assert result.error_code == NONE, result
        return {c.name: c for c in result.configs}

    def alter(
        self,
        resources: Sequence[tuple[int, str, dict[str, str | None]]],
        *,
        validate_only: bool = False,
        version: int = 1,
    ) -> list[tuple[int, str | None]]:
        R = AlterConfigsRequest.AlterConfigsResource
        req = AlterConfigsRequest(
            resources=[
                R(
                    resource_type=t,
                    resource_name=n,
                    configs=[R.AlterableConfig(name=k, value=v) for k, v in configs.items()],
                )
                for t, n, configs in resources
            ],
            validate_only=validate_only,
        )
        response = self.call(req, AlterConfigsResponse, version)
        assert [(r.resource_type, r.resource_name) for r in response.responses] == [(t, n) for t, n, _ in resources]
        return [(r.error_code, r.error_message) for r in response.responses]

    def incremental(
        self,
        resources: Sequence[tuple[int, str, Sequence[tuple[str, int, str | None]]]],
        *,
        validate_only: bool = False,
    ) -> list[tuple[int, str | None]]:
        R = IncrementalAlterConfigsRequest.AlterConfigsResource
        req = IncrementalAlterConfigsRequest(
            resources=[
                R(
                    resource_type=t,
                    resource_name=n,
                    configs=[R.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in ops],
                )
                for t, n, ops in resources
            ],
            validate_only=validate_only,
        )
        response = self.call(req, IncrementalAlterConfigsResponse, 0)
        assert [(r.resource_type, r.resource_name) for r in response.responses] == [(t, n) for t, n, _ in resources]
        return [(r.error_code, r.error_message) for r in response.responses]

    def set_configs(self, topic: str, **configs: str) -> None:
        ops = [(k.replace("_", "."), SET, v) for k, v in configs.items()]
        assert self.incremental([(TOPIC, topic, ops)]) == [(NONE, None)]

    def create_partitions(
        self,
        topics: Sequence[tuple[str, int, list[list[int]] | None]],
        *,
        validate_only: bool = False,
        version: int = 1,
    ) -> dict[str, tuple[int, str | None]]:
        T_ = CreatePartitionsRequest.CreatePartitionsTopic
        req = CreatePartitionsRequest(
            topics=[
                T_(
                    name=name,
                    count=count,
                    assignments=None if a is None else [T_.CreatePartitionsAssignment(broker_ids=ids) for ids in a],
                )
                for name, count, a in topics
            ],
            timeout_ms=10_000,
            validate_only=validate_only,
        )
        response = self.call(req, CreatePartitionsResponse, version)
        return {r.name: (r.error_code, r.error_message) for r in response.results}

    def delete_records(self, topic: str, offsets: dict[int, int], *, version: int = 1) -> dict[int, tuple[int, int]]:
        P = DeleteRecordsRequest.DeleteRecordsTopic.DeleteRecordsPartition
        req = DeleteRecordsRequest(
            topics=[
                DeleteRecordsRequest.DeleteRecordsTopic(
                    name=topic, partitions=[P(partition_index=p, offset=o) for p, o in offsets.items()]
                )
            ],
            timeout_ms=10_000,
        )
        (result,) = self.call(req, DeleteRecordsResponse, version).topics
        assert result.name == topic
        return {p.partition_index: (p.error_code, p.low_watermark) for p in result.partitions}

    def partition_count(self, topic: str) -> int:
        error, partitions = self.metadata([topic])[topic]
        assert error == NONE
        return len(partitions)

    def ready_partitions(self, topic: str) -> int:
        """Partitions with a leader (0 while Kafka is still creating the topic)."""
        error, partitions = self.metadata([topic]).get(topic, (UNKNOWN_TOPIC_OR_PARTITION, {}))
        return len(partitions) if error == NONE and not any(partitions.values()) else 0

    def produce_values(
        self, topic: str, partition: int, values: Sequence[bytes], *, timestamp: int | None = None
    ) -> int:
        ts = int(time.time() * 1000) if timestamp is None else timestamp
        error, base = self.produce(topic, partition, build_batch([(None, v, ()) for v in values], timestamp=ts))
        assert error == NONE, f"produce to {topic}-{partition} failed with {error}"
        return base


@pytest.fixture
def admin(store: StoreProcess) -> Iterator[Admin]:
    with Admin(store.bootstrap) as client:
        yield client


def new_topic(client: Admin, partitions: int = 1, configs: dict[str, str] | None = None) -> str:
    name = f"adm-{uuid.uuid4().hex[:10]}"
    assert client.create_topic(name, partitions, configs) == NONE
    wait_until(lambda: name in client.metadata([name]) and client.metadata([name])[name][0] == NONE, f"topic {name}")
    return name


wait_until = functools.partial(_wait_until, timeout=20.0, interval=0.05)

def source_value(configs: dict[str, Any]) -> dict[str, tuple[str, int]]:
    return {k: (c.value, c.config_source) for k, c in configs.items()}


def synonym_list(entry: Any) -> list[tuple[str, str | None, int]]:
    return [(s.name, s.value, s.source) for s in entry.synonyms]


def segment_files(data_dir: Path, topic: str, partition: int = 0) -> list[Path]:
    return sorted((data_dir / f"{topic}-{partition}").glob("*.log"))


def earliest(client: Admin, topic: str, partition: int = 0) -> int:
    error, offset, _ = client.list_offset(topic, partition, -2)
    assert error == NONE
    return offset


# -- ApiVersions --------------------------------------------------------------------------------


def test_admin_apis_are_advertised_with_their_versions(admin: Admin) -> None:
    versions = admin.api_versions()
    assert {k: versions.get(k) for k in (21, 32, 33, 37, 44)} == {
        21: (0, 1),  # DeleteRecords
        32: (1, 3),  # DescribeConfigs
        33: (0, 1),  # AlterConfigs
        37: (0, 1),  # CreatePartitions
        44: (0, 0),  # IncrementalAlterConfigs
    }


# -- DescribeConfigs ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_describe_topic_reports_every_store_config_with_kafka_sources_and_synonyms(admin: Admin, version: int) -> None:
    topic = new_topic(admin, configs={"retention.ms": "3600000"})
    configs = admin.topic_configs(topic, version=version, synonyms=True, docs=True)
    assert sorted(configs) == sorted(STORE_KEYS)
    expected = {k: (v, DEFAULT_CONFIG) for k, v in DEFAULT_VALUES.items()}
    expected["retention.ms"] = ("3600000", DYNAMIC_TOPIC_CONFIG)
    assert source_value(configs) == expected
    assert not any(c.read_only or c.is_sensitive for c in configs.values())
    for key, entry in configs.items():
        own = [(key, "3600000", DYNAMIC_TOPIC_CONFIG)] if key == "retention.ms" else []
        assert synonym_list(entry) == [*own, *KAFKA_DEFAULT_SYNONYMS[key]], key
    if version >= 3:
        assert configs["retention.ms"].config_type == 5  # LONG
        assert configs["cleanup.policy"].config_type == 7  # LIST
        assert configs["segment.bytes"].config_type == 3  # INT
        assert all(c.documentation for c in configs.values())
    # Without the flags: no synonyms, no documentation.
    plain = admin.topic_configs(topic, version=version)
    assert all(c.synonyms == [] for c in plain.values())
    if version >= 3:
        assert all(c.documentation is None for c in plain.values())


def test_describe_topic_config_name_filter(admin: Admin) -> None:
    topic = new_topic(admin)
    (only,) = admin.describe([(TOPIC, topic, ["retention.bytes", "no.such.config"])])
    assert [c.name for c in only.configs] == ["retention.bytes"]
    (everything,) = admin.describe([(TOPIC, topic, [])])  # Kafka 4: an empty list means all
    assert sorted(c.name for c in everything.configs) == sorted(STORE_KEYS)


def test_describe_errors_are_per_resource(admin: Admin) -> None:
    topic = new_topic(admin)
    results = admin.describe(
        [
            (TOPIC, "no-such-topic", None),
            (TOPIC, "bad name!", None),
            (TOPIC, topic, ["segment.ms"]),
            (8, "1", None),  # BROKER_LOGGER
            (32, "some-group", None),  # GROUP
            (BROKER, "2", None),
            (BROKER, "one", None),
        ]
    )
    assert [(r.resource_type, r.resource_name) for r in results] == [
        (TOPIC, "no-such-topic"),
        (TOPIC, "bad name!"),
        (TOPIC, topic),
        (8, "1"),
        (32, "some-group"),
        (BROKER, "2"),
        (BROKER, "one"),
    ]
    codes = [r.error_code for r in results]
    assert codes == [
        UNKNOWN_TOPIC_OR_PARTITION,
        INVALID_TOPIC_EXCEPTION,
        NONE,
        INVALID_REQUEST,
        INVALID_REQUEST,
        INVALID_REQUEST,
        INVALID_REQUEST,
    ]
    assert [c.name for c in results[2].configs] == ["segment.ms"]
    assert all(r.configs == [] for i, r in enumerate(results) if i != 2)
    assert "BROKER_LOGGER" in results[3].error_message and "GROUP" in results[4].error_message
    assert results[5].error_message == "Unexpected broker id, expected 1 or empty string, but received 2"
    assert results[6].error_message == "Broker id must be an integer, but it is: one"


def test_describe_reflects_the_store_flags(store_factory: StoreFactory) -> None:
    store = store_factory(["--retention-bytes", "5000000", "--default-partitions", "3", "--no-auto-create"])
    with Admin(store.bootstrap) as client:
        topic = new_topic(client)
        entry = client.topic_configs(topic, synonyms=True)["retention.bytes"]
        assert (entry.value, entry.config_source) == ("5000000", STATIC_BROKER_CONFIG)
        assert synonym_list(entry) == [
            ("log.retention.bytes", "5000000", STATIC_BROKER_CONFIG),
            ("log.retention.bytes", "-1", DEFAULT_CONFIG),
        ]
        # A topic override wins over the flag.
        client.set_configs(topic, retention_bytes="7000")
        entry = client.topic_configs(topic, synonyms=True)["retention.bytes"]
        assert (entry.value, entry.config_source) == ("7000", DYNAMIC_TOPIC_CONFIG)
        assert [s[2] for s in synonym_list(entry)] == [DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG]

        (broker,) = client.describe([(BROKER, "1", None)], synonyms=True)
        assert broker.error_code == NONE
        settings = {c.name: c for c in broker.configs}
        assert all(c.read_only for c in settings.values())
        assert {k: (settings[k].value, settings[k].config_source) for k in settings}.items() >= {
            "num.partitions": ("3", STATIC_BROKER_CONFIG),
            "auto.create.topics.enable": ("false", STATIC_BROKER_CONFIG),
            "log.retention.bytes": ("5000000", STATIC_BROKER_CONFIG),
            "log.segment.bytes": ("1073741824", DEFAULT_CONFIG),
            "node.id": ("1", STATIC_BROKER_CONFIG),
        }.items()
        assert synonym_list(settings["num.partitions"]) == [("num.partitions", "3", STATIC_BROKER_CONFIG)]
        (filtered,) = client.describe([(BROKER, "1", ["num.partitions", "nope"])])
        assert [c.name for c in filtered.configs] == ["num.partitions"]
        # The cluster-wide default resource holds only dynamic defaults: the store has none.
        (default,) = client.describe([(BROKER, "", None)])
        assert (default.error_code, default.configs) == (NONE, [])


# -- AlterConfigs / IncrementalAlterConfigs -----------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_alter_configs_replaces_all_overrides_and_survives_restart(store: StoreProcess, version: int) -> None:
    with Admin(store.bootstrap) as client:
        topic = new_topic(client, configs={"retention.ms": "3600000", "segment.ms": "600000"})
        assert client.alter([(TOPIC, topic, {"retention.bytes": "1048576"})], version=version) == [(NONE, None)]
        expected = {k: (v, DEFAULT_CONFIG) for k, v in DEFAULT_VALUES.items()}
        expected["retention.bytes"] = ("1048576", DYNAMIC_TOPIC_CONFIG)
        assert source_value(client.topic_configs(topic)) == expected
    store.restart(kill=True)
    with Admin(store.bootstrap) as client:
        assert source_value(client.topic_configs(topic)) == expected
        # An empty set removes every override.
        assert client.alter([(TOPIC, topic, {})], version=version) == [(NONE, None)]
        assert source_value(client.topic_configs(topic)) == {k: (v, DEFAULT_CONFIG) for k, v in DEFAULT_VALUES.items()}


def test_incremental_set_delete_append_subtract(store: StoreProcess) -> None:
    with Admin(store.bootstrap) as client:
        topic = new_topic(client, configs={"segment.ms": "600000"})
        ops = [("retention.ms", SET, "86400000"), ("max.message.bytes", SET, " 2000000 "), ("segment.ms", DELETE, None)]
        assert client.incremental([(TOPIC, topic, ops)]) == [(NONE, None)]
        configs = source_value(client.topic_configs(topic))
        assert configs["retention.ms"] == ("86400000", DYNAMIC_TOPIC_CONFIG)
        assert configs["max.message.bytes"] == ("2000000", DYNAMIC_TOPIC_CONFIG)  # normalised, as Kafka shows it
        assert configs["segment.ms"] == ("604800000", DEFAULT_CONFIG)
        # cleanup.policy is a list: APPEND of what it holds is a no-op on the value but sets it.
        assert client.incremental([(TOPIC, topic, [("cleanup.policy", APPEND, "delete")])]) == [(NONE, None)]
        assert source_value(client.topic_configs(topic))["cleanup.policy"] == ("delete", DYNAMIC_TOPIC_CONFIG)
        # APPEND of compact would make it "delete,compact": compaction is not implemented.
        [(code, message)] = client.incremental([(TOPIC, topic, [("cleanup.policy", APPEND, "compact")])])
        assert code == INVALID_CONFIG and "compaction is not implemented" in (message or "")
        # SUBTRACT of delete leaves an empty policy, which the store cannot honour either.
        [(code, message)] = client.incremental([(TOPIC, topic, [("cleanup.policy", SUBTRACT, "delete")])])
        assert code == INVALID_CONFIG
        [(code, message)] = client.incremental([(TOPIC, topic, [("retention.ms", APPEND, "5")])])
        assert (code, message) == (INVALID_CONFIG, "Can't APPEND to key retention.ms because its type is not LIST.")
        # DELETE of a key that is not overridden (or not even known) is fine, as in Kafka.
        assert client.incremental([(TOPIC, topic, [("segment.bytes", DELETE, None)])]) == [(NONE, None)]
        assert client.incremental([(TOPIC, topic, [("no.such.key", DELETE, None)])]) == [(NONE, None)]
    store.restart()
    with Admin(store.bootstrap) as client:
        configs = source_value(client.topic_configs(topic))
        assert configs["retention.ms"] == ("86400000", DYNAMIC_TOPIC_CONFIG)
        assert configs["cleanup.policy"] == ("delete", DYNAMIC_TOPIC_CONFIG)


def test_alter_request_errors(admin: Admin) -> None:
    topic = new_topic(admin, configs={"retention.ms": "3600000"})
    before = source_value(admin.topic_configs(topic))
    # Incremental, one resource each.
    cases: list[tuple[Sequence[tuple[str, int, str | None]], int, str | None]] = [
        ([("retention.ms", SET, None)], INVALID_REQUEST, "Null value not supported for : retention.ms"),
        (
            [("retention.ms", SET, "1"), ("retention.ms", DELETE, None)],
            INVALID_REQUEST,
            "Error due to duplicate config keys",
        ),
        ([("retention.ms", SET, "soon")], INVALID_CONFIG, None),
        ([("retention.ms", SET, "-2")], INVALID_CONFIG, None),
        ([("cleanup.policy", SET, "compact")], INVALID_CONFIG, None),
        ([("compression.type", SET, "lz4")], INVALID_CONFIG, None),
        ([("message.timestamp.type", SET, "LogAppendTime")], INVALID_CONFIG, None),
        ([("retention.bytes", SET, "1"), ("segment.ms", 9, "1")], INVALID_REQUEST, None),
    ]
    for ops, code, message in cases:
        [(got_code, got_message)] = admin.incremental([(TOPIC, topic, ops)])
        assert got_code == code, (ops, got_code, got_message)
        assert got_message if message is None else got_message == message, ops
    # Legacy: null values, unknown topic, invalid topic names.
    assert admin.alter([(TOPIC, topic, {"retention.ms": None})]) == [
        (INVALID_REQUEST, "Null value not supported for : retention.ms")
    ]
    assert admin.alter([(TOPIC, "no-such-topic", {"retention.ms": "1"})]) == [
        (UNKNOWN_TOPIC_OR_PARTITION, "The topic 'no-such-topic' does not exist.")
    ]
    assert admin.alter([(TOPIC, "", {})]) == [(INVALID_REQUEST, "Default topic resources are not allowed.")]
    [(code, _)] = admin.alter([(TOPIC, "bad name!", {})])
    assert code == INVALID_TOPIC_EXCEPTION
    # A resource named twice fails both times; the others in the request still apply.
    other = new_topic(admin)
    results = admin.incremental(
        [
            (TOPIC, topic, [("retention.ms", SET, "1")]),
            (TOPIC, other, [("retention.ms", SET, "7200000")]),
            (TOPIC, topic, [("segment.ms", SET, "1")]),
        ]
    )
    twice = (INVALID_REQUEST, "Each resource must appear at most once.")
    assert results == [twice, (NONE, None), twice]
    assert source_value(admin.topic_configs(other))["retention.ms"] == ("7200000", DYNAMIC_TOPIC_CONFIG)
    # Nothing above changed the first topic.
    assert source_value(admin.topic_configs(topic)) == before


def test_validate_only_checks_but_changes_nothing(admin: Admin) -> None:
    topic = new_topic(admin)
    before = source_value(admin.topic_configs(topic))
    ok = [(TOPIC, topic, [("retention.ms", SET, "1000")])]
    assert admin.incremental(ok, validate_only=True) == [(NONE, None)]
    assert admin.alter([(TOPIC, topic, {"segment.bytes": "1048576"})], validate_only=True) == [(NONE, None)]
    [(code, _)] = admin.incremental([(TOPIC, topic, [("cleanup.policy", SET, "compact")])], validate_only=True)
    assert code == INVALID_CONFIG
    [(code, _)] = admin.alter([(TOPIC, "no-such-topic", {})], validate_only=True)
    assert code == UNKNOWN_TOPIC_OR_PARTITION
    assert source_value(admin.topic_configs(topic)) == before


def test_broker_and_other_resources_are_read_only(admin: Admin) -> None:
    for name in ("1", ""):
        [(code, message)] = admin.alter([(BROKER, name, {"log.retention.ms": "1000"})])
        assert code == INVALID_REQUEST and "read-only" in (message or "") and "flags" in (message or "")
        [(code, message)] = admin.incremental([(BROKER, name, [("log.retention.ms", SET, "1000")])])
        assert code == INVALID_REQUEST and "read-only" in (message or "")
    [(code, message)] = admin.incremental([(BROKER, "3", [("log.retention.ms", SET, "1000")])])
    assert (code, message) == (INVALID_REQUEST, "Unexpected broker id, expected 1, but received 3")
    for resource_type in (8, 16, 32):
        [(code, message)] = admin.incremental([(resource_type, "x", [("a", SET, "b")])])
        assert code == INVALID_REQUEST and "not supported" in (message or "")
    (broker,) = admin.describe([(BROKER, "1", ["log.retention.ms"])])
    assert [(c.name, c.value) for c in broker.configs] == [("log.retention.ms", "604800000")]


# -- effects of config changes ------------------------------------------------------------------


def test_segment_bytes_change_rolls_smaller_segments(store: StoreProcess) -> None:
    with Admin(store.bootstrap) as client:
        topic = new_topic(client)
        for i in range(5):
            client.produce_values(topic, 0, [b"a%d" % i + b"." * 3000])
        assert len(segment_files(store.data_dir, topic)) == 1
        client.set_configs(topic, segment_bytes="4000")
        for i in range(5):
            client.produce_values(topic, 0, [b"b%d" % i + b"." * 3000])
        # Each further 3 KB batch fills a 4000-byte segment: one new segment per batch.
        assert len(segment_files(store.data_dir, topic)) == 6
        hw, batches = client.fetch_all(topic, 0)
        assert hw == 10 and len(batches) == 10


def test_max_message_bytes_change_applies_to_the_next_produce(admin: Admin) -> None:
    topic = new_topic(admin)
    big = build_batch([(None, b"x" * 3000, ())], timestamp=int(time.time() * 1000))
    assert admin.produce(topic, 0, big) == (NONE, 0)
    admin.set_configs(topic, max_message_bytes="2000")
    assert admin.produce(topic, 0, big) == (10, -1)  # MESSAGE_TOO_LARGE
    assert admin.incremental([(TOPIC, topic, [("max.message.bytes", DELETE, None)])]) == [(NONE, None)]
    assert admin.produce(topic, 0, big) == (NONE, 1)


@functools.cache
def _retention_interval_flag() -> list[str]:
    """``--retention-check-interval-ms 200`` where the CLI has the flag; else the default 60 s sweep."""
    help_text = subprocess.run(
        [sys.executable, "-m", "streams", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    return ["--retention-check-interval-ms", "200"] if "--retention-check-interval-ms" in help_text else []


@pytest.mark.slow
def test_retention_changes_take_effect(store_factory: StoreFactory) -> None:
    store = store_factory(["--segment-bytes", "20000", *_retention_interval_flag()])
    now = int(time.time() * 1000)
    with Admin(store.bootstrap) as client:
        by_size = new_topic(client)
        by_time = new_topic(client, configs={"retention.ms": "-1"})
        old = now - 3 * 24 * 3600 * 1000  # three days ago: kept by -1, not by one day
        for i in range(20):
            client.produce_values(by_size, 0, [b"s%02d" % i + b"." * 5000])
            client.produce_values(by_time, 0, [b"t%02d" % i + b"." * 5000], timestamp=old)
        size_segments = segment_files(store.data_dir, by_size)
        time_segments = segment_files(store.data_dir, by_time)
        assert len(size_segments) >= 5 and len(time_segments) >= 5
        assert earliest(client, by_size) == earliest(client, by_time) == 0

        client.set_configs(by_size, retention_bytes="20000")
        client.set_configs(by_time, retention_ms=str(24 * 3600 * 1000))
        interval = 0.2 if _retention_interval_flag() else 60.0
        wait_until(
            lambda: earliest(client, by_size) > 0 and earliest(client, by_time) > 0,
            "the retention sweep",
            timeout=interval * 2 + 30,
        )
        # Size: the oldest segments went, what is left is within a segment of the limit.
        remaining = segment_files(store.data_dir, by_size)
        assert size_segments[0] not in remaining and remaining[-1] == size_segments[-1]
        assert sum(p.stat().st_size for p in remaining) - remaining[0].stat().st_size < 20000
        start = earliest(client, by_size)
        assert start == int(remaining[0].name.split(".")[0])
        error, _, raw = client.fetch(by_size, 0, start)
        assert error == NONE and (decode_records(raw)[0].value or b"").startswith(b"s%02d" % start)
        assert client.fetch(by_size, 0, 0)[0] == OFFSET_OUT_OF_RANGE
        # Time: every segment but the active one was older than a day.
        assert segment_files(store.data_dir, by_time) == [time_segments[-1]]
        assert earliest(client, by_time) == int(time_segments[-1].name.split(".")[0])


# -- CreatePartitions ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_create_partitions_grows_the_topic_durably(store: StoreProcess, version: int) -> None:
    with Admin(store.bootstrap) as client:
        topic = new_topic(client)
        client.produce_values(topic, 0, [b"before"])
        assert client.create_partitions([(topic, 3, None)], version=version) == {topic: (NONE, None)}
        assert client.partition_count(topic) == 3
        assert client.produce_values(topic, 2, [b"new partition"]) == 0
        assert client.create_partitions([(topic, 5, [[1], [1]])], version=version) == {topic: (NONE, None)}
        assert client.partition_count(topic) == 5
    store.restart(kill=True)
    with Admin(store.bootstrap) as client:
        assert client.partition_count(topic) == 5
        _, _, raw = client.fetch(topic, 2, 0)
        assert [r.value for r in decode_records(raw)] == [b"new partition"]
        _, _, raw = client.fetch(topic, 0, 0)
        assert [r.value for r in decode_records(raw)] == [b"before"]
        assert client.produce_values(topic, 4, [b"x"]) == 0


def test_create_partitions_errors_and_validate_only(admin: Admin) -> None:
    topic = new_topic(admin, partitions=2)
    assert admin.create_partitions([(topic, 4, None)], validate_only=True) == {topic: (NONE, None)}
    assert admin.partition_count(topic) == 2
    results = admin.create_partitions(
        [
            (topic, 2, None),
            ("no-such-topic", 3, None),
        ]
    )
    assert results == {
        topic: (INVALID_PARTITIONS, "Topic already has 2 partition(s)."),
        "no-such-topic": (UNKNOWN_TOPIC_OR_PARTITION, None),
    }
    assert admin.create_partitions([(topic, 1, None)]) == {
        topic: (INVALID_PARTITIONS, f"The topic {topic} currently has 2 partition(s); 1 would not be an increase.")
    }
    assert admin.create_partitions([(topic, 4, [[1]])]) == {
        topic: (
            INVALID_REPLICA_ASSIGNMENT,
            "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified.",
        )
    }
    for assignment, message in [
        ([[1], [2]], "The manual partition assignment includes broker 2, but no such broker is registered."),
        ([[1], []], "The manual partition assignment includes an empty replica list."),
        ([[1], [1, 1]], "The manual partition assignment includes the broker 1 more than once."),
    ]:
        assert admin.create_partitions([(topic, 4, assignment)]) == {topic: (INVALID_REPLICA_ASSIGNMENT, message)}
    assert admin.create_partitions([(topic, 3, None), (topic, 4, None)]) == {
        topic: (INVALID_REQUEST, "Duplicate topic name.")
    }
    (code, big_message) = admin.create_partitions([(topic, 2 + 10_001, None)])[topic]
    assert code == INVALID_PARTITIONS and "in steps" in (big_message or "")
    assert admin.partition_count(topic) == 2


# -- DeleteRecords ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1])
def test_delete_records_moves_the_log_start_durably(store_factory: StoreFactory, version: int) -> None:
    store = store_factory(["--segment-bytes", "4000"])
    with Admin(store.bootstrap) as client:
        topic = new_topic(client, partitions=2)
        for i in range(10):
            client.produce_values(topic, 0, [b"r%d" % i + b"." * 1500])
        files = segment_files(store.data_dir, topic)
        assert len(files) >= 4
        assert client.delete_records(topic, {0: 5, 1: 0}, version=version) == {0: (NONE, 5), 1: (NONE, 0)}
        assert earliest(client, topic) == 5
        assert client.fetch(topic, 0, 4)[0] == OFFSET_OUT_OF_RANGE
        error, _, raw = client.fetch(topic, 0, 5)
        assert error == NONE and decode_records(raw)[0].offset == 5
        # Whole segments below the new start are gone from disk; the one holding offset 5 stays.
        remaining = segment_files(store.data_dir, topic)
        assert remaining == [f for f in files if f in remaining] and len(remaining) < len(files)
        assert int(remaining[0].name.split(".")[0]) <= 5
        # Below the current start: nothing happens, the answer is the current start.
        assert client.delete_records(topic, {0: 2}, version=version) == {0: (NONE, 5)}
        assert client.delete_records(topic, {0: 11}, version=version) == {0: (OFFSET_OUT_OF_RANGE, -1)}
        assert client.delete_records(topic, {0: -2}, version=version) == {0: (OFFSET_OUT_OF_RANGE, -1)}
        assert client.delete_records(topic, {0: 7, 5: 0}, version=version) == {
            0: (NONE, 7),
            5: (UNKNOWN_TOPIC_OR_PARTITION, -1),
        }
        assert client.delete_records("no-such-topic", {0: 0}, version=version) == {0: (UNKNOWN_TOPIC_OR_PARTITION, -1)}
    # Acknowledged deletions survive a crash: the checkpoint was written before the answer.
    store.restart(kill=True)
    with Admin(store.bootstrap) as client:
        assert earliest(client, topic) == 7
        assert client.fetch(topic, 0, 6)[0] == OFFSET_OUT_OF_RANGE
        # -1 means the high watermark: everything goes, new records continue the offsets.
        assert client.delete_records(topic, {0: -1}, version=version) == {0: (NONE, 10)}
        assert client.produce_values(topic, 0, [b"after"]) == 10
    store.restart(kill=True)
    with Admin(store.bootstrap) as client:
        assert earliest(client, topic) == 10
        _, _, raw = client.fetch(topic, 0, 10)
        assert [r.value for r in decode_records(raw)] == [b"after"]


def test_delete_records_on_an_offline_partition_is_a_storage_error(store: StoreProcess) -> None:
    with Admin(store.bootstrap) as client:
        topic = new_topic(client, partitions=2)
        for p in (0, 1):
            for i in range(3):
                client.produce_values(topic, p, [b"v%d" % i])
    store.stop()
    # Damage the base offset of the middle batch of partition 1: acknowledged data fails its check.
    path = segment_files(store.data_dir, topic, 1)[0]
    data = bytearray(path.read_bytes())
    second = 12 + int.from_bytes(data[8:12], "big")
    data[second + 7] ^= 0xFF
    path.write_bytes(bytes(data))
    os.sync()
    store.start()
    with Admin(store.bootstrap) as client:
        assert client.metadata([topic])[topic][1] == {0: NONE, 1: KAFKA_STORAGE_ERROR}
        assert client.delete_records(topic, {0: 1, 1: 1}) == {0: (NONE, 1), 1: (KAFKA_STORAGE_ERROR, -1)}


# -- differential: the same raw requests against Apache Kafka and the store ----------------------


def _scenario(bootstrap: str, topic: str) -> list[tuple[str, object]]:
    """Run one fixed sequence of admin requests; returns what a client can observe of each."""
    seen: list[tuple[str, object]] = []
    with Admin(bootstrap) as client:
        assert client.create_topic(topic, 1) == NONE
        wait_until(lambda: client.ready_partitions(topic) == 1, "the new topic's partition")

        def shared(configs: dict[str, Any]) -> dict[str, tuple[str, int]]:
            return {k: (c.value, c.config_source) for k, c in configs.items() if k in STORE_KEYS}

        def configs_when(predicate: Callable[[dict[str, tuple[str, int]]], bool]) -> dict[str, tuple[str, int]]:
            # Kafka applies config changes through its controller: wait until the broker shows them.
            last: dict[str, tuple[str, int]] = {}

            def probe() -> bool:
                nonlocal last
                last = shared(client.topic_configs(topic))
                return predicate(last)

            try:
                wait_until(probe, "the config change", timeout=10)
            except AssertionError:
                pass  # the comparison below shows the difference
            return last

        (unknown,) = client.describe([(TOPIC, "no-such-topic-anywhere", None)])
        seen.append(("describe unknown topic", (unknown.error_code, unknown.error_message, unknown.configs)))
        (invalid,) = client.describe([(TOPIC, "bad name!", None)])
        seen.append(("describe invalid name", invalid.error_code))
        (found,) = client.describe([(TOPIC, topic, ["retention.ms"])])
        seen.append(("describe found", (found.error_code, found.error_message)))
        described = client.topic_configs(topic, synonyms=True, docs=True)
        seen.append(("defaults", shared(described)))
        seen.append(("default synonyms", {k: synonym_list(described[k]) for k in STORE_KEYS}))
        seen.append(("read-only or sensitive", [k for k in STORE_KEYS if described[k].read_only]))
        seen.append(("types", {k: described[k].config_type for k in STORE_KEYS}))
        seen.append(("documented", all(described[k].documentation for k in STORE_KEYS)))
        (filtered,) = client.describe([(TOPIC, topic, ["retention.ms", "no.such.config"])])
        seen.append(("filter", [c.name for c in filtered.configs]))
        (empty,) = client.describe([(TOPIC, topic, [])])
        seen.append(("empty filter", sorted(c.name for c in empty.configs if c.name in STORE_KEYS)))

        seen.append(("set", client.incremental([(TOPIC, topic, [("retention.ms", SET, "3600000")])])))
        after_set = configs_when(lambda c: c["retention.ms"][0] == "3600000")
        seen.append(("after set", after_set))
        synonyms = client.topic_configs(topic, synonyms=True)["retention.ms"]
        seen.append(("override synonyms", synonym_list(synonyms)))
        seen.append(("append non-list", client.incremental([(TOPIC, topic, [("retention.ms", APPEND, "1")])])))
        seen.append(("null set", client.incremental([(TOPIC, topic, [("retention.ms", SET, None)])])))
        dup = [("retention.ms", SET, "1"), ("retention.ms", SET, "2")]
        seen.append(("duplicate keys", client.incremental([(TOPIC, topic, dup)])))
        seen.append(
            (
                "duplicate resources",
                client.incremental([(TOPIC, topic, [("segment.ms", SET, "1")]), (TOPIC, topic, [])]),
            )
        )
        [(code, _)] = client.incremental([(TOPIC, topic, [("retention.ms", SET, "soon")])])
        seen.append(("not a number", code))
        [(code, _)] = client.incremental([(TOPIC, topic, [("no.such.config", SET, "1")])])
        seen.append(("unknown key", code))
        seen.append(("append to list", client.incremental([(TOPIC, topic, [("cleanup.policy", APPEND, "delete")])])))
        seen.append(
            ("validate only", client.incremental([(TOPIC, topic, [("segment.ms", SET, "1000")])], validate_only=True))
        )
        seen.append(("delete unknown key", client.incremental([(TOPIC, topic, [("no.such.config", DELETE, None)])])))
        after_append = configs_when(lambda c: c["cleanup.policy"][1] == DYNAMIC_TOPIC_CONFIG)
        seen.append(("after append", after_append))
        seen.append(("legacy null", client.alter([(TOPIC, topic, {"retention.ms": None})])))
        seen.append(("legacy unknown topic", client.alter([(TOPIC, "no-such-topic-anywhere", {"retention.ms": "1"})])))
        seen.append(("legacy default topic", client.alter([(TOPIC, "", {"retention.ms": "1"})])))
        seen.append(("legacy replace", client.alter([(TOPIC, topic, {"retention.bytes": "1048576"})])))
        seen.append(
            (
                "after replace",
                configs_when(lambda c: c["retention.bytes"][0] == "1048576" and c["retention.ms"][1] == DEFAULT_CONFIG),
            )
        )

        other_broker = client.incremental([(BROKER, "3", [("log.retention.ms", SET, "1000")])])
        seen.append(("alter other broker", other_broker))
        [(code, _)] = client.alter([(8, "1", {"kafka": "DEBUG"})])  # BROKER_LOGGER: not in legacy AlterConfigs
        seen.append(("legacy alter of loggers", code))
        (wrong,) = client.describe([(BROKER, "2", None)])
        seen.append(("describe other broker", (wrong.error_code, wrong.error_message)))
        (bad,) = client.describe([(BROKER, "one", None)])
        seen.append(("describe bad broker id", (bad.error_code, bad.error_message)))
        (mine,) = client.describe([(BROKER, "1", ["num.partitions", "log.segment.bytes", "auto.create.topics.enable"])])
        seen.append(("broker settings", (mine.error_message, sorted((c.name, c.value) for c in mine.configs))))
        (default,) = client.describe([(BROKER, "", None)])
        # (Kafka lists min.insync.replicas here: KRaft's storage format writes it as a cluster default.)
        seen.append(("broker defaults", (default.error_code, default.error_message)))

        seen.append(("grow: same", client.create_partitions([(topic, 1, None)])))
        seen.append(("grow: unknown", client.create_partitions([("no-such-topic-anywhere", 2, None)])))
        seen.append(("grow: duplicate", client.create_partitions([(topic, 2, None), (topic, 3, None)])))
        seen.append(("grow: too few assignments", client.create_partitions([(topic, 3, [[1]])])))
        seen.append(("grow: unknown broker", client.create_partitions([(topic, 2, [[7]])])))
        seen.append(("grow: validate only", client.create_partitions([(topic, 2, None)], validate_only=True)))
        seen.append(("grow", client.create_partitions([(topic, 3, [[1], [1]])])))
        wait_until(lambda: client.ready_partitions(topic) == 3, "the new partitions", timeout=10)
        seen.append(("grow: fewer", client.create_partitions([(topic, 2, None)])))

        for i in range(2):
            client.produce_values(topic, 0, [b"%d-%d" % (i, j) for j in range(5)])
        # Kafka may still answer NOT_LEADER_OR_FOLLOWER (6) for a partition just created even though
        # Metadata names its leader; DeleteRecords is idempotent, so ask again until it settles.
        deleted = client.delete_records(topic, {0: 3, 1: 0, 9: 0})
        for _ in range(50):
            if all(code != 6 for code, _ in deleted.values()):
                break
            time.sleep(0.2)
            deleted = client.delete_records(topic, {0: 3, 1: 0, 9: 0})
        seen.append(("delete records", deleted))
        seen.append(("earliest", earliest(client, topic)))
        seen.append(("below start", client.delete_records(topic, {0: 1})))
        seen.append(("past high watermark", client.delete_records(topic, {0: 11})))
        seen.append(("minus two", client.delete_records(topic, {0: -2})))
        seen.append(("high watermark", client.delete_records(topic, {0: -1})))
        seen.append(("unknown topic", client.delete_records("no-such-topic-anywhere", {0: 0})))
    return seen


def test_admin_requests_answer_like_kafka(kafka_broker: KafkaBroker, store: StoreProcess) -> None:
    topic = f"adm-diff-{uuid.uuid4().hex[:10]}"
    kafka = _scenario(kafka_broker.bootstrap, topic)
    ours = _scenario(store.bootstrap, topic)
    assert [name for name, _ in ours] == [name for name, _ in kafka]
    differences = [(name, k, o) for (name, k), (_, o) in zip(kafka, ours, strict=True) if k != o]
    assert differences == [], "\n".join(f"{name}:\n  kafka: {k}\n  store: {o}" for name, k, o in differences)
