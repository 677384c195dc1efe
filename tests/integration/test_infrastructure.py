"""The shared fixtures work against the real servers (if these fail, every other test is suspect)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError

from tests.conftest import StoreFactory
from tests.support._proc import REPO_ROOT, free_port
from tests.support.kafka import (
    CONSOLE_CONSUMER,
    CONSOLE_PRODUCER,
    FAST_RESTART_PROPERTIES,
    TOPIC_COMMAND,
    KafkaBroker,
    run_java_source,
    run_kafka_tool,
)
from tests.support.postgres import PostgresServer

# -- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_answers_select_1(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        (name,) = conn.execute("select current_database()").fetchone() or ("",)
    assert name.startswith("test_")


def test_each_test_gets_an_empty_database(database_url: str, postgres: PostgresServer) -> None:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute("select count(*) from information_schema.tables where table_schema = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("create table leftover (i int)")
    with psycopg.connect(postgres.dsn) as conn:
        (name,) = conn.execute("select current_database()").fetchone() or ("",)
    assert name != database_url.rsplit("/", 1)[-1]


def test_managed_postgres_settings(private_postgres: PostgresServer) -> None:
    with psycopg.connect(private_postgres.dsn) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "select name, setting from pg_settings where name in "
                "('fsync', 'max_connections', 'listen_addresses', 'unix_socket_directories')"
            ).fetchall()
        )
        (user,) = conn.execute("select current_user").fetchone() or ("",)
    assert settings["fsync"] == "on"
    assert int(settings["max_connections"]) >= 200
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["unix_socket_directories"] == str(private_postgres.socket_dir)
    assert user == "postgres"
    # The unix socket in the temp dir works too (trust auth for local connections).
    with psycopg.connect(host=str(private_postgres.socket_dir), port=private_postgres.port, user="postgres") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize(
    ("mode", "log_line"),
    [
        ("fast", "received fast shutdown request"),
        ("immediate", "automatic recovery in progress"),
    ],
)
def test_postgres_restart_keeps_committed_data(private_postgres: PostgresServer, mode: str, log_line: str) -> None:
    dsn = private_postgres.create_database("chaos")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table t (i int primary key)")
        conn.execute("checkpoint")
        # Written after the checkpoint: after an immediate stop only WAL replay can bring it back.
        conn.execute("insert into t select generate_series(1, 1000)")
    doomed = psycopg.connect(dsn)
    doomed.execute("insert into t values (-1)")  # never committed
    port = private_postgres.port

    private_postgres.restart(mode)  # type: ignore[arg-type]

    assert private_postgres.port == port
    assert log_line in private_postgres.log_path.read_text()
    with pytest.raises(psycopg.OperationalError):
        doomed.execute("select 1")
    doomed.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*), min(i), max(i) from t").fetchone() == (1000, 1, 1000)


def test_postgres_dies_with_the_test_process(tmp_path: Path) -> None:
    """A test run killed with SIGKILL leaves no postmaster behind (PR_SET_PDEATHSIG)."""
    script = textwrap.dedent(
        """
        import sys, time
        from tests.support.postgres import PostgresServer
        server = PostgresServer(use_env=False).start()
        print(server.pid, server.dir, flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout is not None
        pid_text, temp_dir = child.stdout.readline().split()
        postmaster = int(pid_text)
        os.kill(postmaster, 0)  # it runs
        child.kill()
        child.wait(10)
        deadline = time.monotonic() + 15
        while _alive(postmaster):
            assert time.monotonic() < deadline, "the postmaster outlived the killed test process"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(10)
        subprocess.run(["rm", "-rf", locals().get("temp_dir", "/nonexistent")], check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by init) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


# -- Apache Kafka -----------------------------------------------------------------------------


def _topic() -> str:
    return f"infra-{uuid.uuid4().hex[:12]}"


def _consume(
    bootstrap: str, partitions: list[TopicPartition], count: int, timeout: float = 30.0
) -> list[tuple[int, bytes, bytes]]:
    """(offset, key, value) of the first ``count`` records of ``partitions`` (manual assignment)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        got: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend((r.offset, r.key, r.value) for r in records)
        return got
    finally:
        consumer.close()


def test_kafka_round_trip_with_kafka_python(kafka_broker: KafkaBroker) -> None:
    topic = _topic()
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        # CreateTopics is acknowledged before the broker's metadata cache has the topic (KRaft).
        admin.wait_for_topics([topic], timeout_ms=30_000)
        assert topic in admin.list_topics()
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    try:
        metas = [
            producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=2).get(timeout=30)
            for i in range(10)
        ]
    finally:
        producer.close()
    assert [m.offset for m in metas] == list(range(10))
    assert {m.partition for m in metas} == {2}

    got = _consume(kafka_broker.bootstrap, [TopicPartition(topic, 2)], 10)
    assert got == [(i, f"k{i}".encode(), f"v{i}".encode()) for i in range(10)]
    assert _consume(kafka_broker.bootstrap, [TopicPartition(topic, 0)], 1, timeout=2) == []


def test_kafka_console_tools(kafka_broker: KafkaBroker) -> None:
    topic = _topic()
    bootstrap = ["--bootstrap-server", kafka_broker.bootstrap]
    run_kafka_tool(
        TOPIC_COMMAND,
        [*bootstrap, "--create", "--topic", topic, "--partitions", "2", "--replication-factor", "1"],
        check=True,
    )
    described = run_kafka_tool(TOPIC_COMMAND, [*bootstrap, "--describe", "--topic", topic], check=True)
    assert "PartitionCount: 2" in described.stdout

    # Console producer -> kafka-python consumer.
    run_kafka_tool(
        CONSOLE_PRODUCER,
        [
            *bootstrap,
            "--topic",
            topic,
            "--reader-property",
            "parse.key=true",
            "--reader-property",
            "key.separator=:",
        ],
        input="a:1\nb:2\nc:3\n",
        check=True,
    )
    got = _consume(kafka_broker.bootstrap, [TopicPartition(topic, 0), TopicPartition(topic, 1)], 3)
    assert sorted((k, v) for _, k, v in got) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]

    # kafka-python producer -> console consumer.
    other = _topic()
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    try:
        for i in range(3):
            producer.send(other, key=f"x{i}".encode(), value=f"y{i}".encode()).get(timeout=30)
    finally:
        producer.close()
    consumed = run_kafka_tool(
        CONSOLE_CONSUMER,
        [
            *bootstrap,
            "--topic",
            other,
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "30000",
            "--formatter-property",
            "print.key=true",
            "--formatter-property",
            "key.separator=|",
        ],
        check=True,
    )
    assert consumed.stdout.splitlines() == ["x0|y0", "x1|y1", "x2|y2"]


def test_java_client_program(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = _topic()
    program = tmp_path / "Produce.java"
    program.write_text(
        textwrap.dedent(
            """
            import java.util.Properties;
            import org.apache.kafka.clients.producer.*;
            import org.apache.kafka.common.serialization.StringSerializer;

            public class Produce {
                public static void main(String[] args) throws Exception {
                    Properties p = new Properties();
                    p.put("bootstrap.servers", args[0]);
                    p.put("acks", "all");
                    try (var producer = new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
                        RecordMetadata m = producer.send(new ProducerRecord<>(args[1], "java-key", "java-value")).get();
                        System.out.println("offset=" + m.offset());
                    }
                }
            }
            """
        )
    )
    result = run_java_source(program, [kafka_broker.bootstrap, topic], check=True)
    assert "offset=0" in result.stdout
    assert _consume(kafka_broker.bootstrap, [TopicPartition(topic, 0)], 1) == [(0, b"java-key", b"java-value")]


@pytest.mark.slow
def test_broker_options_and_lifecycle() -> None:
    """auto_create_topics and server_properties reach the broker; cleanup removes everything."""
    props = {"num.partitions": "3", **FAST_RESTART_PROPERTIES}
    with KafkaBroker(auto_create_topics=False, server_properties=props) as broker:
        directory = broker.dir
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.create_topics([NewTopic("explicit", num_partitions=-1, replication_factor=-1)])
            admin.wait_for_topics(["explicit"], timeout_ms=30_000)
            partitions = admin.describe_topics(["explicit"])[0]["partitions"]
        finally:
            admin.close()
        assert len(partitions) == 3
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=3000)
        try:
            with pytest.raises(KafkaTimeoutError):
                producer.send("never-created", b"x").get(timeout=10)
        finally:
            producer.close(timeout=5)
        pid = broker.pid
        assert pid is not None
        broker.kill()
        assert not broker.is_running()
        broker.start()  # recovers from the same log dirs after a crash
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.wait_for_topics(["explicit"], timeout_ms=30_000)
        finally:
            admin.close()
    assert not directory.exists()
    assert not _alive(pid)


# -- the stream store -------------------------------------------------------------------------


def test_store_fixture_restarts_on_the_same_port_and_data(store_factory: StoreFactory) -> None:
    store = store_factory()
    port = store.port
    assert port != 0
    producer = KafkaProducer(bootstrap_servers=store.bootstrap, acks="all")
    try:
        producer.send("infra", key=b"k", value=b"before-restart").get(timeout=30)
    finally:
        producer.close()

    store.restart()  # SIGTERM, then the same --data-dir and --listen port
    assert store.port == port
    store.restart(kill=True)  # SIGKILL: an acknowledged record survives a crash
    assert store.port == port

    assert _consume(store.bootstrap, [TopicPartition("infra", 0)], 1) == [(0, b"k", b"before-restart")]
    assert store.stop() == 0
    assert "--- start #3:" in store.log_text()


def test_store_ready_file_names_the_bound_address_not_the_advertised_one(store_factory: StoreFactory) -> None:
    """Behind a proxy the store advertises the proxy's port; restart() must still bind its own."""
    advertised = free_port()
    store = store_factory(["--advertised-listener", f"127.0.0.1:{advertised}"])
    port = store.port
    assert port not in (0, advertised)
    assert store.ready_file.read_text() == f"127.0.0.1:{port}\n"
    store.restart(kill=True)
    assert store.port == port
    assert store.ready_file.read_text() == f"127.0.0.1:{port}\n"
    assert store.stop() == 0
