"""The relay's settings, with the defaults a production relay should run with."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from outbox._table import DEFAULT_SCHEMA, DEFAULT_TABLE
from relay.errors import ConfigError

__all__ = ["PRODUCERS", "RelayConfig", "default_name"]

PRODUCERS = ("auto", "confluent", "kafka-python")


def default_name() -> str:
    """``host:pid``: unique per process on a host, readable in ``outbox status``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RelayConfig:
    """What one relay process does.

    Timing defaults: a relay wakes within ``poll_interval`` even if every notification is lost;
    ``linger`` keeps it polling (every ``linger_step``) after the last work so that a steady trickle
    of writes costs them no NOTIFY; ``rebalance_interval`` bounds how long a dead relay's buckets stay
    orphaned once PostgreSQL has noticed the death.
    """

    database_url: str
    bootstrap_servers: str
    schema: str = DEFAULT_SCHEMA
    table: str = DEFAULT_TABLE
    name: str = field(default_factory=default_name)
    producer: str = "auto"
    producer_options: Mapping[str, str] = field(default_factory=dict)
    batch_size: int = 10000
    poll_interval: float = 0.5
    linger: float = 0.02
    linger_step: float = 0.001
    rebalance_interval: float = 1.0
    heartbeat_interval: float = 1.0
    backlog_interval: float = 5.0
    # None: the producer never gives up on a record (see relay/publisher.py for why).
    delivery_timeout: float | None = None
    # Batches in flight at once: the next batch is claimed and sent while the previous one waits
    # for its acknowledgements.
    pipeline_depth: int = 3
    retry_backoff: float = 0.1
    retry_backoff_max: float = 5.0
    max_relays: int = 256
    # Server-side TCP keepalives of the relay's session: how fast PostgreSQL notices a relay that
    # vanished without closing its socket (power loss, network cut) and frees its buckets.
    keepalive_idle: int = 5
    keepalive_interval: int = 2
    keepalive_count: int = 3
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        if self.producer not in PRODUCERS:
            raise ConfigError(f"producer must be one of {', '.join(PRODUCERS)}, got {self.producer!r}")
        if not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers is empty: give the store's or Kafka's HOST:PORT[,HOST:PORT...]")
        if not 1 <= self.batch_size <= 1_000_000:
            raise ConfigError(f"batch_size must be 1..1000000, got {self.batch_size}")
        for name in (
            "poll_interval",
            "rebalance_interval",
            "heartbeat_interval",
            "backlog_interval",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        for name in ("linger", "linger_step", "retry_backoff", "retry_backoff_max"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}")
        if self.delivery_timeout is not None and not self.delivery_timeout > 0:
            raise ConfigError(f"delivery_timeout must be > 0 seconds or None (never), got {self.delivery_timeout!r}")
        if not 1 <= self.pipeline_depth <= 8:
            raise ConfigError(f"pipeline_depth must be 1..8, got {self.pipeline_depth}")
        if not 1 <= self.max_relays <= 4096:
            raise ConfigError(f"max_relays must be 1..4096, got {self.max_relays}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be 0..65535, got {self.metrics_port}")
