"""compose/docker-compose.yml without a Docker engine.

``docker-compose config`` (Debian's docker-compose; .ci/run installs it) validates the file, and
every service that runs the project's image is started here as a local process with its compose
command and environment, the compose host names mapped to this test's real PostgreSQL and store
(``postgres:5432/<db>`` → a fresh test database, ``broker:9092`` → the store), so a broken command,
flag or variable fails here. The Kafka profile's ``KAFKA_*`` settings are run on a real Apache Kafka.
``make compose-test`` runs the stack for real under Docker.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml

from tests.support._proc import REPO_ROOT, free_port, log_tail, popen, run, terminate, wait_for_port
from tests.support.kafka import KafkaBroker
from tests.support.postgres import PostgresServer
from tests.support.store import StoreProcess

COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
APP_SERVICES = ("store", "migrate", "relay", "orders", "inventory", "email")
LONG_RUNNING = ("relay", "orders", "inventory", "email")
BROKER = "broker:9092"
BIN_DIR = Path(sys.executable).parent

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\})")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ``${VAR}``/``${VAR:-default}``/``$$`` substitution, recursively."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group("name"), m.group("default")
            if name in env and (env[name] or default is None):
                return env[name]
            if default is None:
                pytest.fail(f"compose variable ${{{name}}} has no default and is not set")
            return default

        return _VARIABLE.sub(sub, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return {k: v for k, v in interpolate(raw, env or {}).items() if not k.startswith("x-")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is not installed: apt-get install docker-compose (.ci/run installs it)")
    return path


# -- the file itself ------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["store", "kafka"])
def test_docker_compose_config_accepts_the_file_and_agrees_with_this_reading(
    compose: dict[str, Any], profile: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "POSTGRES_", "OUTBOX_", "STREAMS_"))}
    result = run(
        [docker_compose(), "--profile", profile, "config"],
        cwd=COMPOSE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    resolved = yaml.safe_load(result.stdout)["services"]
    # Same services, commands and environments as this module's reading (anchors, merges and
    # ${VAR:-default} resolved alike), so the local runs below run what compose would run.
    assert set(resolved) == set(compose["services"])
    for name, service in compose["services"].items():
        assert resolved[name].get("command") == service.get("command"), name
        assert (resolved[name].get("environment") or {}) == {
            k: str(v) for k, v in (service.get("environment") or {}).items()
        }, name


def test_stack_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "kafka", *APP_SERVICES}
    image = services["relay"]["image"]
    for name in APP_SERVICES:
        s = services[name]
        assert s["image"] == image and s["build"]["dockerfile"] == "compose/Dockerfile", name
        assert s["restart"] == ("on-failure" if name == "migrate" else "unless-stopped"), name
    assert services["postgres"]["restart"] == services["kafka"]["restart"] == "unless-stopped"
    for name in ("postgres", "store", "kafka", "relay", "inventory", "email"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for name in ("migrate", "relay", "orders"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
    for name in ("relay", "orders"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"

    # The broker: the store by default (.env), Apache Kafka in the kafka profile, both as broker:9092.
    assert services["store"]["profiles"] == ["store"] and services["kafka"]["profiles"] == ["kafka"]
    assert "COMPOSE_PROFILES=store" in (COMPOSE_DIR / ".env").read_text().splitlines()
    for name in ("store", "kafka"):
        assert services[name]["networks"]["default"]["aliases"] == ["broker"], name
    assert services["store"]["volumes"] == ["store-data:/data"]
    assert "--data-dir" in services["store"]["command"]
    for name in ("relay", "inventory", "email"):
        assert services[name]["environment"]["OUTBOX_BOOTSTRAP_SERVERS"] == BROKER, name

    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{BROKER}"
    assert len(base64.urlsafe_b64decode(kafka_env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID must be a base64 UUID"

    # The Dockerfile copies every package the project installs, and the examples.
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    for package in ("outbox", "relay", "streams", "consumers", "examples"):
        assert f"COPY {package} ./{package}" in dockerfile, package
        assert (REPO_ROOT / package / "__init__.py").exists(), package
    # The postgres init script names the consumers' databases.
    init_sql = (COMPOSE_DIR / "postgres-init.sql").read_text()
    for name in ("inventory", "email"):
        url = services[name]["environment"]["CONSUMER_DATABASE_URL"]
        assert f"CREATE DATABASE {urlsplit(url).path.lstrip('/')} " in init_sql, name


# -- the commands, as local processes -------------------------------------------------------


class LocalStack:
    """Maps compose names to local ones and runs services' commands as child processes."""

    def __init__(self, compose: dict[str, Any], tmp_path: Path) -> None:
        self.services = compose["services"]
        self.tmp_path = tmp_path
        self.databases: dict[str, str] = {}  # compose database name -> test DSN
        self.replacements: dict[str, str] = {}  # compose text -> local text
        self.ports: dict[str, str] = {}  # "service:PORT_VARIABLE" -> free local port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def map_value(self, value: str) -> str:
        if value.startswith("postgresql://") and urlsplit(value).hostname == "postgres":
            db = urlsplit(value).path.lstrip("/")
            assert db in self.databases, f"no local database for {value}"
            return self.databases[db]
        for old, new in self.replacements.items():
            value = value.replace(old, new)
        return value

    def command(self, name: str, cmd: list[str] | None = None) -> list[str]:
        argv = [self.map_value(str(a)) for a in (cmd if cmd is not None else self.services[name]["command"])]
        # The image's `python` and `outbox` are this virtualenv's.
        if argv[0] in ("python", "outbox"):
            argv[0] = sys.executable if argv[0] == "python" else str(BIN_DIR / "outbox")
        return argv

    def environment(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "CONSUMER_", "ORDERS_", "STREAMS_"))}
        for key, value in (self.services[name].get("environment") or {}).items():
            env[key] = (
                self.ports.setdefault(f"{name}:{key}", str(free_port()))
                if key.endswith("METRICS_PORT")
                else self.map_value(str(value))
            )
        for key, value in env.items():
            if key in (self.services[name].get("environment") or {}):
                assert not re.search(r"\b(postgres|broker|store|kafka):\d+", value), f"{name}: {key}={value} not mapped"
        return env

    def start(self, name: str) -> subprocess.Popen[bytes]:
        with (self.tmp_path / f"{name}.log").open("wb") as log:
            proc = popen(
                self.command(name), env=self.environment(name), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return log_tail(self.tmp_path / f"{name}.log")

    def assert_running(self, name: str) -> None:
        rc = self.procs[name].poll()
        assert rc is None, f"{name} exited with {rc}:\n{self.log(name)}"

    def healthcheck(self, name: str, timeout: float = 30.0) -> None:
        """Run the service's compose healthcheck here until it passes (its retries, in time)."""
        cmd = self.command(name, self.services[name]["healthcheck"]["test"][1:])
        env = self.environment(name)
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running(name)
            result = run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"healthcheck of {name} fails: {result.stderr}\n{self.log(name)}")
            time.sleep(0.5)

    def stop_all(self) -> dict[str, int | None]:
        codes = {}
        for name, proc in self.procs.items():
            codes[name] = terminate(proc, signal.SIGTERM, 30.0)
            if codes[name] is None:
                proc.kill()
                proc.wait()
        return codes


