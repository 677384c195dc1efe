"""Consumer metrics: counters, lag per partition, handler latency; a snapshot and Prometheus text."""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["LATENCY_BUCKETS", "ConsumerMetrics", "MetricsServer", "MetricsSnapshot"]

logger = logging.getLogger(__name__)

#: Upper bounds (seconds) of the handler latency histogram's buckets (Prometheus ``le``).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class MetricsSnapshot:
    """The counters of one consumer since it was created.

    ``processed``: records whose handler ran and committed; ``duplicates``: records skipped because
    their event id was already applied by the group; ``skipped``: records no handler was registered
    for; ``failed``: failed handler attempts; ``dead_lettered``: records sent to a dead-letter
    topic; ``lag``: records behind the log end per ``"topic/partition"`` the consumer owns;
    ``handler_seconds_*``: handler latency (count, sum, cumulative bucket counts by upper bound).
    """

    group: str
    processed: int
    duplicates: int
    skipped: int
    failed: int
    dead_lettered: int
    batches: int
    lost_partitions: int
    lag: dict[str, int]
    handler_seconds_count: int
    handler_seconds_sum: float
    handler_seconds_buckets: dict[float, int] = field(default_factory=dict)

    def handler_seconds_quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile of handler latency (from the buckets), None if no data."""
        if not self.handler_seconds_count:
            return None
        want = q * self.handler_seconds_count
        for bound, count in sorted(self.handler_seconds_buckets.items()):
            if count >= want:
                return bound
        return float("inf")


class ConsumerMetrics:
    """Mutable counters, updated by the consumer loop (one thread), read from any thread."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.processed = 0
        self.duplicates = 0
        self.skipped = 0
        self.failed = 0
        self.dead_lettered = 0
        self.batches = 0
        self.lost_partitions = 0
        self.lag: dict[str, int] = {}
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._lock = threading.Lock()

    def observe_handler(self, seconds: float, events: int = 1) -> None:
        """One handler call that took ``seconds`` for ``events`` records (a batch handler's call counts
        once per record, each taking the call's time divided by their number)."""
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds / events)
        with self._lock:
            self._latency_counts[index] += events
            self._latency_sum += seconds

    def set_lag(self, lag: dict[str, int]) -> None:
        with self._lock:
            self.lag = lag

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            counts = list(self._latency_counts)
            total = self._latency_sum
            lag = dict(self.lag)
        cumulative: dict[float, int] = {}
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
            running += count
            cumulative[bound] = running
        return MetricsSnapshot(
            group=self.group,
            processed=self.processed,
            duplicates=self.duplicates,
            skipped=self.skipped,
            failed=self.failed,
            dead_lettered=self.dead_lettered,
            batches=self.batches,
            lost_partitions=self.lost_partitions,
            lag=lag,
            handler_seconds_count=running,
            handler_seconds_sum=total,
            handler_seconds_buckets=cumulative,
        )


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(snap: MetricsSnapshot) -> str:
    """The snapshot in Prometheus' text exposition format (version 0.0.4)."""
    group = f'group="{_label(snap.group)}"'
    lines: list[str] = []
    counters = (
        ("processed", snap.processed, "Records whose handler ran and committed."),
        ("duplicates", snap.duplicates, "Records skipped because the group already applied their event id."),
        ("skipped", snap.skipped, "Records no handler was registered for."),
        ("failed", snap.failed, "Failed handler attempts."),
        ("dead_lettered", snap.dead_lettered, "Records sent to a dead-letter topic."),
        ("lost_partitions", snap.lost_partitions, "Batches rolled back because another member moved the offset."),
    )
    for name, value, doc in counters:
        metric = f"outbox_consumer_{name}_total"
        lines += [f"# HELP {metric} {doc}", f"# TYPE {metric} counter", f"{metric}{{{group}}} {value}"]
    lines += ["# HELP outbox_consumer_lag Records behind the log end.", "# TYPE outbox_consumer_lag gauge"]
    for tp, lag in sorted(snap.lag.items()):
        topic, _, partition = tp.rpartition("/")
        lines.append(f'outbox_consumer_lag{{{group},topic="{_label(topic)}",partition="{partition}"}} {lag}')
    metric = "outbox_consumer_handler_seconds"
    lines += [f"# HELP {metric} Handler latency.", f"# TYPE {metric} histogram"]
    for bound, count in snap.handler_seconds_buckets.items():
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f'{metric}_bucket{{{group},le="{le}"}} {count}')
    lines += [
        f"{metric}_sum{{{group}}} {snap.handler_seconds_sum}",
        f"{metric}_count{{{group}}} {snap.handler_seconds_count}",
    ]
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves ``GET /metrics`` in Prometheus text format from a daemon thread."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot], host: str, port: int) -> None:
        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = prometheus_text(snapshot()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("metrics: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="consumer-metrics", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
