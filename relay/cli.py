"""``outbox relay`` and ``outbox status``. Only this module reads environment variables."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

import psycopg

from outbox.db_cli import _table_args, _url_arg
from outbox.errors import OutboxError
from relay.config import PRODUCERS, RelayConfig, default_name
from relay.errors import RelayError

__all__ = ["add_relay_command", "add_status_command"]

BOOTSTRAP_ENV = "OUTBOX_BOOTSTRAP_SERVERS"


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"outbox relay: {name}={value!r} is not an integer") from None


def add_relay_command(sub: Any) -> None:
    p = sub.add_parser(
        "relay",
        help="move committed outbox events to the stream store or Kafka",
        description="Publish committed outbox rows, in per-key commit order, and delete them after the broker's "
        "acknowledgement. Run several for failover: each key bucket has one owner at a time. Every flag can also "
        "be set with the environment variable named in its help.",
    )
    _url_arg(p)
    _table_args(p, buckets=False)
    bootstrap = _env(BOOTSTRAP_ENV)
    p.add_argument(
        "--bootstrap-servers",
        default=bootstrap,
        required=bootstrap is None,
        help=f"HOST:PORT[,HOST:PORT...] of the stream store or a Kafka cluster [{BOOTSTRAP_ENV}]",
    )
    p.add_argument(
        "--name",
        default=_env("OUTBOX_RELAY_NAME", default_name()),
        help="this relay's name in `outbox status` [OUTBOX_RELAY_NAME; default: host:pid]",
    )
    p.add_argument(
        "--producer",
        choices=PRODUCERS,
        default=_env("OUTBOX_RELAY_PRODUCER", "auto"),
        help="Kafka client: confluent (librdkafka, fast) or kafka-python; auto = confluent when "
        "installed [OUTBOX_RELAY_PRODUCER; default: %(default)s]",
    )
    p.add_argument(
        "--producer-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra producer setting, e.g. compression.type=lz4 (repeatable; "
        "OUTBOX_RELAY_PRODUCER_OPTIONS: comma-separated)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=_env_int("OUTBOX_RELAY_BATCH_SIZE", 10000),
        help="events per claim and publish round [OUTBOX_RELAY_BATCH_SIZE; default: %(default)s]",
    )
    p.add_argument(
        "--poll-interval-ms",
        type=int,
        default=_env_int("OUTBOX_RELAY_POLL_INTERVAL_MS", 500),
        help="fallback poll when no notification comes [OUTBOX_RELAY_POLL_INTERVAL_MS; default: %(default)s]",
    )
    p.add_argument(
        "--delivery-timeout-ms",
        type=int,
        default=_env_int("OUTBOX_RELAY_DELIVERY_TIMEOUT_MS", 0),
        help="let the producer give up on a record after this long (its row stays and is retried); 0 = never, "
        "the default, which keeps a later record from landing after an earlier one expired "
        "[OUTBOX_RELAY_DELIVERY_TIMEOUT_MS; default: %(default)s]",
    )
    p.add_argument(
        "--max-relays",
        type=int,
        default=_env_int("OUTBOX_RELAY_MAX_RELAYS", 256),
        help="membership slots (the most relays that can run at once) [OUTBOX_RELAY_MAX_RELAYS; default: %(default)s]",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=_env_int("OUTBOX_METRICS_PORT", None),
        help="serve Prometheus metrics on this port (0: any free port) [OUTBOX_METRICS_PORT; default: off]",
    )
    p.add_argument(
        "--metrics-host",
        default=_env("OUTBOX_METRICS_HOST", "0.0.0.0"),
        help="address of the metrics server [OUTBOX_METRICS_HOST; default: %(default)s]",
    )
    _logging_args(p)
    p.set_defaults(func=_run_relay)


def add_status_command(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="backlog, oldest waiting event, bucket owners and relays",
        description="Show what is waiting in the outbox, who owns each key bucket and when each relay last "
        "published. Exit code 0 even with a backlog; 3 if some bucket has waiting events and no owner.",
    )
    _url_arg(p)
    _table_args(p, buckets=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run_status)


def _logging_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        default=_env("OUTBOX_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR [OUTBOX_LOG_LEVEL; default: %(default)s]",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env("OUTBOX_LOG_FORMAT", "text"),
        help="json: one object per line, for log collectors [OUTBOX_LOG_FORMAT; default: %(default)s]",
    )


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(level.upper())
    except ValueError:
        raise SystemExit(f"outbox relay: unknown log level {level!r}") from None
    logging.getLogger("kafka").setLevel(max(root.level, logging.WARNING))


def _producer_options(args: argparse.Namespace) -> dict[str, str]:
    items = list(args.producer_option)
    env = os.environ.get("OUTBOX_RELAY_PRODUCER_OPTIONS", "")
    items = [i for i in env.split(",") if i.strip()] + items
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"outbox relay: producer option {item!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def _run_relay(args: argparse.Namespace) -> int:
    from relay.app import Relay

    _setup_logging(args.log_level, args.log_format)
    from outbox._faults import arm

    try:
        arm(os.environ.get("OUTBOX_CRASH_POINTS"))
    except ValueError as exc:
        print(f"outbox relay: OUTBOX_CRASH_POINTS: {exc}", file=sys.stderr)
        return 2
    try:
        config = RelayConfig(
            database_url=args.database_url,
            bootstrap_servers=args.bootstrap_servers,
            schema=args.schema,
            table=args.table,
            name=args.name,
            producer=args.producer,
            producer_options=_producer_options(args),
            batch_size=args.batch_size,
            poll_interval=args.poll_interval_ms / 1000,
            delivery_timeout=args.delivery_timeout_ms / 1000 if args.delivery_timeout_ms > 0 else None,
            max_relays=args.max_relays,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    except RelayError as exc:
        print(f"outbox relay: {exc}", file=sys.stderr)
        return 2
    relay = Relay(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("relay").info("signal %d: finishing the batch in hand, then stopping", signum)
        relay.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        relay.run()
    except (RelayError, OutboxError) as exc:
        logging.getLogger("relay").error("%s", exc)
        return 2
    return 0


def _run_status(args: argparse.Namespace) -> int:
    from relay.status import format_status, read_status

    try:
        with psycopg.connect(args.database_url, autocommit=True, connect_timeout=10) as conn:
            status = read_status(conn, schema=args.schema, table=args.table)
    except OutboxError as exc:
        print(f"outbox status: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"outbox status: cannot connect to the database: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
    else:
        print(format_status(status))
    stuck = [b for b in status.bucket_status if b.events and b.owner is None]
    return 3 if stuck else 0
