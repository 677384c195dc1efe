"""Consumer groups with real clients and Kafka's own tools, against Apache Kafka and the store.

Every test runs on both brokers (the ``broker`` fixture) and asserts the same exact observations:

* one group mixing members of four client libraries — confluent-kafka (librdkafka 2.x), kafka-python
  3.x, Kafka's Java client (``GroupMember.java``) and kcat (librdkafka 2.0) — all on the ``range``
  assignor, which every one of them supports under that protocol name: the partitions are shared
  without overlap or gaps, every record is consumed exactly once while no rebalance happens and at
  least once across rebalances, and the committed offsets end at the log end;
* Kafka's ``kafka-consumer-groups`` tool (ConsumerGroupCommand) lists, describes, resets and
  deletes a group;
* the admin clients of confluent-kafka and kafka-python list and describe groups and their offsets;
* raw requests (kafka-python's protocol classes over a socket, so generations and member ids are
  exactly what the test says) get the same error codes from both: MEMBER_ID_REQUIRED,
  ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, FENCED_INSTANCE_ID, ...

Timeouts below only keep a broken run from hanging; nothing asserts on time.
"""

from __future__ import annotations

import functools
import json
import shutil
import signal
import socket
import struct
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.protocol.admin.groups import (
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
)
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription
from kafka.protocol.metadata import FindCoordinatorRequest, FindCoordinatorResponse

from tests.compat._util import TIMEOUT, admin, create_topic, produce_all, producer
from tests.compat.conftest import Target
from tests.support.kafka import CONSUMER_GROUP_COMMAND, run_java_source, run_kafka_tool
from tests.support.waiting import wait_until as _wait_until

JAVA_DIR = Path(__file__).parent / "java"
KCAT = shutil.which("kcat") or "/usr/bin/kcat"

# Kafka's error codes the scenarios below expect.
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
FENCED_INSTANCE_ID = 82

SESSION_TIMEOUT_MS = 6000  # the smallest both brokers accept by default (group.min.session.timeout.ms)
# The rebalance timeout: a rebalance waits this long for every member to rejoin. The clients'
# 300 s default let one slow member (a JVM starting on a loaded CI box) stall Kafka's group
# past the test's patience; with 20 s a laggard is dropped and the group settles without it,
# then it rejoins.
MAX_POLL_INTERVAL_MS = 20_000


def unique_group(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


wait_until = functools.partial(_wait_until, timeout=2 * TIMEOUT, interval=0.2)

# -- what members saw ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    member: str
    partition: int
    offset: int
    value: str


@dataclass
class Member:
    """One group member of some client library; ``deliveries`` is what its application code saw."""

    name: str
    deliveries: list[Delivery] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    stopped: bool = False

    def got(self, partition: int, offset: int, value: bytes | str | None) -> None:
        text = value.decode() if isinstance(value, bytes) else (value or "")
        self.deliveries.append(Delivery(self.name, partition, offset, text))

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._stop()

    def _stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(TIMEOUT * 2)
            assert not self.thread.is_alive(), f"{self.name} did not stop"

    def check(self) -> None:
        assert not self.errors, f"{self.name} failed: {self.errors}"

    def alive(self) -> bool:
        return self.thread is None or self.thread.is_alive()


def all_alive(members: Sequence[Member]) -> None:
    """Fail at once (instead of at a wait's timeout) when a member died; its failure is the news."""
    for m in members:
        if not m.stopped and not m.alive():
            m.stop()
            m.check()
            raise AssertionError(f"{m.name} exited while the group was consuming")


def _thread(member: Member, target: Callable[[], None]) -> Member:
    def run() -> None:
        try:
            target()
        except Exception as exc:  # reported by Member.check()
            member.errors.append(repr(exc))

    member.thread = threading.Thread(target=run, name=member.name, daemon=True)
    member.thread.start()
    return member


def confluent_member(bootstrap: str, group: str, topic: str, client_id: str = "confluent-member") -> Member:
    """librdkafka via confluent-kafka: subscribe(), consume(), commit(asynchronous=False) per batch."""
    member = Member(client_id)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": client_id,
        "partition.assignment.strategy": "range",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
    })

    def run() -> None:
        consumer.subscribe([topic])
        try:
            while not member.stop_event.is_set():
                msgs = consumer.consume(100, 0.2)
                for m in msgs:
                    if m.error() is not None:
                        raise KafkaException(m.error())
                    member.got(m.partition(), m.offset(), m.value())
                if msgs:
                    try:
                        consumer.commit(asynchronous=False)
                    except KafkaException as exc:  # a rebalance under us: redelivered to the new owner
                        if exc.args[0].name() not in ("REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID"):
                            raise
        finally:
            consumer.close()

    return _thread(member, run)


def kafka_python_member(bootstrap: str, group: str, topic: str, client_id: str = "kafka-python-member") -> Member:
    """kafka-python 3: KafkaConsumer(group_id=...), poll(), commit() per batch."""
    member = Member(client_id)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=client_id,
        partition_assignment_strategy=[RangePartitionAssignor],
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=500,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
        request_timeout_ms=30_000,
    )
    # Subscribe only once this client's metadata knows the topic's partitions: as the group's
    # leader, kafka-python would otherwise compute an assignment without them ("No partition
    # metadata for topic") and, on Kafka right after CreateTopics, the group settled without them.
    wait_until(lambda: consumer.partitions_for_topic(topic), f"kafka-python's metadata for {topic}", timeout=TIMEOUT)
    consumer.subscribe([topic])

    def run() -> None:
        from kafka.errors import CommitFailedError, RebalanceInProgressError

        try:
            while not member.stop_event.is_set():
                batches = consumer.poll(timeout_ms=200)
                for records in batches.values():
                    for r in records:
                        member.got(r.partition, r.offset, r.value)
                if batches:
                    try:
                        consumer.commit()
                    except (CommitFailedError, RebalanceInProgressError):
                        pass  # a rebalance under us: redelivered to the new owner
        finally:
            consumer.close()

    return _thread(member, run)


