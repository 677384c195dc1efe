"""Kafka's own Java client and command line tools (the 4.2.0 jars from Maven) against the store."""

from __future__ import annotations

import json
from pathlib import Path

from tests.compat._util import CODECS, create_topic, stored_batches
from tests.compat.conftest import Target
from tests.support.kafka import (
    CONSOLE_CONSUMER,
    CONSOLE_PRODUCER,
    TOPIC_COMMAND,
    run_java_source,
    run_kafka_tool,
)

JAVA_DIR = Path(__file__).parent / "java"
BASE_TS = 1_730_000_000_000


def test_java_idempotent_producer_and_assign_consumer(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    count = 7
    result = run_java_source(
        JAVA_DIR / "ProduceConsume.java", [broker.bootstrap, topic, str(count), "snappy", str(BASE_TS)], check=True
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    sent = [e for e in events if e["event"] == "sent"]
    received = [e for e in events if e["event"] == "received"]
    # Record i went to partition i % 2; offsets count up per partition in send order.
    assert [(e["partition"], e["offset"], e["timestamp"]) for e in sent] == [
        (i % 2, i // 2, BASE_TS + i) for i in range(count)
    ]
    assert {"event": "end_offsets", "p0": 4, "p1": 3} in events
    assert sorted(received, key=lambda e: (e["partition"], e["offset"])) == sorted(
        (
            {
                "event": "received",
                "partition": i % 2,
                "offset": i // 2,
                "key": f"key-{i}",
                "value": f"value-{i}:" + "x" * 200,
                "headers": [["i", str(i)], ["client", "java"]],
                "timestamp": BASE_TS + i,
                "timestampType": "CreateTime",
            }
            for i in range(count)
        ),
        key=lambda e: (e["partition"], e["offset"]),
    )
    assert events[-1] == {"event": "done", "received": count}
    for part, n in ((0, 4), (1, 3)):
        batches = stored_batches(broker.log_dir, topic, part)
        assert sum(b.record_count for b in batches) == n
        assert {b.codec for b in batches} == {CODECS["snappy"]}
        assert batches[0].producer_id >= 0 and batches[0].base_sequence == 0


def test_console_producer_and_consumer(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=1)
    produced = run_kafka_tool(
        CONSOLE_PRODUCER,
        [
            "--bootstrap-server", broker.bootstrap,
            "--topic", topic,
            "--producer-property", "acks=all",
            "--reader-property", "parse.key=true",
            "--reader-property", "key.separator=:",
            "--reader-property", "parse.headers=true",
        ],
        input="h1:v1,h2:v2\tkey-1:value one\ntrace:abc\tkey-2:value:two\n",
        check=True,
    )
    assert "ERROR" not in produced.stderr, produced.stderr
    consumed = run_kafka_tool(
        CONSOLE_CONSUMER,
        [
            "--bootstrap-server", broker.bootstrap,
            "--topic", topic,
            # No consumer groups in the store yet: an explicit partition and offset (assign()).
            "--partition", "0",
            "--offset", "earliest",
            "--max-messages", "2",
            "--timeout-ms", "30000",
            "--formatter-property", "print.key=true",
            "--formatter-property", "print.partition=true",
            "--formatter-property", "print.offset=true",
            "--formatter-property", "print.headers=true",
            "--formatter-property", "print.timestamp=true",
        ],
        check=True,
    )
    lines = consumed.stdout.splitlines()
    assert len(lines) == 2, consumed.stdout + consumed.stderr
    fields = [line.split("\t") for line in lines]
    assert [f[1:] for f in fields] == [
        ["Partition:0", "Offset:0", "h1:v1,h2:v2", "key-1", "value one"],
        ["Partition:0", "Offset:1", "trace:abc", "key-2", "value:two"],
    ]
    assert all(f[0].startswith("CreateTime:") and int(f[0].split(":")[1]) > 1_600_000_000_000 for f in fields)
    assert "Processed a total of 2 messages" in consumed.stderr


def test_topic_command_create_and_list(broker: Target, topic: str) -> None:
    created = run_kafka_tool(
        TOPIC_COMMAND,
        ["--bootstrap-server", broker.bootstrap, "--create", "--topic", topic, "--partitions", "3",
         "--replication-factor", "1"],
        check=True,
    )
    assert created.stdout == f"Created topic {topic}.\n"
    listed = run_kafka_tool(TOPIC_COMMAND, ["--bootstrap-server", broker.bootstrap, "--list"], check=True)
    assert topic in listed.stdout.splitlines()

    again = run_kafka_tool(
        TOPIC_COMMAND,
        ["--bootstrap-server", broker.bootstrap, "--create", "--topic", topic, "--partitions", "1"],
    )
    assert again.returncode != 0
    assert "TopicExistsException" in again.stderr + again.stdout


def test_topic_command_describe(broker: Target, topic: str) -> None:
    # TopicCommand --describe reads Metadata (or DescribeTopicPartitions) and DescribeConfigs.
    created = run_kafka_tool(
        TOPIC_COMMAND,
        ["--bootstrap-server", broker.bootstrap, "--create", "--topic", topic, "--partitions", "3",
         "--config", "max.message.bytes=2000000", "--config", "retention.ms=3600000"],
        check=True,
    )
    assert created.stdout == f"Created topic {topic}.\n"
    described = run_kafka_tool(
        TOPIC_COMMAND, ["--bootstrap-server", broker.bootstrap, "--describe", "--topic", topic], check=True
    )
    lines = described.stdout.splitlines()
    head = dict(field.split(": ", 1) for field in lines[0].split("\t") if ": " in field)
    assert head["Topic"] == topic
    assert head["PartitionCount"] == "3"
    assert head["ReplicationFactor"] == "1"
    # Topic overrides are listed (Kafka also lists static broker settings such as min.insync.replicas).
    assert {"max.message.bytes=2000000", "retention.ms=3600000"} <= set(head["Configs"].split(","))
    if broker.is_store:
        # Legitimate difference: the store serves Metadata up to v8 (the last non-flexible
        # version), which carries no topic ids, so the tool prints no TopicId column.
        assert "TopicId" not in head
    else:
        assert len(head["TopicId"]) == 22  # a base64 Kafka Uuid
    rows = [line.strip().split("\t") for line in lines[1:]]
    assert [row[:5] for row in rows] == [
        [f"Topic: {topic}", f"Partition: {p}", "Leader: 1", "Replicas: 1", "Isr: 1"] for p in range(3)
    ]
