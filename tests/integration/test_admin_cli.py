"""``outbox streams topics ...`` / ``outbox streams groups ...`` as a real subprocess against real brokers.

Every scenario runs against the session's Apache Kafka and a fresh stream store and checks the exact
output (tables and JSON) and what the broker holds afterwards (OffsetFetch, ListOffsets through
kafka-python). Consumer groups come from a real ``KafkaConsumer`` that joins the group and commits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.protocol.api_key import ApiKey
from kafka.structs import OffsetAndMetadata

from tests.support._proc import REPO_ROOT, free_port
from tests.support.kafka import KafkaBroker
from tests.support.store import StoreProcess

TIMEOUT = 60.0
"""Upper bound for anything that waits on a broker (only there to avoid hangs)."""

BASE_TS = 1_700_000_000_000
"""2023-11-14T22:13:20Z: timestamps of the produced records (topics keep them: retention.ms=-1)."""

# Partition 0 gets records at +0 s, +10 s, +20 s (offsets 0-2), partition 1 at +5 s, +15 s (0-1).
RECORDS = [(0, 0), (1, 5), (0, 10), (1, 15), (0, 20)]


@dataclass(frozen=True)
class Broker:
    kind: str
    bootstrap: str


@pytest.fixture(params=[pytest.param("kafka", marks=pytest.mark.kafka), "store"])
def broker(request: pytest.FixtureRequest) -> Broker:
    """The session's Apache Kafka or a fresh stream store (the same scenario runs on both)."""
    if request.param == "kafka":
        kafka: KafkaBroker = request.getfixturevalue("kafka_broker")
        return Broker("kafka", kafka.bootstrap)
    store: StoreProcess = request.getfixturevalue("store")
    return Broker("store", store.bootstrap)


@pytest.fixture
def names() -> tuple[str, str]:
    """A topic and a group name no other test has used; 12 characters each, so tables line up here."""
    suffix = uuid.uuid4().hex[:10]
    return f"t-{suffix}", f"g-{suffix}"


# -- running the command line -----------------------------------------------------------------