class JavaMember(Member):
    """Kafka's Java consumer (GroupMember.java) in a JVM; it stops when its stop file appears."""

    def __init__(self, bootstrap: str, group: str, topic: str, stop_file: Path, client_id: str = "java-member") -> None:
        super().__init__(client_id)
        self.stop_file = stop_file
        self.events: list[dict[str, Any]] = []
        self.result: subprocess.CompletedProcess[str] | None = None

        def run() -> None:
            self.result = run_java_source(
                JAVA_DIR / "GroupMember.java", [bootstrap, group, topic, client_id, str(stop_file)], timeout=180
            )

        _thread(self, run)

    def _stop(self) -> None:
        self.stop_file.touch()
        super()._stop()
        assert self.result is not None
        assert self.result.returncode == 0, f"GroupMember.java failed:\n{self.result.stdout}\n{self.result.stderr}"
        self.events = [json.loads(line) for line in self.result.stdout.splitlines() if line.startswith("{")]
        for e in self.events:
            if e["event"] == "record":
                self.got(e["partition"], e["offset"], e["value"])
        assert self.events[-1]["event"] == "done", self.result.stdout


class KcatMember(Member):
    """kcat -G GROUP TOPIC: librdkafka 2.0's balanced consumer with auto-commit, as a subprocess."""

    def __init__(self, bootstrap: str, group: str, topic: str, client_id: str = "kcat-member") -> None:
        super().__init__(client_id)
        self.proc = subprocess.Popen(
            [
                KCAT, "-b", bootstrap, "-G", group, topic, "-q", "-u",
                "-f", "%p|%o|%s\\n",
                "-X", f"client.id={client_id}",
                "-X", "partition.assignment.strategy=range",
                "-X", f"session.timeout.ms={SESSION_TIMEOUT_MS}",
                "-X", "heartbeat.interval.ms=500",
                "-X", f"max.poll.interval.ms={MAX_POLL_INTERVAL_MS}",
                "-X", "auto.offset.reset=earliest",
                "-X", "auto.commit.interval.ms=100",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _stop(self) -> None:
        # SIGTERM: kcat leaves its loop and closes the consumer, committing what it printed.
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"kcat did not exit on SIGTERM:\n{err}") from None
        for line in out.splitlines():
            p, o, v = line.split("|", 2)
            self.got(int(p), int(o), v)
        self.stderr = err


# -- broker-side observations through confluent-kafka's AdminClient ---------------------------------


def committed(client: AdminClient, group: str, topic: str, partitions: int) -> dict[int, int]:
    """Committed offset of each partition (-1001 if none), through OffsetFetch."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    result = client.list_consumer_group_offsets([request], request_timeout=TIMEOUT)[group].result(TIMEOUT)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def wait_committed(
    client: AdminClient, group: str, topic: str, ends: dict[int, int], members: Sequence[Member] = ()
) -> None:
    last: dict[int, int] = {}

    def done() -> bool:
        all_alive(members)
        last.update(committed(client, group, topic, len(ends)))
        return last == ends

    wait_until(done, lambda: f"group {group} to commit the log end {ends}; committed {last}")


_COORDINATOR_STARTING = ("NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE")


def describe(client: AdminClient, group: str) -> Any:
    return client.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result(TIMEOUT)


def wait_stable(
    client: AdminClient, group: str, members: int, partitions: int, running: Sequence[Member] = ()
) -> Any:
    """Wait until the group is Stable with ``members`` members holding ``partitions`` partitions in all."""
    seen: list[Any] = [None]

    def stable() -> Any:
        all_alive(running)
        try:
            d = seen[0] = describe(client, group)
        except KafkaException as exc:  # a fresh Kafka loads its coordinator first (NOT_COORDINATOR)
            if exc.args[0].name() not in _COORDINATOR_STARTING:
                raise
            seen[0] = exc
            return None
        assigned = sum(len(m.assignment.topic_partitions) for m in d.members)
        return d if d.state == ConsumerGroupState.STABLE and len(d.members) == members and assigned == partitions else None

    return wait_until(
        stable, lambda: f"group {group} to be Stable with {members} members: {seen[0]}", timeout=4 * TIMEOUT
    )


def end_offsets(deliveries: list[Any], partitions: int) -> dict[int, int]:
    ends = dict.fromkeys(range(partitions), 0)
    for d in deliveries:
        assert d.error is None, d
        ends[d.partition] = max(ends[d.partition], d.offset + 1)
    return ends


# -- one group, four client libraries ------------------------------------------------------------------


def test_mixed_client_group_shares_partitions_exactly_once(broker: Target, topic: str, tmp_path: Path) -> None:
    partitions = 8
    create_topic(broker.bootstrap, topic, partitions=partitions)
    group = unique_group("mixed")
    client = admin(broker.bootstrap)
    members: list[Member] = []
    try:
        members.append(confluent_member(broker.bootstrap, group, topic))
        members.append(kafka_python_member(broker.bootstrap, group, topic))
        members.append(JavaMember(broker.bootstrap, group, topic, tmp_path / "java.stop"))
        members.append(KcatMember(broker.bootstrap, group, topic))
        by_name = {m.name: m for m in members}

        # Phase 1: the group settles before any record exists, so no rebalance happens while
        # records flow and every record must reach exactly one member exactly once.
        stable = wait_stable(client, group, members=4, partitions=partitions, running=members)
        assert stable.partition_assignor == "range"
        assert not stable.is_simple_consumer_group
        assert sorted(m.client_id for m in stable.members) == sorted(by_name)
        owner = {}
        for m in stable.members:
            for tp in m.assignment.topic_partitions:
                assert tp.topic == topic
                assert tp.partition not in owner, f"partition {tp.partition} assigned twice: {stable.members}"
                owner[tp.partition] = m.client_id
        assert sorted(owner) == list(range(partitions))
        # range: 8 partitions over 4 members, two contiguous partitions each
        assert sorted(sorted(p for p, o in owner.items() if o == name) for name in by_name) == [
            [0, 1], [2, 3], [4, 5], [6, 7]
        ]

        first = [{"partition": i % partitions, "value": f"one-{i}".encode()} for i in range(400)]
        ends = end_offsets(produce_all(producer(broker.bootstrap), topic, first), partitions)
        wait_committed(client, group, topic, ends, members)

        # Phase 2: two members leave (a closed librdkafka consumer, kcat on SIGTERM) between two
        # produced batches: the survivors take their partitions over; at least once from here on.
        second_a = [{"partition": i % partitions, "value": f"two-{i}".encode()} for i in range(200)]
        produce_all(producer(broker.bootstrap), topic, second_a)
        by_name["confluent-member"].stop()
        by_name["kcat-member"].stop()
        second_b = [{"partition": i % partitions, "value": f"two-{200 + i}".encode()} for i in range(200)]
        ends = end_offsets(produce_all(producer(broker.bootstrap), topic, second_b), partitions)
        wait_committed(client, group, topic, ends, members)
        after = wait_stable(client, group, members=2, partitions=partitions, running=members)
        assert sorted(m.client_id for m in after.members) == ["java-member", "kafka-python-member"]
    finally:
        for m in members:
            m.stop()
    for m in members:
        m.check()

    # Every member got records, each only from the partitions the group gave it in phase 1.
    phase1 = [d for m in members for d in m.deliveries if d.value.startswith("one-")]
    for m in members:
        mine = {d.partition for d in phase1 if d.member == m.name}
        assert mine == {p for p, o in owner.items() if o == m.name}, f"{m.name} consumed {mine}, owner map {owner}"
    # Exactly once: each produced record reached one member once, at the offset it was written to.
    counts = Counter((d.partition, d.offset, d.value) for d in phase1)
    assert sorted(counts) == sorted((i % partitions, i // partitions, f"one-{i}") for i in range(400))
    assert set(counts.values()) == {1}, [k for k, n in counts.items() if n > 1]
    # At least once across the rebalance, in offset order per partition and member, no gaps.
    phase2 = [d for m in members for d in m.deliveries if d.value.startswith("two-")]
    assert {(d.partition, d.value) for d in phase2} == {(i % partitions, f"two-{i}") for i in range(400)}
    for d in phase2:
        assert d.offset == 50 + int(d.value.split("-")[1]) // partitions, d
    # Batch 2b was produced after two members had left: the survivors consumed all of it.
    late = {d.value for d in phase2 if d.member in ("java-member", "kafka-python-member")}
    assert {f"two-{i}" for i in range(200, 400)} <= late


# -- raw requests: exact generations, member ids and error codes ----------------------------------------


class Raw:
    """One connection sending exactly the requests a test builds (non-flexible versions only).

    A broker answers the requests of one connection in order, so a JoinGroup or SyncGroup that
    waits for other members blocks its connection: such calls are split into ``send``/``recv``
    and other requests go over another connection meanwhile.
    """

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.correlation = 0
        self.pending: list[tuple[int, Any, int]] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, request: Any, response_cls: Any, version: int) -> None:
        self.correlation += 1
        request.with_header(correlation_id=self.correlation, client_id="raw-groups")
        data = bytes(request.encode(version=version, header=True))
        self.sock.sendall(struct.pack(">i", len(data)) + data)
        self.pending.append((self.correlation, response_cls, version))

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            buf += chunk
        return bytes(buf)

    def recv(self) -> Any:
        correlation, response_cls, version = self.pending.pop(0)
        (size,) = struct.unpack(">i", self._read(4))
        frame = self._read(size)
        assert struct.unpack_from(">i", frame)[0] == correlation
        return response_cls.decode(frame[4:], version=version)

    def call(self, request: Any, response_cls: Any, version: int) -> Any:
        self.send(request, response_cls, version)
        return self.recv()


@dataclass
class RawGroup:
    """Builders for the group requests of one group on one topic (the versions librdkafka uses)."""

    group: str
    topic: str

    def subscription(self) -> bytes:
        return bytes(
            ConsumerProtocolSubscription(
                topics=[self.topic], user_data=None, owned_partitions=[], generation_id=-1, rack_id=None
            ).encode(version=0)
        )

    def join(
        self,
        conn: Raw,
        member_id: str,
        *,
        instance: str | None = None,
        version: int = 5,
        session_ms: int = SESSION_TIMEOUT_MS,
        rebalance_ms: int = 10_000,
        protocol: str = "range",
        protocol_type: str = "consumer",
        group: str | None = None,
    ) -> None:
        """Send a JoinGroup (answered by ``conn.recv()``: it may wait for the other members)."""
        proto = JoinGroupRequest.JoinGroupRequestProtocol(name=protocol, metadata=self.subscription())
        conn.send(
            JoinGroupRequest(
                group_id=self.group if group is None else group,
                session_timeout_ms=session_ms,
                rebalance_timeout_ms=rebalance_ms,
                member_id=member_id,
                group_instance_id=instance,
                protocol_type=protocol_type,
                protocols=[proto],
            ),
            JoinGroupResponse,
            version,
        )

    def join_now(self, conn: Raw, member_id: str, **kwargs: Any) -> Any:
        self.join(conn, member_id, **kwargs)
        return conn.recv()

    def sync(self, conn: Raw, generation: int, member_id: str, assignments: dict[str, bytes] | None = None,
             instance: str | None = None) -> None:
        given = [
            SyncGroupRequest.SyncGroupRequestAssignment(member_id=m, assignment=a)
            for m, a in (assignments or {}).items()
        ]
        conn.send(
            SyncGroupRequest(group_id=self.group, generation_id=generation, member_id=member_id,
                             group_instance_id=instance, assignments=given),
            SyncGroupResponse,
            3,
        )

    def heartbeat(self, conn: Raw, generation: int, member_id: str, instance: str | None = None) -> int:
        request = HeartbeatRequest(group_id=self.group, generation_id=generation, member_id=member_id,
                                   group_instance_id=instance)
        return int(conn.call(request, HeartbeatResponse, 3).error_code)

    def commit(self, conn: Raw, generation: int, member_id: str, offset: int, *, partition: int = 0,
               instance: str | None = None, topic: str | None = None) -> int:
        topic_cls = OffsetCommitRequest.OffsetCommitRequestTopic
        part = topic_cls.OffsetCommitRequestPartition(
            partition_index=partition, committed_offset=offset, committed_leader_epoch=-1,
            committed_metadata=f"by {member_id or 'admin'}",
        )
        request = OffsetCommitRequest(
            group_id=self.group, generation_id_or_member_epoch=generation, member_id=member_id,
            group_instance_id=instance, topics=[topic_cls(name=topic or self.topic, partitions=[part])],
        )
        response = conn.call(request, OffsetCommitResponse, 7)
        return int(response.topics[0].partitions[0].error_code)

    def fetch(self, conn: Raw, partitions: int) -> dict[int, tuple[int, str | None]]:
        topic = OffsetFetchRequest.OffsetFetchRequestTopic(name=self.topic, partition_indexes=list(range(partitions)))
        response = conn.call(OffsetFetchRequest(group_id=self.group, topics=[topic], require_stable=False),
                             OffsetFetchResponse, 5)
        assert response.error_code == NONE
        return {p.partition_index: (p.committed_offset, p.metadata) for t in response.topics for p in t.partitions
                if p.error_code == NONE}

    def leave(self, conn: Raw, *members: tuple[str, str | None]) -> tuple[int, list[int]]:
        identities = [LeaveGroupRequest.MemberIdentity(member_id=m, group_instance_id=i) for m, i in members]
        response = conn.call(LeaveGroupRequest(group_id=self.group, members=identities), LeaveGroupResponse, 3)
        return int(response.error_code), [int(m.error_code) for m in response.members]

    def describe(self, conn: Raw, *groups: str) -> list[Any]:
        response = conn.call(DescribeGroupsRequest(groups=list(groups or [self.group]),
                                                   include_authorized_operations=False), DescribeGroupsResponse, 4)
        return list(response.groups)

    def wait_coordinator(self, conn: Raw) -> None:
        """FindCoordinator until this node coordinates the group (a fresh Kafka loads it first)."""
        def found() -> bool:
            response = conn.call(FindCoordinatorRequest(key=self.group, key_type=0), FindCoordinatorResponse, 2)
            # ... and has loaded its state (COORDINATOR_LOAD_IN_PROGRESS otherwise)
            return response.error_code == NONE and response.node_id == 1 and self.describe(conn)[0].error_code == NONE

        wait_until(found, f"a coordinator for {self.group}")

    def join_alone(self, conn: Raw, **kwargs: Any) -> tuple[str, int]:
        """The KIP-394 dance for a new member: MEMBER_ID_REQUIRED, then join with the given id."""
        first = self.join_now(conn, "", **kwargs)
        assert (first.error_code, first.generation_id) == (MEMBER_ID_REQUIRED, -1)
        assert first.member_id
        joined = self.join_now(conn, first.member_id, **kwargs)
        assert joined.error_code == NONE, joined
        return str(joined.member_id), int(joined.generation_id)


def assignment(*partitions: int, topic: str) -> bytes:
    tp = ConsumerProtocolAssignment.TopicPartition(topic=topic, partitions=list(partitions))
    return bytes(ConsumerProtocolAssignment(assigned_partitions=[tp], user_data=None).encode(version=0))


@pytest.fixture
def conns(broker: Target) -> Iterator[Callable[[], Raw]]:
    opened: list[Raw] = []

    def connect() -> Raw:
        opened.append(Raw(broker.bootstrap))
        return opened[-1]

    yield connect
    for conn in opened:
        conn.close()


def test_raw_generations_members_and_rebalance_errors(broker: Target, topic: str, conns: Callable[[], Raw]) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    g = RawGroup(unique_group("raw"), topic)
    a, side, b = conns(), conns(), conns()
    g.wait_coordinator(side)

    # A joins alone: generation 1, A leads and sees itself with its subscription.
    first = g.join_now(a, "")
    # JoinGroup v0-v6 have no nullable strings: Kafka sends "" where v7+ would send null (the
    # Java client fails on a null: "non-nullable field protocolName was serialized as null").
    assert (first.error_code, first.protocol_name, first.leader) == (MEMBER_ID_REQUIRED, "", "")
    member_a = first.member_id
    joined = g.join_now(a, member_a)
    assert (joined.error_code, joined.generation_id, joined.protocol_name) == (NONE, 1, "range")
    assert (joined.leader, joined.member_id) == (member_a, member_a)
    assert [(m.member_id, bytes(m.metadata)) for m in joined.members] == [(member_a, g.subscription())]

    # Between JoinGroup and the leader's SyncGroup (CompletingRebalance): heartbeats are fine,
    # commits are refused with REBALANCE_IN_PROGRESS.
    assert g.heartbeat(side, 1, member_a) == NONE
    assert g.commit(side, 1, member_a, 5) == REBALANCE_IN_PROGRESS
    g.sync(a, 1, member_a, {member_a: assignment(0, 1, topic=topic)})
    synced = a.recv()
    assert (synced.error_code, bytes(synced.assignment)) == (NONE, assignment(0, 1, topic=topic))

    # Stable: the current generation works, any other is ILLEGAL_GENERATION, a stranger is unknown.
    assert g.heartbeat(side, 1, member_a) == NONE
    assert g.heartbeat(side, 2, member_a) == ILLEGAL_GENERATION
    assert g.heartbeat(side, 0, member_a) == ILLEGAL_GENERATION
    assert g.heartbeat(side, 1, "no-such-member") == UNKNOWN_MEMBER_ID
    assert g.commit(side, 1, member_a, 10) == NONE
    assert g.commit(side, 2, member_a, 11) == ILLEGAL_GENERATION
    assert g.commit(side, 1, "no-such-member", 12) == UNKNOWN_MEMBER_ID
    assert g.commit(side, -1, "", 13) == UNKNOWN_MEMBER_ID  # admin-style commit while the group has members
    assert g.commit(side, -1, member_a, 14) == ILLEGAL_GENERATION
    assert g.fetch(side, 2) == {0: (10, f"by {member_a}"), 1: (-1, "")}
    rejoin_unknown = g.join_now(b, "no-such-member")
    assert (rejoin_unknown.error_code, rejoin_unknown.member_id) == (UNKNOWN_MEMBER_ID, "no-such-member")

    # B joins: the group prepares a rebalance and waits for A to rejoin.
    first_b = g.join_now(b, "")
    assert first_b.error_code == MEMBER_ID_REQUIRED
    member_b = first_b.member_id
    g.join(b, member_b)
    wait_until(lambda: g.heartbeat(side, 1, member_a) == REBALANCE_IN_PROGRESS, "the rebalance B's join starts")
    assert g.heartbeat(side, 0, member_a) == ILLEGAL_GENERATION
    assert g.commit(side, 1, member_a, 20) == NONE  # PreparingRebalance: the old generation may still commit
    g.sync(side, 1, member_a, {member_a: b"x"})
    assert side.recv().error_code == REBALANCE_IN_PROGRESS

    # A rejoins: generation 2 completes for both; A stays leader and alone sees the member list.
    g.join(a, member_a)
    joined_a, joined_b = a.recv(), b.recv()
    assert (joined_a.error_code, joined_b.error_code) == (NONE, NONE)
    assert (joined_a.generation_id, joined_b.generation_id) == (2, 2)
    assert joined_a.leader == joined_b.leader == member_a
    assert sorted(m.member_id for m in joined_a.members) == sorted([member_a, member_b])
    assert joined_b.members == []
    assert g.heartbeat(side, 2, member_a) == NONE
    assert g.heartbeat(side, 1, member_a) == ILLEGAL_GENERATION
    assert g.commit(side, 2, member_a, 30) == REBALANCE_IN_PROGRESS
    assert g.commit(side, 1, member_a, 31) == ILLEGAL_GENERATION

    # The follower's SyncGroup waits for the leader's; each gets what the leader gave it.
    g.sync(b, 2, member_b)
    g.sync(a, 2, member_a, {member_a: assignment(0, topic=topic), member_b: assignment(1, topic=topic)})
    synced_a, synced_b = a.recv(), b.recv()
    assert (synced_a.error_code, bytes(synced_a.assignment)) == (NONE, assignment(0, topic=topic))
    assert (synced_b.error_code, bytes(synced_b.assignment)) == (NONE, assignment(1, topic=topic))
    g.sync(b, 1, member_b)
    assert b.recv().error_code == ILLEGAL_GENERATION
    assert (g.heartbeat(side, 2, member_a), g.heartbeat(side, 2, member_b)) == (NONE, NONE)
    assert g.commit(side, 2, member_b, 40, partition=1) == NONE
    assert g.fetch(side, 2) == {0: (20, f"by {member_a}"), 1: (40, f"by {member_b}")}

    # LeaveGroup v3 answers per member; B leaving sends A into a rebalance; A leaving empties the group.
    assert g.leave(side, ("no-such-member", None)) == (NONE, [UNKNOWN_MEMBER_ID])
    assert g.leave(side, (member_b, None)) == (NONE, [NONE])
    assert g.heartbeat(side, 2, member_b) == UNKNOWN_MEMBER_ID
    assert g.heartbeat(side, 2, member_a) == REBALANCE_IN_PROGRESS
    assert g.leave(side, (member_a, None)) == (NONE, [NONE])
    [described] = g.describe(side)
    assert (described.error_code, described.group_state, described.protocol_type, described.members) == (
        NONE, "Empty", "consumer", []
    )
    # An empty group takes admin commits (generation -1) and refuses its old members'.
    assert g.commit(side, -1, "", 50) == NONE
    assert g.commit(side, 2, member_a, 51) == UNKNOWN_MEMBER_ID
    assert g.fetch(side, 2) == {0: (50, "by admin"), 1: (40, f"by {member_b}")}


def test_raw_static_member_restart_keeps_generation_and_fences_old_id(
    broker: Target, topic: str, conns: Callable[[], Raw], request: pytest.FixtureRequest
) -> None:
    """KIP-345: a static follower that comes back with a new member id takes its old place."""
    create_topic(broker.bootstrap, topic, partitions=2)
    g = RawGroup(unique_group("static"), topic)
    leader_conn, static_conn, side = conns(), conns(), conns()
    g.wait_coordinator(side)
    leader, _ = g.join_alone(leader_conn)  # generation 1: the dynamic leader alone
    g.sync(leader_conn, 1, leader, {leader: assignment(0, 1, topic=topic)})
    assert leader_conn.recv().error_code == NONE

    # The static member joins with no member id (no MEMBER_ID_REQUIRED round for static members).
    g.join(static_conn, "", instance="static-1")
    wait_until(lambda: g.heartbeat(side, 1, leader) == REBALANCE_IN_PROGRESS, "the rebalance the static join starts")
    g.join(leader_conn, leader)
    joined_leader, joined_static = leader_conn.recv(), static_conn.recv()
    assert (joined_leader.error_code, joined_static.error_code) == (NONE, NONE)
    assert joined_leader.generation_id == joined_static.generation_id == 2
    static_old = joined_static.member_id
    assert {(m.member_id, m.group_instance_id) for m in joined_leader.members} == {
        (leader, None), (static_old, "static-1")
    }
    g.sync(static_conn, 2, static_old, instance="static-1")
    g.sync(leader_conn, 2, leader, {leader: assignment(0, topic=topic), static_old: assignment(1, topic=topic)})
    assert leader_conn.recv().error_code == NONE
    assert bytes(static_conn.recv().assignment) == assignment(1, topic=topic)
    assert g.heartbeat(side, 2, static_old, instance="static-1") == NONE
    assert g.heartbeat(side, 2, static_old, instance="no-such-instance") == UNKNOWN_MEMBER_ID

    # It restarts: a new member id, the same generation, no rebalance, its old assignment back.
    restarted = g.join_now(conns(), "", instance="static-1")
    static_new = restarted.member_id
    assert (restarted.error_code, restarted.generation_id, restarted.leader) == (NONE, 2, leader)
    assert static_new != static_old
    assert restarted.members == []
    sync_conn = conns()
    g.sync(sync_conn, 2, static_new, instance="static-1")
    synced = sync_conn.recv()
    assert (synced.error_code, bytes(synced.assignment)) == (NONE, assignment(1, topic=topic))
    assert g.heartbeat(side, 2, leader) == NONE  # the leader saw no rebalance
    # The old incarnation is fenced everywhere.
    assert g.heartbeat(side, 2, static_old, instance="static-1") == FENCED_INSTANCE_ID
    assert g.commit(side, 2, static_old, 7, partition=1, instance="static-1") == FENCED_INSTANCE_ID
    assert g.leave(side, (static_old, "static-1")) == (NONE, [FENCED_INSTANCE_ID])
    assert g.commit(side, 2, static_new, 8, partition=1, instance="static-1") == NONE
    [described] = g.describe(side)
    assert described.group_state == "Stable"
    assert sorted((m.member_id, m.group_instance_id) for m in described.members) == sorted(
        [(leader, None), (static_new, "static-1")]
    )
    # Leaving by instance id (member id "" is allowed with v3+ when the instance id is given).
    assert g.leave(side, ("", "static-1")) == (NONE, [NONE])
    assert g.heartbeat(side, 2, leader) == REBALANCE_IN_PROGRESS


def test_raw_static_leader_restart_does_not_rebalance(
    broker: Target, topic: str, conns: Callable[[], Raw], request: pytest.FixtureRequest
) -> None:
    """KIP-345: a static *leader* coming back is answered as a follower of the current generation.

    Kafka returns the current generation with the old leader id (so the restarted leader does not
    compute an assignment a Stable group would never hand out) and no rebalance happens.
    """
    create_topic(broker.bootstrap, topic, partitions=2)
    g = RawGroup(unique_group("static-leader"), topic)
    first, side = conns(), conns()
    g.wait_coordinator(side)
    joined = g.join_now(first, "", instance="leader-1")
    assert (joined.error_code, joined.generation_id) == (NONE, 1)
    old = joined.member_id
    assert joined.leader == old
    g.sync(first, 1, old, {old: assignment(0, 1, topic=topic)}, instance="leader-1")
    assert first.recv().error_code == NONE

    again = g.join_now(conns(), "", instance="leader-1")
    assert again.error_code == NONE
    assert (again.generation_id, again.leader, again.members) == (1, old, [])
    new = again.member_id
    assert new != old
    sync_conn = conns()
    g.sync(sync_conn, 1, new, instance="leader-1")
    synced = sync_conn.recv()
    assert (synced.error_code, bytes(synced.assignment)) == (NONE, assignment(0, 1, topic=topic))
    assert g.heartbeat(side, 1, new, instance="leader-1") == NONE
    assert g.heartbeat(side, 1, old, instance="leader-1") == FENCED_INSTANCE_ID


def test_raw_member_that_misses_the_rebalance_is_removed(broker: Target, topic: str, conns: Callable[[], Raw]) -> None:
    """A member that does not rejoin within the rebalance timeout is dropped from the next generation."""
    create_topic(broker.bootstrap, topic, partitions=2)
    g = RawGroup(unique_group("laggard"), topic)
    a, b, c, side = conns(), conns(), conns(), conns()
    g.wait_coordinator(side)
    rebalance_ms = 2000
    member_a, _ = g.join_alone(a, rebalance_ms=rebalance_ms)
    g.sync(a, 1, member_a, {member_a: b""})
    assert a.recv().error_code == NONE
    first_b = g.join_now(b, "", rebalance_ms=rebalance_ms)
    member_b = first_b.member_id
    g.join(b, member_b, rebalance_ms=rebalance_ms)
    wait_until(lambda: g.heartbeat(side, 1, member_a) == REBALANCE_IN_PROGRESS, "the rebalance B's join starts")
    g.join(a, member_a, rebalance_ms=rebalance_ms)
    joined_a, joined_b = a.recv(), b.recv()
    assert joined_a.generation_id == joined_b.generation_id == 2
    g.sync(b, 2, member_b)
    g.sync(a, 2, member_a, {member_a: b"a", member_b: b"b"})
    assert (a.recv().error_code, b.recv().error_code) == (NONE, NONE)

    # C joins; B keeps heartbeating but never rejoins: the join completes without B after the
    # rebalance timeout, and B's next request finds itself removed.
    first_c = g.join_now(c, "", rebalance_ms=rebalance_ms)
    member_c = first_c.member_id
    g.join(c, member_c, rebalance_ms=rebalance_ms)
    wait_until(lambda: g.heartbeat(side, 2, member_b) == REBALANCE_IN_PROGRESS, "the rebalance C's join starts")
    g.join(a, member_a, rebalance_ms=rebalance_ms)
    joined_a, joined_c = a.recv(), c.recv()
    assert (joined_a.error_code, joined_c.error_code) == (NONE, NONE)
    assert joined_a.generation_id == joined_c.generation_id == 3
    assert sorted(m.member_id for m in joined_a.members + joined_c.members) == sorted([member_a, member_c])
    assert g.heartbeat(side, 2, member_b) == UNKNOWN_MEMBER_ID
    assert g.commit(side, 2, member_b, 1) == UNKNOWN_MEMBER_ID


def test_raw_join_validation_and_group_admin_errors(broker: Target, topic: str, conns: Callable[[], Raw]) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    g = RawGroup(unique_group("validate"), topic)
    conn, other = conns(), conns()
    g.wait_coordinator(conn)
    assert g.join_now(conn, "", group="").error_code == INVALID_GROUP_ID
    assert g.join_now(conn, "", session_ms=1000).error_code == INVALID_SESSION_TIMEOUT
    assert g.join_now(conn, "", session_ms=10**8).error_code == INVALID_SESSION_TIMEOUT
    assert g.join_now(conn, "", protocol_type="").error_code == INCONSISTENT_GROUP_PROTOCOL
    # JoinGroup v0-v3 predate KIP-394: the member id comes with the first answer.
    for version in (0, 1, 2, 3):
        vg = RawGroup(unique_group(f"v{version}"), topic)
        vg.wait_coordinator(other)
        joined = vg.join_now(other, "", version=version)
        assert (joined.error_code, joined.generation_id, joined.protocol_name) == (NONE, 1, "range")
        assert joined.member_id and joined.leader == joined.member_id
        assert vg.leave(other, (joined.member_id, None)) == (NONE, [NONE])

    member, generation = g.join_alone(conn)
    # A member whose protocols share nothing with the group's is refused.
    refused = g.join_now(other, "", protocol="roundrobin")
    assert refused.error_code == INCONSISTENT_GROUP_PROTOCOL
    g.sync(conn, generation, member, {member: assignment(0, 1, topic=topic)})
    assert conn.recv().error_code == NONE
    assert g.commit(other, generation, member, 3, topic=f"{topic}-missing") == UNKNOWN_TOPIC_OR_PARTITION
    assert g.commit(other, generation, member, 3, partition=7) == UNKNOWN_TOPIC_OR_PARTITION

    missing = unique_group("missing")
    described, unknown = g.describe(other, g.group, missing)
    assert (described.error_code, described.group_state, described.protocol_type, described.protocol_data) == (
        NONE, "Stable", "consumer", "range"
    )
    [m] = described.members
    assert (m.member_id, m.client_id, m.client_host) == (member, "raw-groups", "/127.0.0.1")
    assert bytes(m.member_assignment) == assignment(0, 1, topic=topic)
    assert (unknown.error_code, unknown.group_state, unknown.members) == (NONE, "Dead", [])
    listed = other.call(ListGroupsRequest(states_filter=[]), ListGroupsResponse, 2)
    assert listed.error_code == NONE
    assert [(x.group_id, x.protocol_type) for x in listed.groups if x.group_id == g.group] == [(g.group, "consumer")]
    deleted = other.call(DeleteGroupsRequest(groups_names=[g.group, missing]), DeleteGroupsResponse, 1)
    assert {r.group_id: r.error_code for r in deleted.results} == {g.group: NON_EMPTY_GROUP,
                                                                  missing: GROUP_ID_NOT_FOUND}
    assert g.commit(other, generation, member, 9) == NONE
    assert g.leave(other, (member, None)) == (NONE, [NONE])
    deleted = other.call(DeleteGroupsRequest(groups_names=[g.group]), DeleteGroupsResponse, 1)
    assert [(r.group_id, r.error_code) for r in deleted.results] == [(g.group, NONE)]
    [gone] = g.describe(other)
    assert (gone.error_code, gone.group_state) == (NONE, "Dead")
    assert g.fetch(other, 2) == {0: (-1, ""), 1: (-1, "")}


# -- Kafka's kafka-consumer-groups tool ----------------------------------------------------------------


def _table(stdout: str) -> list[dict[str, str]]:
    """Rows of a ConsumerGroupCommand table (whitespace-separated columns under a header line)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.startswith("GROUP "))
    names = lines[header].split()
    return [dict(zip(names, line.split(), strict=True)) for line in lines[header + 1:]]


