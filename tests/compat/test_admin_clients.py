"""Real admin clients against Apache Kafka and the store: topic configs, partition counts, records.

Every scenario runs against both brokers (the ``broker`` fixture) and asserts the same literal
observations: confluent-kafka's AdminClient (librdkafka), kafka-python 3's KafkaAdminClient and
Kafka's own command line tools (ConfigCommand, TopicCommand, DeleteRecordsCommand from the 4.2
jars). Kafka applies config and partition changes through its controller, so the tests wait for
a change to show before looking at it; that wait is a hang guard, never a timing assertion.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import OFFSET_END, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
)
from kafka import KafkaAdminClient
from kafka import TopicPartition as KpTopicPartition
from kafka.admin import ConfigResource as KpConfigResource

from tests.compat._util import (
    TIMEOUT,
    admin,
    consumer,
    create_topic,
    produce_all,
    producer,
    read_partitions,
    wait_for_leaders,
)
from tests.compat.conftest import Target
from tests.support.kafka import TOPIC_COMMAND, run_kafka_tool
from tests.support.store import StoreProcess

T = TypeVar("T")

CONFIG_COMMAND = "kafka.admin.ConfigCommand"
DELETE_RECORDS_COMMAND = "org.apache.kafka.tools.DeleteRecordsCommand"

DYNAMIC, DEFAULT = 1, 5
DEFAULTS = {
    "cleanup.policy": "delete",
    "max.message.bytes": "1048588",
    "message.timestamp.type": "CreateTime",
    "retention.bytes": "-1",
    "retention.ms": "604800000",
    "segment.bytes": "1073741824",
    "segment.ms": "604800000",
}
"""The topic configs the store honours, with Kafka's (and the store's) defaults."""


def eventually(probe: Callable[[], T], done: Callable[[T], bool], what: str) -> T:
    """Probe until ``done`` holds and return that value; fail after TIMEOUT (hang guard only)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value}")
        time.sleep(0.1)


def topic_configs(client: AdminClient, topic: str) -> dict[str, tuple[str | None, int]]:
    """The store's keys of a topic's DescribeConfigs: {name: (value, source)}."""
    (future,) = client.describe_configs([ConfigResource("topic", topic)]).values()
    entries = future.result(TIMEOUT)
    return {k: (e.value, int(e.source)) for k, e in entries.items() if k in DEFAULTS}


def configs_once(
    client: AdminClient, topic: str, expected: dict[str, tuple[str, int]]
) -> dict[str, tuple[str | None, int]]:
    return eventually(lambda: topic_configs(client, topic), lambda c: c == expected, f"configs of {topic}")


def error_code(future: Any) -> int:
    with pytest.raises(KafkaException) as info:
        future.result(TIMEOUT)
    return int(info.value.args[0].code())


def with_overrides(**overrides: str) -> dict[str, tuple[str, int]]:
    out = {k: (v, DEFAULT) for k, v in DEFAULTS.items()}
    for key, value in overrides.items():
        out[key.replace("_", ".")] = (value, DYNAMIC)
    return out


# -- confluent-kafka (librdkafka) -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")  # used on purpose
def test_confluent_describe_and_alter_topic_configs(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic)
    client = admin(broker.bootstrap)
    assert topic_configs(client, topic) == with_overrides()

    def incremental(*entries: ConfigEntry, validate_only: bool = False) -> Any:
        (future,) = client.incremental_alter_configs(
            [ConfigResource("topic", topic, incremental_configs=list(entries))], validate_only=validate_only
        ).values()
        return future

    def op(name: str, value: str | None, kind: AlterConfigOpType) -> ConfigEntry:
        return ConfigEntry(name, value, incremental_operation=kind)

    ok = incremental(
        op("retention.ms", "3600000", AlterConfigOpType.SET), op("cleanup.policy", "delete", AlterConfigOpType.APPEND)
    )
    assert ok.result(TIMEOUT) is None
    configs_once(client, topic, with_overrides(retention_ms="3600000", cleanup_policy="delete"))

    assert incremental(op("retention.ms", None, AlterConfigOpType.DELETE)).result(TIMEOUT) is None
    configs_once(client, topic, with_overrides(cleanup_policy="delete"))

    # The legacy AlterConfigs replaces every override with the given set.
    (legacy,) = client.alter_configs(
        [ConfigResource("topic", topic, set_config={"retention.bytes": "1048576"})]
    ).values()
    assert legacy.result(TIMEOUT) is None
    configs_once(client, topic, with_overrides(retention_bytes="1048576"))

    # Checked but not applied; refused values leave everything as it was.
    assert incremental(op("segment.ms", "60000", AlterConfigOpType.SET), validate_only=True).result(TIMEOUT) is None
    assert error_code(incremental(op("retention.ms", "soon", AlterConfigOpType.SET))) == KafkaError.INVALID_CONFIG
    assert error_code(incremental(op("retention.ms", "1", AlterConfigOpType.APPEND))) == KafkaError.INVALID_CONFIG
    assert topic_configs(client, topic) == with_overrides(retention_bytes="1048576")

    (unknown,) = client.describe_configs([ConfigResource("topic", f"{topic}-missing")]).values()
    assert error_code(unknown) == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_confluent_describe_broker_configs(broker: Target) -> None:
    client = admin(broker.bootstrap)
    (future,) = client.describe_configs([ConfigResource("broker", "1")]).values()
    entries = future.result(TIMEOUT)
    # The test Kafka and the store run with the same settings for these.
    assert {k: entries[k].value for k in ("num.partitions", "log.segment.bytes", "auto.create.topics.enable")} == {
        "num.partitions": "1",
        "log.segment.bytes": "1073741824",
        "auto.create.topics.enable": "true",
    }
    assert entries["node.id"].value == "1" and entries["node.id"].is_read_only
    # (librdkafka sends a BROKER resource to that broker, so another id is never asked here; the
    # raw differential test in tests/integration/test_admin_apis.py covers that error.)