def cli(
    broker: Broker | str | None, *args: str, rc: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streams ARGS --bootstrap-servers ...`` and check its exit code and stderr."""
    cmd = [sys.executable, "-m", "streams", *args]
    if broker is not None:
        cmd += ["--bootstrap-servers", broker if isinstance(broker, str) else broker.bootstrap]
    return _run(cmd, rc, env)


def _run(cmd: list[str], rc: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("OUTBOX_BOOTSTRAP_SERVERS", None)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120, check=False)
    assert proc.returncode == rc, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def cli_json(broker: Broker, *args: str) -> Any:
    return json.loads(cli(broker, *args, "--json").stdout)


# -- real clients -----------------------------------------------------------------------------


def _admin(broker: Broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30_000)


def committed(broker: Broker, group: str) -> dict[tuple[str, int], int]:
    """What OffsetFetch returns for ``group``: {(topic, partition): offset}."""
    client = _admin(broker)
    try:
        offsets = client.list_group_offsets({group: None})[group]
    finally:
        client.close()
    return {(tp.topic, tp.partition): oam.offset for tp, oam in offsets.items()}


def create_topic_with_records(broker: Broker, topic: str) -> None:
    """A 2-partition topic through the CLI, holding RECORDS (3 in partition 0, 2 in partition 1)."""
    out = cli(broker, "topics", "create", "--topic", topic, "--partitions", "2", "--config", "retention.ms=-1")
    assert out.stdout == f"Created topic {topic} (2 partitions, replication factor 1).\n"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        for partition, seconds in RECORDS:
            producer.send(
                topic, partition=partition, value=b"v%d" % seconds, timestamp_ms=BASE_TS + seconds * 1000
            ).get(timeout=TIMEOUT)
    finally:
        producer.close()


def join_and_commit(broker: Broker, topic: str, group: str, offsets: dict[int, int]) -> KafkaConsumer:
    """A consumer in ``group`` that read all of ``topic`` and committed ``offsets``; still a member."""
    client = _admin(broker)
    try:
        # Fail at once (not after a poll timeout) on a broker without the group APIs.
        assert ApiKey.JoinGroup in client.api_versions(), "the broker does not support JoinGroup"
    finally:
        client.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        client_id="admin-cli-test",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    seen = 0
    deadline = time.monotonic() + TIMEOUT
    while seen < len(RECORDS):
        assert time.monotonic() < deadline, f"consumed only {seen} of {len(RECORDS)} records"
        seen += sum(len(batch) for batch in consumer.poll(timeout_ms=500).values())
    consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    return consumer


def idle_group(broker: Broker, topic: str, group: str, offsets: dict[int, int]) -> None:
    """``group`` with ``offsets`` committed on ``topic`` and no members (the consumer left)."""
    join_and_commit(broker, topic, group, offsets).close()


# -- topics -----------------------------------------------------------------------------------


def test_topics_create_list_describe_delete(broker: Broker, names: tuple[str, str]) -> None:
    topic, _ = names
    create_topic_with_records(broker, topic)

    rows = [line.split() for line in cli(broker, "topics", "list").stdout.splitlines()]
    assert rows[0] == ["TOPIC", "PARTITIONS"]
    assert [topic, "2"] in rows[1:]
    listed = cli_json(broker, "topics", "list")["topics"]
    assert {"topic": topic, "partitions": 2, "internal": False} in listed
    assert [t["topic"] for t in listed] == sorted(t["topic"] for t in listed)

    assert cli(broker, "topics", "describe", "--topic", topic).stdout == (
        "TOPIC         PARTITION  LEADER  REPLICAS  ISR  START-OFFSET  END-OFFSET\n"
        f"{topic}  0          1       1         1    0             3\n"
        f"{topic}  1          1       1         1    0             2\n"
    )
    assert cli_json(broker, "topics", "describe", "--topic", topic) == {
        "topics": [
            {
                "topic": topic,
                "internal": False,
                "partitions": [
                    {"partition": 0, "leader": 1, "replicas": [1], "isr": [1], "start_offset": 0, "end_offset": 3},
                    {"partition": 1, "leader": 1, "replicas": [1], "isr": [1], "start_offset": 0, "end_offset": 2},
                ],
            }
        ]
    }
    everything = cli_json(broker, "topics", "describe")["topics"]
    assert topic in [t["topic"] for t in everything]

    assert cli(broker, "topics", "delete", "--topic", topic).stdout == f"Deleted topic {topic}.\n"
    # Kafka deletes asynchronously: wait until its metadata no longer has the topic.
    deadline = time.monotonic() + TIMEOUT
    while topic in [t["topic"] for t in cli_json(broker, "topics", "list")["topics"]]:
        assert time.monotonic() < deadline, f"{topic} still listed after deletion"
        time.sleep(0.2)
    gone = cli(broker, "topics", "describe", "--topic", topic, rc=1)
    assert (gone.stdout, gone.stderr) == ("", f"outbox streams topics describe: unknown topic '{topic}'\n")


def test_topics_create_json_and_configs(broker: Broker, names: tuple[str, str]) -> None:
    topic, _ = names
    out = cli_json(
        broker, "topics", "create", "--topic", topic, "--partitions", "3",
        "--config", "retention.ms=86400000", "--config", "cleanup.policy=delete",
    )  # fmt: skip
    assert out == {
        "topic": topic,
        "partitions": 3,
        "replication_factor": 1,
        "configs": {"retention.ms": "86400000", "cleanup.policy": "delete"},
    }
    assert cli_json(broker, "topics", "delete", "--topic", topic) == {"deleted": [topic]}


def test_topic_errors_are_one_line_with_exit_code_1(broker: Broker, names: tuple[str, str]) -> None:
    topic, _ = names
    cli(broker, "topics", "create", "--topic", topic)
    exists = cli(broker, "topics", "create", "--topic", topic, rc=1)
    assert (exists.stdout, exists.stderr) == ("", f"outbox streams topics create: topic '{topic}' already exists\n")

    missing = cli(broker, "topics", "delete", "--topic", "no-such-topic-" + topic, rc=1)
    assert missing.stderr == f"outbox streams topics delete: unknown topic 'no-such-topic-{topic}'\n"
    # Nothing was deleted: the whole request is refused when one topic is unknown.
    both = cli(broker, "topics", "delete", "--topic", topic, "--topic", "no-such-topic-" + topic, rc=1)
    assert both.stderr == f"outbox streams topics delete: unknown topic 'no-such-topic-{topic}'\n"
    assert cli_json(broker, "topics", "describe", "--topic", topic)["topics"][0]["topic"] == topic

    bad_config = cli(broker, "topics", "create", "--topic", topic + "-x", "--config", "retention.ms=abc", rc=1)
    assert bad_config.stderr.startswith(f"outbox streams topics create: cannot create topic '{topic}-x': ")
    assert bad_config.stderr.endswith(" (INVALID_CONFIG)\n") and bad_config.stderr.count("\n") == 1

    bad_name = cli(broker, "topics", "create", "--topic", "bad name!", rc=1)
    assert bad_name.stderr.startswith("outbox streams topics create: cannot create topic 'bad name!': ")
    assert bad_name.stderr.endswith(" (INVALID_TOPIC)\n") and bad_name.stderr.count("\n") == 1


def test_unreachable_broker_and_usage_errors() -> None:
    port = free_port()
    for args in (["topics", "list"], ["groups", "describe", "--group", "g"]):
        down = cli(f"127.0.0.1:{port}", *args, "--timeout", "1", rc=1)
        assert down.stderr == (
            f"outbox streams {' '.join(args[:2])}: cannot reach a broker at 127.0.0.1:{port} (gave up after 1 s)\n"
        )
    usage = cli(None, "topics", "create", "--topic", "t", "--partitions", "0", rc=2)
    assert "argument --partitions: '0' must be at least 1" in usage.stderr
    usage = cli(None, "topics", "create", "--topic", "t", "--config", "retention.ms", rc=2)
    assert "argument --config: 'retention.ms' is not KEY=VALUE" in usage.stderr
    usage = cli(None, "groups", "reset-offsets", "--group", "g", "--all-topics", "--to-datetime", "yesterday", rc=2)
    assert "argument --to-datetime: 'yesterday' is not an ISO-8601 date-time" in usage.stderr
    usage = cli(None, "groups", "reset-offsets", "--group", "g", "--all-topics", rc=2)
    assert "one of the arguments --to-earliest --to-latest --to-datetime is required" in usage.stderr
    usage = cli(None, "groups", "reset-offsets", "--group", "g", "--to-latest", rc=2)
    assert "one of the arguments --topic --all-topics is required" in usage.stderr
    usage = cli(
        None, "groups", "reset-offsets", "--group", "g", "--all-topics", "--to-latest", "--dry-run", "--execute", rc=2
    )
    assert "argument --execute: not allowed with argument --dry-run" in usage.stderr


def test_console_script_takes_bootstrap_servers_from_env(broker: Broker, names: tuple[str, str]) -> None:
    topic, _ = names
    outbox = str(Path(sys.executable).parent / "outbox")
    env = {"OUTBOX_BOOTSTRAP_SERVERS": broker.bootstrap}
    _run([outbox, "streams", "topics", "create", "--topic", topic, "--partitions", "2"], 0, env)
    listed = json.loads(_run([outbox, "streams", "topics", "list", "--json"], 0, env).stdout)
    assert {"topic": topic, "partitions": 2, "internal": False} in listed["topics"]


# -- groups -----------------------------------------------------------------------------------


def test_groups_describe_shows_offsets_lag_and_members(broker: Broker, names: tuple[str, str]) -> None:
    topic, group = names
    create_topic_with_records(broker, topic)
    consumer = join_and_commit(broker, topic, group, {0: 1, 1: 2})
    try:
        doc = cli_json(broker, "groups", "describe", "--group", group)
        (described,) = doc["groups"]
        (member,) = described["members"]
        consumer_id, host = member["consumer_id"], member["host"]
        assert consumer_id.startswith("admin-cli-test-")
        assert host.lstrip("/") == "127.0.0.1"
        owner = {"consumer_id": consumer_id, "host": host, "client_id": "admin-cli-test"}
        assert described == {
            "group": group,
            "state": "Stable",
            "protocol_type": "consumer",
            "members": [
                {
                    **owner,
                    "assignment": [{"topic": topic, "partition": 0}, {"topic": topic, "partition": 1}],
                }
            ],
            "partitions": [
                {"topic": topic, "partition": 0, "current_offset": 1, "log_end_offset": 3, "lag": 2, **owner},
                {"topic": topic, "partition": 1, "current_offset": 2, "log_end_offset": 2, "lag": 0, **owner},
            ],
        }
        table = cli(broker, "groups", "describe", "--group", group)
        id_w, host_w = max(len(consumer_id), 11), max(len(host), 4)
        assert table.stdout == (
            f"GROUP         TOPIC         PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  "
            f"{'CONSUMER-ID'.ljust(id_w)}  {'HOST'.ljust(host_w)}  CLIENT-ID\n"
            f"{group}  {topic}  0          1               3               2    "
            f"{consumer_id.ljust(id_w)}  {host.ljust(host_w)}  admin-cli-test\n"
            f"{group}  {topic}  1          2               2               0    "
            f"{consumer_id.ljust(id_w)}  {host.ljust(host_w)}  admin-cli-test\n"
        )
        assert table.stderr == ""
        listed = cli_json(broker, "groups", "list")["groups"]
        assert {"group": group, "state": "Stable", "protocol_type": "consumer"} in listed
    finally:
        consumer.close()

    idle = cli(broker, "groups", "describe", "--group", group)
    assert idle.stdout == (
        "GROUP         TOPIC         PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID\n"
        f"{group}  {topic}  0          1               3               2    -            -     -\n"
        f"{group}  {topic}  1          2               2               0    -            -     -\n"
    )
    assert idle.stderr == f"Consumer group '{group}' has no active members.\n"
    assert cli_json(broker, "groups", "describe", "--group", group)["groups"][0]["state"] == "Empty"
    rows = [line.split() for line in cli(broker, "groups", "list").stdout.splitlines()]
    assert rows[0] == ["GROUP", "STATE"] and [group, "Empty"] in rows[1:]


def test_groups_describe_unknown_group(broker: Broker, names: tuple[str, str]) -> None:
    _, group = names
    out = cli(broker, "groups", "describe", "--group", group, rc=1)
    assert (out.stdout, out.stderr) == (
        "",
        f"outbox streams groups describe: consumer group '{group}' does not exist\n",
    )
    out = cli(broker, "groups", "reset-offsets", "--group", group, "--all-topics", "--to-earliest", rc=1)
    assert out.stderr == (
        f"outbox streams groups reset-offsets: group '{group}' has no committed offsets; name the topics with --topic\n"
    )


def test_reset_offsets_to_earliest_dry_run_then_execute(broker: Broker, names: tuple[str, str]) -> None:
    topic, group = names
    create_topic_with_records(broker, topic)
    idle_group(broker, topic, group, {0: 3, 1: 1})
    table = (
        "GROUP         TOPIC         PARTITION  CURRENT-OFFSET  NEW-OFFSET\n"
        f"{group}  {topic}  0          3               0\n"
        f"{group}  {topic}  1          1               0\n"
    )

    dry = cli(broker, "groups", "reset-offsets", "--group", group, "--all-topics", "--to-earliest")
    assert (dry.stdout, dry.stderr) == (table, "Dry run: nothing was committed; add --execute to apply.\n")
    explicit = cli(broker, "groups", "reset-offsets", "--group", group, "--topic", topic, "--to-earliest", "--dry-run")
    assert explicit.stdout == table
    assert committed(broker, group) == {(topic, 0): 3, (topic, 1): 1}

    done = cli(broker, "groups", "reset-offsets", "--group", group, "--all-topics", "--to-earliest", "--execute")
    assert (done.stdout, done.stderr) == (table, "")
    assert committed(broker, group) == {(topic, 0): 0, (topic, 1): 0}
    assert [r.split()[3:6] for r in cli(broker, "groups", "describe", "--group", group).stdout.splitlines()[1:]] == [
        ["0", "3", "3"],
        ["0", "2", "2"],
    ]


def test_reset_offsets_to_latest_to_datetime_and_single_partitions(broker: Broker, names: tuple[str, str]) -> None:
    topic, group = names
    create_topic_with_records(broker, topic)
    idle_group(broker, topic, group, {0: 0, 1: 0})

    # --topic TOPIC:PARTITION touches only that partition.
    out = cli_json(
        broker, "groups", "reset-offsets", "--group", group, "--topic", f"{topic}:1", "--to-latest", "--execute"
    )
    assert out == {
        "group": group,
        "executed": True,
        "partitions": [{"topic": topic, "partition": 1, "current_offset": 0, "new_offset": 2}],
    }
    assert committed(broker, group) == {(topic, 0): 0, (topic, 1): 2}

    # +12 s: the first records at or after it are offset 2 (+20 s) and offset 1 (+15 s).
    for moment in ("2023-11-14T22:13:32Z", "2023-11-14T23:13:32+01:00", "2023-11-14T22:13:32.000+00:00"):
        plan = cli_json(broker, "groups", "reset-offsets", "--group", group, "--all-topics", "--to-datetime", moment)
        assert plan["executed"] is False
        assert [(p["partition"], p["current_offset"], p["new_offset"]) for p in plan["partitions"]] == [
            (0, 0, 2),
            (1, 2, 1),
        ]
    cli(
        broker,
        "groups",
        "reset-offsets",
        "--group",
        group,
        "--all-topics",
        "--to-datetime",
        "2023-11-14T22:13:32Z",
        "--execute",
    )
    assert committed(broker, group) == {(topic, 0): 2, (topic, 1): 1}

    # Exactly a record's timestamp selects that record; after the last record: the log end offset.
    at = cli_json(
        broker, "groups", "reset-offsets", "--group", group, "--all-topics", "--to-datetime", "2023-11-14T22:13:30Z"
    )
    assert [p["new_offset"] for p in at["partitions"]] == [1, 1]
    late = cli_json(
        broker,
        "groups",
        "reset-offsets",
        "--group",
        group,
        "--topic",
        topic,
        "--to-datetime",
        "2030-01-01T00:00:00Z",
        "--execute",
    )
    assert [p["new_offset"] for p in late["partitions"]] == [3, 2]
    assert committed(broker, group) == {(topic, 0): 3, (topic, 1): 2}


def test_reset_offsets_of_a_new_group_creates_its_offsets(broker: Broker, names: tuple[str, str]) -> None:
    topic, group = names
    create_topic_with_records(broker, topic)
    out = cli(broker, "groups", "reset-offsets", "--group", group, "--topic", topic, "--to-latest", "--execute")
    assert out.stdout == (
        "GROUP         TOPIC         PARTITION  CURRENT-OFFSET  NEW-OFFSET\n"
        f"{group}  {topic}  0          -               3\n"
        f"{group}  {topic}  1          -               2\n"
    )
    assert committed(broker, group) == {(topic, 0): 3, (topic, 1): 2}
    unknown = cli(broker, "groups", "reset-offsets", "--group", group, "--topic", topic + "-x", "--to-latest", rc=1)
    assert unknown.stderr == f"outbox streams groups reset-offsets: unknown topic '{topic}-x'\n"
    no_part = cli(broker, "groups", "reset-offsets", "--group", group, "--topic", f"{topic}:7", "--to-latest", rc=1)
    assert no_part.stderr == (
        f"outbox streams groups reset-offsets: topic '{topic}' has 2 partition(s); there is no partition 7\n"
    )


def test_reset_offsets_refused_while_the_group_has_members(broker: Broker, names: tuple[str, str]) -> None:
    topic, group = names
    create_topic_with_records(broker, topic)
    consumer = join_and_commit(broker, topic, group, {0: 3, 1: 2})
    try:
        for mode in ("--execute", "--dry-run"):
            out = cli(broker, "groups", "reset-offsets", "--group", group, "--all-topics", "--to-earliest", mode, rc=1)
            assert (out.stdout, out.stderr) == (
                "",
                f"outbox streams groups reset-offsets: offsets can only be reset while group '{group}' is inactive, "
                "but it is Stable with 1 member(s); stop its consumers first\n",
            )
        assert committed(broker, group) == {(topic, 0): 3, (topic, 1): 2}
    finally:
        consumer.close()
    cli(broker, "groups", "reset-offsets", "--group", group, "--all-topics", "--to-earliest", "--execute")
    assert committed(broker, group) == {(topic, 0): 0, (topic, 1): 0}
