"""A three-node Apache Kafka cluster (KRaft) on loopback, for fault campaigns against a real engine.

Every node is a combined controller+broker JVM (``process.roles=broker,controller``) with its own
directory (``node-N/``: ``server.properties``, ``data/``, ``kafka.log``) and its own two free ports;
the three form a static KRaft quorum (``controller.quorum.voters``), so killing any one node, the
active controller included, leaves a majority. Topics default to replication factor 3 and
``min.insync.replicas`` 2: an ``acks=all`` write is on at least two nodes before it is acknowledged,
and unclean leader election stays off.

Each node has a client listener (``PLAINTEXT``, :attr:`KafkaNode.port`) and a second one the brokers
replicate over and this module's own metadata requests use (``INTERNAL``). Setting
:attr:`KafkaNode.advertised` before :meth:`KafkaCluster.start` makes the node advertise another
address to clients (a fault proxy in front of its client port) while replication and the test's
metadata checks bypass it: a client's network faults are then not also the cluster's.

Nodes are killed (-9), stopped (SIGTERM: controlled shutdown), paused (SIGSTOP) and restarted; :meth:`KafkaCluster.partitions` asks the cluster's metadata who leads each partition (and
which replicas are in sync) so a campaign can aim at the leader. The jars and ``java`` come from
:mod:`tests.support.kafka` (Maven Central, cached).

``python -m tests.support.kafka_cluster`` starts a cluster, prints its bootstrap and waits for Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic

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
from tests.support.kafka import (
    FAST_RESTART_PROPERTIES,
    KAFKA_VERSION,
    STORAGE_TOOL,
    KafkaError,
    _api_versions_ok,
    _cluster_id,
    _java,
    cache_dir,
    kafka_jars,
)

__all__ = ["KafkaCluster", "KafkaNode", "PartitionState"]

logger = logging.getLogger(__name__)

_BROKER_MAIN = "kafka.Kafka"


@dataclass(frozen=True)
class PartitionState:
    """One partition as the cluster's metadata describes it (node ids; leader -1 when none)."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class KafkaNode(ProcessHandle):
    """One controller+broker JVM of a :class:`KafkaCluster`; restartable on the same dir and ports."""

    def __init__(self, cluster: KafkaCluster, node_id: int, directory: Path) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.name = f"kafka-{node_id}"
        self.dir = directory
        self.port = free_port()
        self.internal_port = free_port()
        self.controller_port = free_port()
        self.advertised: str | None = None  # host:port clients are told to use (default: the client port)
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.paused = False

    @property
    def bootstrap(self) -> str:
        """The address clients use: :attr:`advertised` if set, else the client port."""
        return self.advertised or f"127.0.0.1:{self.port}"

    @property
    def internal_bootstrap(self) -> str:
        """The inter-broker listener, for the cluster's own metadata checks (never proxied)."""
        return f"127.0.0.1:{self.internal_port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "kafka.log"

    @property
    def config_path(self) -> Path:
        return self.dir / "server.properties"

    def properties(self) -> dict[str, str]:
        c = self.cluster
        rf = str(c.replication_factor)
        isr = str(c.min_insync_replicas)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": c.voters,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},INTERNAL://127.0.0.1:{self.internal_port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap},INTERNAL://{self.internal_bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            # A paused follower leaves the ISR after 5 s instead of 30 s (acks=all waits for the ISR).
            "replica.lag.time.max.ms": "5000",
            **FAST_RESTART_PROPERTIES,
        }
        props.update(c.extra_properties)
        return props

    def _format(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        c = self.cluster
        cmd = [
            _java(), "-Xmx256m", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={cache_dir(c.version) / 'log4j2-tools.properties'}",
            "-cp", f"{kafka_jars(c.version)}/*", STORAGE_TOOL, "format", "-t", c.cluster_id, "-c", str(self.config_path),
        ]  # fmt: skip
        result = run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        with self.log_path.open("a") as log:
            log.write(f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            raise KafkaError(f"formatting {self.name} failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def spawn(self) -> None:
        """Start the JVM without waiting (the cluster starts all nodes before any can be ready)."""
        if self.is_running():
            raise KafkaError(f"{self.name} is already running")
        c = self.cluster
        cmd = [
            _java(), f"-Xmx{c.heap}", f"-Xms{c.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={cache_dir(c.version) / 'log4j2-broker.properties'}",
            f"-Dkafka.logs.dir={self.dir}", "-cp", f"{kafka_jars(c.version)}/*", _BROKER_MAIN, str(self.config_path),
        ]  # fmt: skip
        self.starts += 1
        self.paused = False
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts}\n".encode())
            log.flush()
            self._proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        register_for_cleanup(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until this node answers and the cluster's metadata lists it as a live broker."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.cluster.start_timeout)
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise KafkaError(
                    f"{self.name} exited with {self._proc.returncode} during start-up; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if _api_versions_ok("127.0.0.1", self.port) and self.node_id in self.cluster.live_brokers(
                self.internal_bootstrap
            ):
                return
            if time.monotonic() > deadline:
                raise KafkaError(
                    f"{self.name} did not become ready in time; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def start(self) -> KafkaNode:
        """Start (again, on the same dir and ports) and wait until the node is a live broker."""
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> int | None:
        """SIGKILL (a crash: no controlled shutdown); return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        self.resume()
        return terminate(proc, signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (controlled shutdown: leadership moves first), SIGKILL after ``timeout``."""
        proc = self._proc
        if proc is None:
            return None
        self.resume()
        code = terminate(proc, signal.SIGTERM, timeout)
        if code is None:
            logger.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            code = terminate(proc, signal.SIGKILL, 10.0)
        return code

    def pause(self) -> None:
        if self.is_running() and self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.is_running() and self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def __repr__(self) -> str:
        return f"<KafkaNode {self.node_id} port={self.port} running={self.is_running()}>"


class KafkaCluster(ManagedServer):
    """``nodes`` combined controller+broker nodes (default 3) on loopback; see the module doc.

    ``base_dir`` holds the cluster's dir (default: the system temp dir); ``cleanup()`` removes it
    unless ``keep`` is set (a campaign keeps the node logs with its own).
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        replication_factor: int = 3,
        min_insync_replicas: int = 2,
        heap: str = "512m",
        server_properties: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
        keep: bool = False,
        start_timeout: float = 180.0,
        version: str = KAFKA_VERSION,
    ) -> None:
        if nodes < replication_factor:
            raise ValueError(f"{nodes} nodes cannot hold replication factor {replication_factor}")
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.heap = heap
        self.extra_properties = dict(server_properties or {})
        self.start_timeout = start_timeout
        self.version = version
        self.keep = keep
        self.cluster_id = _cluster_id()
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-kafka-cluster-", dir=base_dir))
        self.nodes: dict[int, KafkaNode] = {}
        for i in range(1, nodes + 1):
            self.nodes[i] = KafkaNode(self, i, self.dir / f"node-{i}")
        self._formatted = False

    @property
    def voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes.values())

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated (clients find the rest from metadata)."""
        return ",".join(n.bootstrap for n in self.nodes.values())

    def _reachable_bootstrap(self) -> str:
        """Internal listeners of nodes that run and are not paused (a paused node accepts
        connections and never answers)."""
        live = [n.internal_bootstrap for n in self.nodes.values() if n.is_running() and not n.paused]
        return ",".join(live) or ",".join(n.internal_bootstrap for n in self.nodes.values())

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id]

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> KafkaCluster:
        """Format every node's storage, start all JVMs, wait until each is a live broker."""
        kafka_jars(self.version)
        if not self._formatted:
            for n in self.nodes.values():
                n._format()
            self._formatted = True
        started = time.monotonic()
        try:
            for n in self.nodes.values():
                if not n.is_running():
                    n.spawn()
            for n in self.nodes.values():
                n.wait_ready(max(5.0, self.start_timeout - (time.monotonic() - started)))
        except BaseException:
            for n in self.nodes.values():
                n.kill()
            raise
        logger.info("Kafka cluster ready on %s in %.1f s (%s)", self.bootstrap, time.monotonic() - started, self.dir)
        return self

    def kill(self) -> None:
        """SIGKILL every node (also the atexit safety net)."""
        for n in self.nodes.values():
            n.kill()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM each node in turn (the last ones may not finish a controlled shutdown: killed)."""
        for n in self.nodes.values():
            n.stop(timeout)

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            self.kill()
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    # -- metadata ---------------------------------------------------------------------------

    def admin(self, bootstrap: str | None = None, **kwargs: Any) -> KafkaAdminClient:
        return KafkaAdminClient(
            bootstrap_servers=(bootstrap or self._reachable_bootstrap()).split(","),
            request_timeout_ms=kwargs.pop("request_timeout_ms", 10_000),
            client_id=kwargs.pop("client_id", "outbox-tests-cluster"),
            **kwargs,
        )

    def live_brokers(self, bootstrap: str | None = None) -> set[int]:
        """Node ids the cluster's metadata lists as (unfenced) brokers; empty if nobody answers."""
        try:
            admin = self.admin(bootstrap, request_timeout_ms=5000)
        except Exception:
            return set()
        try:
            brokers = admin.describe_cluster().get("brokers") or []
            return {int(b.get("broker_id", b.get("node_id", -1))) for b in brokers if not b.get("is_fenced", False)}
        except Exception:
            return set()
        finally:
            admin.close()

    def create_topic(
        self, name: str, partitions: int, *, replication_factor: int | None = None, configs: Mapping[str, str] = {}
    ) -> None:
        admin = self.admin()
        try:
            rf = replication_factor or self.replication_factor
            admin.create_topics([NewTopic(name, partitions, rf, topic_configs=dict(configs))], timeout_ms=30_000)
        finally:
            admin.close()
        self.wait_fully_replicated([name], timeout=60.0)

    def _describe(self, topic: str, timeout: float) -> list[dict[str, Any]]:
        """Metadata of ``topic``, asking the reachable nodes in turn (kafka-python's admin client
        gives up on the first node it cannot reach, and just after a kill the metadata still
        lists the dead node)."""
        deadline = time.monotonic() + timeout
        while True:
            for node in [n for n in self.nodes.values() if n.is_running() and not n.paused]:
                try:
                    admin = self.admin(node.internal_bootstrap, request_timeout_ms=5000)
                    try:
                        return list(admin.describe_topics([topic]))
                    finally:
                        admin.close()
                except Exception as exc:
                    last = exc
                    logger.debug("metadata from %s failed: %s", node.name, exc)
                if time.monotonic() > deadline:
                    raise KafkaError(f"no node answered a metadata request for {topic}: {last}")
            time.sleep(0.2)
            if time.monotonic() > deadline:
                raise KafkaError(f"no node is reachable for a metadata request for {topic}")

    def partitions(self, topic: str, timeout: float = 15.0) -> dict[int, PartitionState]:
        """``partition -> PartitionState`` from the metadata of a reachable node."""
        described = self._describe(topic, timeout)
        out: dict[int, PartitionState] = {}
        for t in described:
            if t.get("name", t.get("topic")) != topic:
                continue
            for p in t.get("partitions") or []:
                out[int(p["partition_index"])] = PartitionState(
                    int(p["leader_id"]), tuple(p.get("replica_nodes") or ()), tuple(p.get("isr_nodes") or ())
                )
        return out

    def leader(self, topic: str, partition: int) -> int | None:
        """The node id leading ``topic``/``partition`` now, None if it has no leader (or nobody answers)."""
        try:
            state = self.partitions(topic).get(partition)
        except Exception:
            return None
        return state.leader if state is not None and state.leader >= 0 else None

    def fully_replicated(self, topics: Iterable[str]) -> bool:
        try:
            for topic in topics:
                states = self.partitions(topic)
                if not states or any(s.leader < 0 or set(s.isr) != set(s.replicas) for s in states.values()):
                    return False
        except Exception:
            return False
        return True

    def wait_fully_replicated(self, topics: Iterable[str], timeout: float = 60.0) -> bool:
        """Wait until every partition of ``topics`` has a leader and all its replicas in sync."""
        names = list(topics)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.fully_replicated(names):
                return True
            time.sleep(0.5)
        return False

    def __repr__(self) -> str:
        return f"<KafkaCluster {self.bootstrap} {self.dir}>"


def _main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with KafkaCluster() as cluster:
        print(cluster.bootstrap, flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(_main())