def test_confluent_create_partitions(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic)
    client = admin(broker.bootstrap)
    (grow,) = client.create_partitions([NewPartitions(topic, 3)], operation_timeout=TIMEOUT).values()
    assert grow.result(TIMEOUT) is None
    wait_for_leaders(client, topic, 3)
    p = producer(broker.bootstrap)
    reports = produce_all(p, topic, [{"partition": 2, "value": b"into a new partition"}])
    assert [(r.partition, r.offset, r.error) for r in reports] == [(2, 0, None)]
    assert [r.value for r in read_partitions(broker.bootstrap, topic, {2: 1})] == [b"into a new partition"]

    (same,) = client.create_partitions([NewPartitions(topic, 3)]).values()
    with pytest.raises(KafkaException) as info:
        same.result(TIMEOUT)
    assert info.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    assert info.value.args[0].str() == "Topic already has 3 partition(s)."
    (check,) = client.create_partitions([NewPartitions(topic, 5)], validate_only=True).values()
    assert check.result(TIMEOUT) is None
    (missing,) = client.create_partitions([NewPartitions(f"{topic}-missing", 2)]).values()
    assert error_code(missing) == KafkaError.UNKNOWN_TOPIC_OR_PART
    md = client.list_topics(topic=topic, timeout=TIMEOUT).topics[topic]
    assert sorted(md.partitions) == [0, 1, 2]


def test_confluent_delete_records(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic)
    client = admin(broker.bootstrap)
    p = producer(broker.bootstrap, linger_ms=0)
    produce_all(p, topic, [{"partition": 0, "value": b"r%d" % i} for i in range(10)], flush_each=True)

    def delete(offset: int) -> Any:
        (future,) = client.delete_records([TopicPartition(topic, 0, offset)], operation_timeout=TIMEOUT).values()
        return future

    assert delete(4).result(TIMEOUT).low_watermark == 4
    c = consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT) == (4, 10)
    finally:
        c.close()
    assert [(r.offset, r.value) for r in read_partitions(broker.bootstrap, topic, {0: 6})] == [
        (i, b"r%d" % i) for i in range(4, 10)
    ]
    assert delete(2).result(TIMEOUT).low_watermark == 4  # below the start: nothing to do
    assert error_code(delete(11)) == KafkaError.OFFSET_OUT_OF_RANGE
    assert delete(OFFSET_END).result(TIMEOUT).low_watermark == 10


# -- kafka-python 3 ---------------------------------------------------------------------------


@pytest.fixture
def kp_admin(broker: Target) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=int(TIMEOUT * 1000))
    yield client
    client.close()