@pytest.fixture
def local_stack(compose: dict[str, Any], tmp_path: Path) -> Iterator[LocalStack]:
    stack = LocalStack(compose, tmp_path)
    try:
        yield stack
    finally:
        stack.stop_all()


def test_store_service_command_serves_as_configured(local_stack: LocalStack, tmp_path: Path) -> None:
    port = free_port()
    local_stack.replacements.update(
        {"0.0.0.0:9092": f"127.0.0.1:{port}", BROKER: f"127.0.0.1:{port}", "127.0.0.1', 9092": f"127.0.0.1', {port}"}
    )
    cmd = local_stack.services["store"]["command"]
    assert cmd[cmd.index("--data-dir") + 1] == "/data"
    local_stack.replacements["/data"] = str(tmp_path / "data")
    proc = local_stack.start("store")
    assert wait_for_port("127.0.0.1", port, 30), local_stack.log("store")
    local_stack.healthcheck("store")

    # The advertised listener and the configured default partitions reach clients.
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", max_block_ms=20_000)
    try:
        expected = int(local_stack.services["store"]["environment"]["STREAMS_DEFAULT_PARTITIONS"])
        assert producer.partitions_for("compose-check") == set(range(expected))  # auto-created
        brokers = producer._metadata.brokers()
        assert {(b.host, b.port) for b in brokers} == {("127.0.0.1", port)}
    finally:
        producer.close()
    assert (tmp_path / "data").is_dir() and any((tmp_path / "data").iterdir())
    assert terminate(proc, signal.SIGTERM, 30) == 0, local_stack.log("store")


