"""A real Apache Kafka (KRaft, single node) for scale-out and differential tests.

The jars come from Maven Central through the machine's ``mvn`` (no tarball downloads: Maven is the
only way out of this network), resolved once into a cache dir shared by all test runs. The broker
runs as a child ``java`` process on free loopback ports with its data in a temp dir.

Run ``python -m tests.support.kafka fetch`` to resolve the jars ahead of a test run (CI does, so
the download shows on the console and does not count against a test's timeout).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from kafka import KafkaAdminClient

from tests.support._proc import (
    ManagedServer,
    ProcessHandle,
    free_port,
    log_tail,
    popen,
    register_for_cleanup,
    run,
    terminate,
)

__all__ = [
    "CONSOLE_CONSUMER",
    "CONSOLE_PRODUCER",
    "CONSUMER_GROUP_COMMAND",
    "FAST_RESTART_PROPERTIES",
    "KAFKA_VERSION",
    "STORAGE_TOOL",
    "TOPIC_COMMAND",
    "KafkaBroker",
    "KafkaError",
    "cache_dir",
    "java_classpath",
    "kafka_jars",
    "kafka_jars_cached",
    "run_java_source",
    "run_kafka_tool",
]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.2.0"
SCALA_VERSION = "2.13"
_LOG4J_VERSION = "2.24.3"

# Main classes of Kafka's command line tools in the 4.x jars (kafka-tools / kafka_2.13).
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand"
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
STORAGE_TOOL = "kafka.tools.StorageTool"
_BROKER_MAIN = "kafka.Kafka"

_MARKER = ".complete"

FAST_RESTART_PROPERTIES: dict[str, str] = {
    "broker.session.timeout.ms": "4000",
    "broker.heartbeat.interval.ms": "500",
}


class KafkaError(RuntimeError):
    """Kafka could not be resolved, started or run; the message carries the relevant log."""


def cache_dir(version: str = KAFKA_VERSION) -> Path:
    """``$OUTBOX_CACHE_DIR/kafka-<version>`` or ``~/.cache/outbox-streams/kafka-<version>``."""
    root = os.environ.get("OUTBOX_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "outbox-streams"
    return base / f"kafka-{version}"


_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by tests/support/kafka.py: resolves Apache Kafka's jars for the test suite. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>outbox-streams.tests</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId><version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-clients</artifactId><version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

# Kafka's own distribution logs through slf4j 1.7 (kafka-clients pins slf4j-api 1.7.36) into log4j 2,
# so the binding is log4j-slf4j-impl, not the slf4j2 one (which would fall back to a no-op logger).
# Log4j 2 in its built-in properties format (YAML would need jackson-dataformat-yaml on the path).
_BROKER_LOG4J = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.zk.name = org.apache.zookeeper
logger.zk.level = WARN
"""

_TOOLS_LOG4J = """\
status = warn
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
"""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaError(
            f"{tool!r} is not on PATH: the Kafka tests need Java 17+ and Maven "
            "(Debian: apt-get install openjdk-17-jdk-headless maven)"
        )
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def kafka_jars_cached(version: str = KAFKA_VERSION) -> bool:
    """True if :func:`kafka_jars` will return at once (no Maven run)."""
    home = cache_dir(version)
    return (home / _MARKER).exists() and (home / "libs").is_dir()


def kafka_jars(version: str = KAFKA_VERSION) -> Path:
    """Return the directory holding Kafka's jars, resolving them with Maven on first use.

    Safe against concurrent first use (an exclusive file lock) and against an earlier download
    that was interrupted (the jars are copied to a scratch dir, moved into place, and a marker
    file is written last; without the marker the scratch and libs dirs are redone).
    """
    home = cache_dir(version)
    libs = home / "libs"
    if kafka_jars_cached(version):
        return libs
    mvn = _require("mvn")
    _require("java")
    with _file_lock(home.parent / f"kafka-{version}.lock"):
        if kafka_jars_cached(version):
            return libs  # another process finished it while we waited
        home.mkdir(parents=True, exist_ok=True)
        partial = home / "libs.partial"
        for stale in (partial, libs):
            if stale.exists():
                shutil.rmtree(stale)
        pom = home / "pom.xml"
        _write_atomic(pom, _POM.format(version=version, scala=SCALA_VERSION, log4j=_LOG4J_VERSION))
        mvn_log = home / "mvn.log"
        cmd = [
            mvn,
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            "-DincludeScope=runtime",
        ]
        logger.info("resolving Apache Kafka %s jars with Maven into %s (first use; log: %s)", version, libs, mvn_log)
        started = time.monotonic()
        _run_maven(cmd, mvn_log, home)
        jars = sorted(partial.glob("*.jar"))
        expected = f"kafka_{SCALA_VERSION}-{version}.jar"
        if not any(j.name == expected for j in jars):
            raise KafkaError(f"Maven finished but {expected} is missing in {partial}; see {mvn_log}")
        os.replace(partial, libs)
        _write_atomic(home / "log4j2-broker.properties", _BROKER_LOG4J)
        _write_atomic(home / "log4j2-tools.properties", _TOOLS_LOG4J)
        _write_atomic(home / _MARKER, "\n".join(j.name for j in jars) + "\n")
        logger.info("resolved %d Kafka jars in %.1f s", len(jars), time.monotonic() - started)
    return libs