def test_kafka_python_configs(broker: Target, topic: str, kp_admin: KafkaAdminClient) -> None:
    create_topic(broker.bootstrap, topic)
    resource = KpConfigResource("TOPIC", topic)

    def described(config_filter: str = "modified") -> dict[str, tuple[str, str]]:
        got = kp_admin.describe_configs([resource], config_filter=config_filter)["topic"][topic]
        return {k: (v["value"], v["config_source"]) for k, v in got.items() if k in DEFAULTS}

    assert described("all") == {k: (v, "DEFAULT_CONFIG") for k, v in DEFAULTS.items()}
    assert described() == {}
    set_retention = KpConfigResource("TOPIC", topic, configs={"retention.ms": "3600000"})
    assert kp_admin.alter_configs([set_retention]) == {"topic": {topic: "OK"}}
    eventually(described, lambda c: c == {"retention.ms": ("3600000", "DYNAMIC_TOPIC_CONFIG")}, "retention.ms")
    # incremental=False sends AlterConfigs; the client re-sends the other modified keys itself.
    legacy = KpConfigResource("TOPIC", topic, configs={"retention.bytes": "1048576"})
    assert kp_admin.alter_configs([legacy], incremental=False) == {"topic": {topic: "OK"}}
    eventually(
        described,
        lambda c: (
            c
            == {
                "retention.ms": ("3600000", "DYNAMIC_TOPIC_CONFIG"),
                "retention.bytes": ("1048576", "DYNAMIC_TOPIC_CONFIG"),
            }
        ),
        "both overrides",
    )
    reset = KpConfigResource("TOPIC", topic, configs=["retention.ms"])
    assert kp_admin.reset_configs([reset]) == {"topic": {topic: "OK"}}
    eventually(described, lambda c: c == {"retention.bytes": ("1048576", "DYNAMIC_TOPIC_CONFIG")}, "the reset")
    bad = KpConfigResource("TOPIC", topic, configs={"retention.bytes": "lots"})
    assert kp_admin.alter_configs([bad])["topic"][topic].startswith("[Error 40] InvalidConfigurationError")


def test_kafka_python_partitions_and_records(broker: Target, topic: str, kp_admin: KafkaAdminClient) -> None:
    create_topic(broker.bootstrap, topic)
    response = kp_admin.create_partitions({topic: 2})
    assert [(r.name, r.error_code) for r in response.results] == [(topic, 0)]
    wait_for_leaders(admin(broker.bootstrap), topic, 2)
    p = producer(broker.bootstrap, linger_ms=0)
    produce_all(p, topic, [{"partition": i % 2, "value": b"v%d" % i} for i in range(8)], flush_each=True)
    result = kp_admin.delete_records({KpTopicPartition(topic, 0): 3, KpTopicPartition(topic, 1): -1})
    assert {tp.partition: (r["error_code"], r["low_watermark"]) for tp, r in result.items()} == {0: (0, 3), 1: (0, 4)}
    again = kp_admin.create_partitions({topic: 2}, raise_errors=False)
    assert [(r.error_code, r.error_message) for r in again.results] == [(37, "Topic already has 2 partition(s).")]


# -- Kafka's command line tools ---------------------------------------------------------------


def tool(main_class: str, bootstrap: str, *args: str, check: bool = True) -> Any:
    return run_kafka_tool(main_class, ["--bootstrap-server", bootstrap, *args], check=check)


def test_config_command_topics(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic)
    client = admin(broker.bootstrap)
    entity = ["--entity-type", "topics", "--entity-name", topic]
    assert (
        tool(CONFIG_COMMAND, broker.bootstrap, "--describe", *entity).stdout
        == f"Dynamic configs for topic {topic} are:\n"
    )
    altered = tool(
        CONFIG_COMMAND,
        broker.bootstrap,
        "--alter",
        *entity,
        "--add-config",
        "retention.ms=3600000,segment.bytes=2000000",
    )
    assert altered.stdout == f"Completed updating config for topic {topic}.\n"
    configs_once(client, topic, with_overrides(retention_ms="3600000", segment_bytes="2000000"))
    assert tool(CONFIG_COMMAND, broker.bootstrap, "--describe", *entity).stdout == (
        f"Dynamic configs for topic {topic} are:\n"
        "  retention.ms=3600000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000}\n"
        "  segment.bytes=2000000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:segment.bytes=2000000, "
        "DEFAULT_CONFIG:log.segment.bytes=1073741824}\n"
    )
    every = tool(CONFIG_COMMAND, broker.bootstrap, "--describe", "--all", *entity).stdout.splitlines()
    assert every[0] == f"All configs for topic {topic} are:"
    assert [line for line in every if line.strip().split("=")[0] in DEFAULTS] == [
        "  cleanup.policy=delete sensitive=false synonyms={DEFAULT_CONFIG:log.cleanup.policy=delete}",
        "  max.message.bytes=1048588 sensitive=false synonyms={DEFAULT_CONFIG:message.max.bytes=1048588}",
        "  message.timestamp.type=CreateTime sensitive=false "
        "synonyms={DEFAULT_CONFIG:log.message.timestamp.type=CreateTime}",
        "  retention.bytes=-1 sensitive=false synonyms={DEFAULT_CONFIG:log.retention.bytes=-1}",
        "  retention.ms=3600000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000}",
        "  segment.bytes=2000000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:segment.bytes=2000000, "
        "DEFAULT_CONFIG:log.segment.bytes=1073741824}",
        "  segment.ms=604800000 sensitive=false synonyms={}",
    ]
    tool(CONFIG_COMMAND, broker.bootstrap, "--alter", *entity, "--delete-config", "retention.ms")
    configs_once(client, topic, with_overrides(segment_bytes="2000000"))
    # Deleting a key that is not set is refused by the tool itself (it describes first).
    missing = tool(CONFIG_COMMAND, broker.bootstrap, "--alter", *entity, "--delete-config", "retention.ms", check=False)
    assert missing.returncode != 0 and "Invalid config(s): retention.ms" in missing.stdout + missing.stderr
    bad = tool(CONFIG_COMMAND, broker.bootstrap, "--alter", *entity, "--add-config", "retention.ms=soon", check=False)
    assert bad.returncode != 0 and "InvalidConfigurationException" in bad.stdout + bad.stderr
    assert topic_configs(client, topic) == with_overrides(segment_bytes="2000000")


