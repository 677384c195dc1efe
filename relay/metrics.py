"""The relay's Prometheus metrics (prometheus_client), in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["RelayMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.published = Counter("outbox_relay_published", "Events acknowledged by the broker and deleted", registry=r)
        self.failed = Counter(
            "outbox_relay_failed", "Events whose publish failed (kept for the next round)", registry=r
        )
        self.rounds = Counter("outbox_relay_rounds", "Publish rounds", ["outcome"], registry=r)
        self.backlog = Gauge(
            "outbox_relay_backlog_events", "Events waiting in the outbox table (all buckets)", registry=r
        )
        self.oldest_age = Gauge(
            "outbox_relay_oldest_event_age_seconds", "Age of the oldest event waiting (0 when none)", registry=r
        )
        self.owned_buckets = Gauge("outbox_relay_owned_buckets", "Key buckets this relay owns", registry=r)
        self.live_relays = Gauge("outbox_relay_live_relays", "Relays holding a membership lock", registry=r)
        self.batch_size = Histogram(
            "outbox_relay_batch_events", "Events per publish round", buckets=_BATCH_BUCKETS, registry=r
        )
        self.publish_seconds = Histogram(
            "outbox_relay_publish_seconds",
            "From handing a batch to the producer to its last outcome",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.claim_seconds = Histogram(
            "outbox_relay_claim_seconds", "Claim query time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.event_latency = Histogram(
            "outbox_relay_event_latency_seconds",
            "From the event's created_at to its acknowledgement",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.reconnects = Counter("outbox_relay_reconnects", "Database (re)connections", registry=r)
        self.wakeups = Counter("outbox_relay_wakeups", "Wake-ups after sleeping", ["cause"], registry=r)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve ``/metrics``; returns the port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