def consumer_groups(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_kafka_tool(CONSUMER_GROUP_COMMAND, ["--bootstrap-server", bootstrap, *args], check=True)


def test_consumer_group_command_lists_describes_resets_and_deletes(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    group = unique_group("cgc")
    produce_all(producer(broker.bootstrap), topic, [{"partition": i % 2, "value": b"v"} for i in range(10)])
    member = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": group, "client.id": "cgc-member",
        "partition.assignment.strategy": "range", "enable.auto.commit": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
    })
    client = admin(broker.bootstrap)
    try:
        member.subscribe([topic])
        wait_until(lambda: member.poll(0.1) is None and member.assignment(), "the member's assignment")
        member.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 5)], asynchronous=False)
        wait_stable(client, group, members=1, partitions=2)

        assert group in consumer_groups(broker.bootstrap, "--list").stdout.splitlines()
        rows = _table(consumer_groups(broker.bootstrap, "--describe", "--group", group).stdout)
        assert [(r["TOPIC"], r["PARTITION"], r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"], r["HOST"],
                 r["CLIENT-ID"]) for r in rows] == [
            (topic, "0", "3", "5", "2", "/127.0.0.1", "cgc-member"),
            (topic, "1", "5", "5", "0", "/127.0.0.1", "cgc-member"),
        ]
        assert rows[0]["CONSUMER-ID"] == rows[1]["CONSUMER-ID"] == member.memberid()
        [state] = _table(consumer_groups(broker.bootstrap, "--describe", "--group", group, "--state").stdout)
        assert (state["ASSIGNMENT-STRATEGY"], state["STATE"], state["#MEMBERS"]) == ("range", "Stable", "1")
    finally:
        member.close()

    # Resetting needs an inactive group: the closed member left it.
    reset = consumer_groups(broker.bootstrap, "--reset-offsets", "--group", group, "--topic", topic,
                            "--to-earliest", "--execute")
    assert sorted((r["TOPIC"], r["PARTITION"], r["NEW-OFFSET"]) for r in _table(reset.stdout)) == [
        (topic, "0", "0"), (topic, "1", "0")
    ]
    assert committed(client, group, topic, 2) == {0: 0, 1: 0}
    described = consumer_groups(broker.bootstrap, "--describe", "--group", group)
    assert f"Consumer group '{group}' has no active members." in described.stdout + described.stderr
    assert [(r["PARTITION"], r["CURRENT-OFFSET"], r["LAG"], r["CONSUMER-ID"]) for r in _table(described.stdout)] == [
        ("0", "0", "5", "-"), ("1", "0", "5", "-")
    ]

    deleted = consumer_groups(broker.bootstrap, "--delete", "--group", group)
    assert f"Deletion of requested consumer groups ('{group}') was successful." in deleted.stdout
    assert group not in consumer_groups(broker.bootstrap, "--list").stdout.splitlines()
    assert committed(client, group, topic, 2) == {0: -1001, 1: -1001}