def test_config_command_brokers(broker: Target) -> None:
    every = tool(
        CONFIG_COMMAND, broker.bootstrap, "--describe", "--all", "--entity-type", "brokers", "--entity-name", "1"
    )
    lines = every.stdout.splitlines()
    assert lines[0] == "All configs for broker 1 are:"
    values = dict(line.strip().split(" ", 1)[0].split("=", 1) for line in lines[1:])
    assert {k: values[k] for k in ("num.partitions", "log.segment.bytes", "log.retention.bytes", "node.id")} == {
        "num.partitions": "1",
        "log.segment.bytes": "1073741824",
        "log.retention.bytes": "-1",
        "node.id": "1",
    }


def test_config_command_on_what_only_the_store_refuses(store: StoreProcess, topic: str) -> None:
    create_topic(store.bootstrap, topic)
    entity = ["--entity-type", "topics", "--entity-name", topic]
    for setting, says in [
        ("cleanup.policy=compact", "log compaction is not implemented"),
        ("compression.type=lz4", "unknown topic config 'compression.type'"),
    ]:
        refused = tool(CONFIG_COMMAND, store.bootstrap, "--alter", *entity, "--add-config", setting, check=False)
        assert refused.returncode != 0
        assert "InvalidConfigurationException" in refused.stderr and says in refused.stderr, refused.stderr
    brokers = ["--entity-type", "brokers", "--entity-name", "1"]
    refused = tool(
        CONFIG_COMMAND, store.bootstrap, "--alter", *brokers, "--add-config", "log.retention.ms=1", check=False
    )
    assert refused.returncode != 0
    assert "InvalidRequestException: broker configs are read-only" in refused.stderr, refused.stderr
    assert topic_configs(admin(store.bootstrap), topic) == with_overrides()


def test_topic_command_alter_partitions(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic)
    tool(TOPIC_COMMAND, broker.bootstrap, "--alter", "--topic", topic, "--partitions", "3")
    wait_for_leaders(admin(broker.bootstrap), topic, 3)
    described = tool(TOPIC_COMMAND, broker.bootstrap, "--describe", "--topic", topic).stdout.splitlines()
    assert "PartitionCount: 3" in described[0]
    assert [line.strip().split("\t")[1] for line in described[1:]] == [f"Partition: {p}" for p in range(3)]
    shrink = tool(TOPIC_COMMAND, broker.bootstrap, "--alter", "--topic", topic, "--partitions", "2", check=False)
    assert shrink.returncode != 0
    assert (
        f"The topic {topic} currently has 3 partition(s); 2 would not be an increase." in shrink.stdout + shrink.stderr
    )


def test_delete_records_command(broker: Target, topic: str, tmp_path: Path) -> None:
    create_topic(broker.bootstrap, topic)
    p = producer(broker.bootstrap, linger_ms=0)
    produce_all(p, topic, [{"partition": 0, "value": b"r%d" % i} for i in range(6)], flush_each=True)
    offsets = tmp_path / "offsets.json"
    offsets.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "offset": 4}]}))
    done = tool(DELETE_RECORDS_COMMAND, broker.bootstrap, "--offset-json-file", str(offsets))
    assert done.stdout == (
        "Executing records delete operation\n"
        "Records delete operation completed:\n"
        f"partition: {topic}-0\tlow_watermark: 4\n"
    )
    assert [r.offset for r in read_partitions(broker.bootstrap, topic, {0: 2})] == [4, 5]
