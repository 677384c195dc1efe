"""Settings of a running store server (the storage settings live in ``streams.storage``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .groups import GroupSettings

__all__ = ["FsyncPolicy", "ServerConfig", "parse_fsync_policy"]


@dataclass(frozen=True, slots=True)
class FsyncPolicy:
    """``always``: acks=1/all are answered after fdatasync (group commit across requests).

    ``interval``: acks are answered after the write to the OS; data is fsynced every
    ``interval_ms``. A crash can lose up to that much acknowledged data. Consumers still never
    see unsynced data, so they never read records that a crash could take back.
    """

    interval_ms: int | None = None

    @property
    def always(self) -> bool:
        return self.interval_ms is None

    def __str__(self) -> str:
        return "always" if self.interval_ms is None else f"interval:{self.interval_ms}"


def parse_fsync_policy(text: str) -> FsyncPolicy:
    if text == "always":
        return FsyncPolicy()
    if text.startswith("interval:"):
        try:
            ms = int(text.split(":", 1)[1])
        except ValueError:
            ms = -1
        if ms > 0:
            return FsyncPolicy(ms)
    raise ValueError(f"fsync policy {text!r} is not 'always' or 'interval:MS' with MS > 0")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str | None = None
    advertised_port: int | None = None
    node_id: int = 1
    auto_create_topics: bool = True
    max_request_bytes: int = 8 * 1024 * 1024
    max_buffered_request_bytes: int = 64 * 1024 * 1024
    max_connections: int = 1024
    idle_timeout_s: float = 600.0
    request_timeout_s: float = 30.0
    fsync: FsyncPolicy = field(default_factory=FsyncPolicy)
    checkpoint_interval_s: float = 5.0
    retention_check_interval_s: float = 60.0
    ready_file: Path | None = None
    groups: GroupSettings = field(default_factory=GroupSettings)