# -- admin clients -------------------------------------------------------------------------------------


def test_admin_clients_list_and_describe_groups_and_offsets(broker: Target, topic: str) -> None:
    partitions = 4
    create_topic(broker.bootstrap, topic, partitions=partitions)
    active, idle = unique_group("admin-active"), unique_group("admin-idle")
    client = admin(broker.bootstrap)
    produce_all(producer(broker.bootstrap), topic, [{"partition": i % partitions, "value": b"v"} for i in range(20)])
    # The idle group only ever had offsets, committed by the admin client (OffsetCommit, generation -1).
    request = ConsumerGroupTopicPartitions(idle, [TopicPartition(topic, 0, 2), TopicPartition(topic, 3, 4)])
    altered = client.alter_consumer_group_offsets([request], request_timeout=TIMEOUT)[idle].result(TIMEOUT)
    assert sorted((tp.partition, tp.offset, tp.error) for tp in altered.topic_partitions) == [
        (0, 2, None), (3, 4, None)
    ]
    members = [
        confluent_member(broker.bootstrap, active, topic, "admin-confluent"),
        kafka_python_member(broker.bootstrap, active, topic, "admin-kafka-python"),
    ]
    kp_admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30_000)
    try:
        wait_stable(client, active, members=2, partitions=partitions, running=members)
        wait_committed(client, active, topic, dict.fromkeys(range(partitions), 5), members)

        # confluent-kafka (librdkafka) AdminClient
        listed = client.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
        assert not listed.errors
        assert {active, idle} <= {g.group_id for g in listed.valid}
        d = describe(client, active)
        assert (d.group_id, d.state, d.partition_assignor, d.is_simple_consumer_group) == (
            active, ConsumerGroupState.STABLE, "range", False
        )
        assert d.coordinator.id == 1
        seen = sorted((m.client_id, m.host, sorted(tp.partition for tp in m.assignment.topic_partitions))
                      for m in d.members)
        # range over members sorted by member id, and member ids start with the client id
        assert seen == [("admin-confluent", "/127.0.0.1", [0, 1]), ("admin-kafka-python", "/127.0.0.1", [2, 3])], (
            seen, [m.errors for m in members]
        )
        empty = describe(client, idle)
        assert (empty.state, empty.members, empty.partition_assignor) == (ConsumerGroupState.EMPTY, [], "")
        assert committed(client, active, topic, partitions) == dict.fromkeys(range(partitions), 5)
        assert committed(client, idle, topic, partitions) == {0: 2, 1: -1001, 2: -1001, 3: 4}

        # kafka-python 3 KafkaAdminClient
        groups = {g["group_id"]: g for g in kp_admin.list_groups()}
        assert (groups[active]["protocol_type"], groups[idle]["protocol_type"]) == ("consumer", "")
        described = kp_admin.describe_groups([active, idle])
        a, i = described[active], described[idle]
        assert (a["error"], a["group_state"], a["protocol_type"], a["protocol_data"]) == (
            None, "Stable", "consumer", "range"
        )
        by_client = {m["client_id"]: m for m in a["members"]}
        assert sorted(by_client) == ["admin-confluent", "admin-kafka-python"]
        owned = sorted(
            p for m in by_client.values() for tp in m["member_assignment"]["assigned_partitions"]
            for p in tp["partitions"]
        )
        assert owned == list(range(partitions))
        assert (i["error"], i["group_state"], i["members"]) == (None, "Empty", [])
        offsets = kp_admin.list_group_offsets({active: None, idle: None})
        assert {tp.partition: om.offset for tp, om in offsets[active].items() if tp.topic == topic} == dict.fromkeys(
            range(partitions), 5
        )
        assert {tp.partition: om.offset for tp, om in offsets[idle].items()} == {0: 2, 3: 4}
        only = kp_admin.list_group_offsets({idle: [KTopicPartition(topic, 3)]})
        assert {tp.partition: om.offset for tp, om in only[idle].items()} == {3: 4}
    finally:
        kp_admin.close()
        for m in members:
            m.stop()
    for m in members:
        m.check()