def _run_maven(cmd: list[str], log_path: Path, cwd: Path) -> None:
    """Run Maven, streaming its download lines to the log so a slow first download is visible."""
    downloaded = 0
    last_report = time.monotonic()
    with (
        log_path.open("w") as log,
        popen(
            cmd,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if "Downloaded from" in line:
                downloaded += 1
                now = time.monotonic()
                if now - last_report >= 5.0:
                    artifact = line.split(": ", 1)[-1].split(" ")[0].rsplit("/", 1)[-1]
                    logger.info("maven: %d files downloaded so far (latest %s)", downloaded, artifact)
                    last_report = now
            elif line.startswith("[ERROR]"):
                logger.warning("maven: %s", line.rstrip())
        code = proc.wait()
    if code != 0:
        raise KafkaError(f"Maven failed with exit code {code}: {' '.join(cmd)}\n{log_tail(log_path)}")
    logger.info("maven: %d files downloaded", downloaded)


def java_classpath(version: str = KAFKA_VERSION) -> str:
    """A ``-cp`` value with every Kafka jar (the JVM expands ``dir/*``)."""
    return f"{kafka_jars(version)}/*"


def _java() -> str:
    return _require("java")


def run_kafka_tool(
    main_class: str,
    args: Sequence[str],
    timeout: float = 120.0,
    *,
    input: str | None = None,
    version: str = KAFKA_VERSION,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's command line tools (e.g. :data:`TOPIC_COMMAND`) from the cached jars."""
    kafka_jars(version)
    cmd = [
        _java(),
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",
        f"-Dlog4j2.configurationFile={cache_dir(version) / 'log4j2-tools.properties'}",
        "-cp",
        java_classpath(version),
        main_class,
        *args,
    ]
    result = run(
        cmd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise KafkaError(
            f"{main_class} exited with {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def run_java_source(
    path: Path,
    args: Sequence[str] = (),
    timeout: float = 180.0,
    *,
    input: str | None = None,
    version: str = KAFKA_VERSION,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a single-file Java program (``java -cp 'libs/*' Program.java``) against Kafka's jars."""
    kafka_jars(version)
    cmd = [
        _java(),
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={cache_dir(version) / 'log4j2-tools.properties'}",
        "-cp",
        java_classpath(version),
        str(path),
        *args,
    ]
    result = run(
        cmd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise KafkaError(
            f"{path.name} exited with {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def _cluster_id() -> str:
    """A Kafka ``Uuid`` string: URL-safe base64 of 16 random bytes, never starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _api_versions_ok(host: str, port: int, timeout: float = 2.0) -> bool:
    """Send a raw ApiVersions v0 request; True if the broker answers it without error."""
    client_id = b"outbox-tests"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            payload = _recv_exact(sock, size)
    except OSError:
        return False
    correlation_id, error_code = struct.unpack(">ih", payload[:6])
    return bool(correlation_id == 7 and error_code == 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks += chunk
    return bytes(chunks)


class KafkaBroker(ProcessHandle, ManagedServer):
    """A single-node KRaft Apache Kafka (broker and controller in one JVM) on loopback.

    ``auto_create_topics`` sets ``auto.create.topics.enable``; ``server_properties`` adds or
    overrides any ``server.properties`` entry. The broker logs to ``log_path``, shown on failure.

    After ``kill()``, ``start()`` takes about ``broker.session.timeout.ms`` (9 s) longer: the
    controller refuses the new registration until the dead broker's session expires. Crash tests
    may lower it (:data:`FAST_RESTART_PROPERTIES`); the shared broker keeps the default, so a
    busy machine cannot fence it.
    """

    def __init__(
        self,
        *,
        auto_create_topics: bool = True,
        server_properties: Mapping[str, str] | None = None,
        heap: str = "512m",
        version: str = KAFKA_VERSION,
        base_dir: Path | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.version = version
        self.auto_create_topics = auto_create_topics
        self.extra_properties = dict(server_properties or {})
        self.heap = heap
        self.start_timeout = start_timeout
        self._base_dir = base_dir
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.controller_port = 0
        self.cluster_id = _cluster_id()

    # -- properties -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the PLAINTEXT listener."""
        if not self.port:
            raise KafkaError("the broker is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def dir(self) -> Path:
        """The broker's temp dir: ``server.properties``, ``data/``, ``kafka.log``."""
        if self._tmp is None:
            raise KafkaError("the broker is not started")
        return self._tmp

    @property
    def log_path(self) -> Path:
        return self.dir / "kafka.log"


    # -- lifecycle --------------------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true" if self.auto_create_topics else "false",
        }
        props.update(self.extra_properties)
        return props

    def start(self) -> KafkaBroker:
        """Format the storage, start the JVM and wait until the broker serves requests."""
        if self.is_running():
            raise KafkaError("the broker is already running")
        libs = kafka_jars(self.version)
        java = _java()
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="outbox-kafka-", dir=self._base_dir))
            self.port = free_port()
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
            config = self.dir / "server.properties"
            config.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
            self._format(java, libs, config)
        config = self.dir / "server.properties"
        cmd = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={cache_dir(self.version) / 'log4j2-broker.properties'}",
            f"-Dkafka.logs.dir={self.dir}",
            "-cp",
            f"{libs}/*",
            _BROKER_MAIN,
            str(config),
        ]
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        register_for_cleanup(self)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        logger.info(
            "Kafka %s broker ready on %s in %.1f s (log: %s)",
            self.version,
            self.bootstrap,
            time.monotonic() - started,
            self.log_path,
        )
        return self

    def _format(self, java: str, libs: Path, config: Path) -> None:
        cmd = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={cache_dir(self.version) / 'log4j2-tools.properties'}",
            "-cp",
            f"{libs}/*",
            STORAGE_TOOL,
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(config),
        ]
        result = run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        with self.log_path.open("a") as log:
            log.write(f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            raise KafkaError(
                f"formatting the Kafka storage failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def _wait_ready(self) -> None:
        """Wait until the broker answers ApiVersions and its metadata lists itself as a broker."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise KafkaError(
                    f"the Kafka broker exited with {self._proc.returncode} during start-up; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if _api_versions_ok("127.0.0.1", self.port) and self._metadata_has_broker():
                return
            if time.monotonic() > deadline:
                raise KafkaError(
                    f"the Kafka broker did not become ready within {self.start_timeout:.0f} s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def _metadata_has_broker(self) -> bool:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=5000, client_id="outbox-tests-ready"
            )
        except Exception:
            return False
        try:
            cluster = admin.describe_cluster()
            brokers = cluster.get("brokers")
            return isinstance(brokers, list) and len(brokers) > 0
        except Exception:
            return False
        finally:
            admin.close()

    def stop(self, timeout: float = 30.0) -> int | None:
        """Shut the broker down cleanly (SIGTERM), SIGKILL after ``timeout``; return its exit code."""
        proc = self._proc
        if proc is None:
            return None
        code = terminate(proc, signal.SIGTERM, timeout)
        if code is None:
            logger.warning("Kafka broker did not stop within %.0f s; killing it", timeout)
            code = terminate(proc, signal.SIGKILL, 10.0)
        self._proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the broker (a crash); ``start()`` again recovers from the same log dirs."""
        proc = self._proc
        if proc is not None:
            terminate(proc, signal.SIGKILL, 10.0)
            self._proc = None

    def cleanup(self) -> None:
        """Stop the broker and delete its temp dir."""
        self.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self.port = 0

    def __repr__(self) -> str:
        return f"<KafkaBroker {self.version} port={self.port} running={self.is_running()}>"


def _main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if list(argv) == ["fetch"]:
        started = time.monotonic()
        libs = kafka_jars()
        logger.info("Kafka %s jars in %s (%.1f s)", KAFKA_VERSION, libs, time.monotonic() - started)
        return 0
    print("usage: python -m tests.support.kafka fetch", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