def _count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute(query).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def test_app_services_run_from_their_compose_commands(
    local_stack: LocalStack, postgres: PostgresServer, database_url: str, store: StoreProcess
) -> None:
    made = []
    local_stack.databases["orders"] = database_url
    for name in ("inventory", "email"):
        url = local_stack.services[name]["environment"]["CONSUMER_DATABASE_URL"]
        db = f"compose_{name}_{uuid.uuid4().hex[:8]}"
        local_stack.databases[urlsplit(url).path.lstrip("/")] = postgres.create_database(db)
        made.append(db)
    local_stack.replacements[BROKER] = store.bootstrap
    try:
        migrate = run(
            local_stack.command("migrate"),
            env=local_stack.environment("migrate"),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrate.returncode == 0, migrate.stderr
        assert _count(database_url, "SELECT count(*) FROM outbox.events") == 0

        for name in LONG_RUNNING:
            local_stack.start(name)
        # Orders flow from the orders service through the relay and the store to both groups.
        inventory, email = local_stack.databases["inventory"], local_stack.databases["email"]
        deadline = time.monotonic() + 90
        while True:
            for name in LONG_RUNNING:
                local_stack.assert_running(name)
            applied = (
                _count(inventory, "SELECT count(*) FROM inventory.reservations"),
                _count(email, "SELECT count(*) FROM email.messages"),
            )
            if min(applied) >= 20:
                break
            assert time.monotonic() < deadline, f"effects after 90 s: {applied}\n" + "\n".join(
                f"--- {n}\n{local_stack.log(n)}" for n in LONG_RUNNING
            )
            time.sleep(0.5)
        for name in ("relay", "inventory", "email"):
            local_stack.healthcheck(name)
        for name in LONG_RUNNING:
            local_stack.assert_running(name)
        codes = local_stack.stop_all()
        assert codes == dict.fromkeys(LONG_RUNNING, 0), "\n".join(
            f"--- {n}\n{local_stack.log(n)}" for n in LONG_RUNNING
        )
    finally:
        local_stack.stop_all()
        for db in made:
            postgres.drop_database(db)


def test_kafka_profile_settings_run_on_apache_kafka(compose: dict[str, Any], tmp_path: Path) -> None:
    env = compose["services"]["kafka"]["environment"]
    props = {
        key.removeprefix("KAFKA_").lower().replace("_", "."): str(value)
        for key, value in env.items()
        if key.startswith("KAFKA_")
    }
    # Addresses and paths are the container's; everything else is run as written.
    local = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}
    assert local <= set(props)
    for key in local:
        del props[key]
    # server_properties entries override the launcher's, so every compose setting is in force.
    with KafkaBroker(auto_create_topics=False, server_properties=props) as broker:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_block_ms=60_000)
        try:  # auto-created with the compose file's partition count
            assert producer.partitions_for("compose-check") == set(range(int(props["num.partitions"])))
        finally:
            producer.close()