def test_confluent_list_consumer_groups_reports_states(
    broker: Target, topic: str, request: pytest.FixtureRequest
) -> None:
    """librdkafka's list_consumer_groups gets group states from ListGroups v4+ (KIP-518) only."""
    create_topic(broker.bootstrap, topic, partitions=2)
    active, idle = unique_group("list-active"), unique_group("list-idle")
    client = admin(broker.bootstrap)
    offsets = ConsumerGroupTopicPartitions(idle, [TopicPartition(topic, 0, 1)])
    client.alter_consumer_group_offsets([offsets], request_timeout=TIMEOUT)[idle].result(TIMEOUT)
    member = confluent_member(broker.bootstrap, active, topic, "list-member")
    try:
        wait_stable(client, active, members=1, partitions=2)
        listed = client.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
        states = {g.group_id: g.state for g in listed.valid}
        assert (states[active], states[idle]) == (ConsumerGroupState.STABLE, ConsumerGroupState.EMPTY)
        only_stable = client.list_consumer_groups(
            request_timeout=TIMEOUT, states={ConsumerGroupState.STABLE}
        ).result(TIMEOUT)
        assert active in {g.group_id for g in only_stable.valid}
        assert idle not in {g.group_id for g in only_stable.valid}
    finally:
        member.stop()
    member.check()
