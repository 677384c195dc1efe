"""``outbox streams ...`` / ``python -m streams``: run and operate the built-in stream store."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from . import _faults, storage
from .admin_cli import add_admin_subcommands
from .errors import StreamsError
from .server.app import serve
from .server.config import ServerConfig, parse_fsync_policy
from .server.groups import GroupSettings

__all__ = ["add_subcommands", "main"]

_DAY_MS = 24 * 3600 * 1000


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _fsync(text: str) -> object:
    try:
        return parse_fsync_policy(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="streams_command", required=True, metavar="COMMAND")
    s = sub.add_parser(
        "serve",
        help="run the stream store in the foreground",
        description="Run the stream store: a durable, single-node broker that speaks the Kafka protocol. "
        "Every flag can also be set with the environment variable named in its help.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument(
        "--data-dir",
        type=Path,
        default=_env("STREAMS_DATA_DIR"),
        required=_env("STREAMS_DATA_DIR") is None,
        help="directory holding the logs and metadata; created if missing [STREAMS_DATA_DIR]",
    )
    s.add_argument(
        "--listen",
        type=_host_port,
        default=_env("STREAMS_LISTEN", "127.0.0.1:9092"),
        help="HOST:PORT to accept Kafka clients on; port 0 picks a free port [STREAMS_LISTEN]",
    )
    s.add_argument(
        "--advertised-listener",
        type=_host_port,
        default=_env("STREAMS_ADVERTISED_LISTENER"),
        help="HOST:PORT clients are told to connect to (Metadata); defaults to the listen "
        "address [STREAMS_ADVERTISED_LISTENER]",
    )
    s.add_argument(
        "--default-partitions",
        type=int,
        default=int(_env("STREAMS_DEFAULT_PARTITIONS", "1") or 1),
        help="partitions of auto-created topics and of CreateTopics without a count [STREAMS_DEFAULT_PARTITIONS]",
    )
    s.add_argument(
        "--no-auto-create",
        action="store_true",
        default=_env("STREAMS_NO_AUTO_CREATE") == "1",
        help="refuse Metadata requests for unknown topics instead of creating them [STREAMS_NO_AUTO_CREATE=1]",
    )
    s.add_argument(
        "--retention-ms",
        type=int,
        default=int(_env("STREAMS_RETENTION_MS", str(7 * _DAY_MS)) or 0),
        help="default time retention: whole segments older than this are deleted; -1 keeps "
        "everything [STREAMS_RETENTION_MS]",
    )
    s.add_argument(
        "--retention-bytes",
        type=int,
        default=int(_env("STREAMS_RETENTION_BYTES", "-1") or -1),
        help="default size retention per partition; oldest segments go first; -1 = unlimited [STREAMS_RETENTION_BYTES]",
    )
    s.add_argument(
        "--segment-bytes",
        type=int,
        default=int(_env("STREAMS_SEGMENT_BYTES", str(1024 * 1024 * 1024)) or 0),
        help="roll to a new segment file at this size [STREAMS_SEGMENT_BYTES]",
    )
    s.add_argument(
        "--segment-ms",
        type=int,
        default=int(_env("STREAMS_SEGMENT_MS", str(7 * _DAY_MS)) or 0),
        help="roll to a new segment file after this age [STREAMS_SEGMENT_MS]",
    )
    s.add_argument(
        "--max-message-bytes",
        type=int,
        default=int(_env("STREAMS_MAX_MESSAGE_BYTES", "1048588") or 0),
        help="largest record batch a topic accepts by default (Kafka's max.message.bytes) [STREAMS_MAX_MESSAGE_BYTES]",
    )
    s.add_argument(
        "--max-request-size",
        type=int,
        default=int(_env("STREAMS_MAX_REQUEST_SIZE", str(8 * 1024 * 1024)) or 0),
        help="largest request frame accepted; larger frames close the connection [STREAMS_MAX_REQUEST_SIZE]",
    )
    s.add_argument(
        "--fsync",
        type=_fsync,
        default=_env("STREAMS_FSYNC", "always"),
        help="'always': acks=1/all are answered only after fdatasync (group commit, no "
        "acknowledged write is lost in a crash); 'interval:MS': answer after the write and "
        "fsync every MS milliseconds (faster; a crash loses up to MS of acknowledged writes) "
        "[STREAMS_FSYNC]",
    )
    s.add_argument(
        "--event-loop",
        choices=["uvloop", "asyncio"],
        default=_env("STREAMS_EVENT_LOOP", "uvloop"),
        help="uvloop (the default where installed) handles small requests faster; the standard "
        "asyncio loop serves fetches with zero-copy sendfile [STREAMS_EVENT_LOOP]",
    )
    s.add_argument(
        "--group-initial-rebalance-delay-ms",
        type=int,
        default=int(_env("STREAMS_GROUP_INITIAL_REBALANCE_DELAY_MS", "100") or 0),
        help="how long a new group waits for more members before its first rebalance (Kafka: 3000) "
        "[STREAMS_GROUP_INITIAL_REBALANCE_DELAY_MS]",
    )
    s.add_argument(
        "--group-min-session-timeout-ms",
        type=int,
        default=int(_env("STREAMS_GROUP_MIN_SESSION_TIMEOUT_MS", "6000") or 0),
        help="smallest session timeout a consumer may ask for [STREAMS_GROUP_MIN_SESSION_TIMEOUT_MS]",
    )
    s.add_argument(
        "--group-max-session-timeout-ms",
        type=int,
        default=int(_env("STREAMS_GROUP_MAX_SESSION_TIMEOUT_MS", "1800000") or 0),
        help="largest session timeout a consumer may ask for [STREAMS_GROUP_MAX_SESSION_TIMEOUT_MS]",
    )
    s.add_argument(
        "--offsets-retention-ms",
        type=int,
        default=int(_env("STREAMS_OFFSETS_RETENTION_MS", str(7 * _DAY_MS)) or 0),
        help="committed offsets of a group that stays empty this long are deleted "
        "(Kafka's offsets.retention.minutes) [STREAMS_OFFSETS_RETENTION_MS]",
    )
    s.add_argument(
        "--retention-check-interval-ms",
        type=int,
        default=int(_env("STREAMS_RETENTION_CHECK_INTERVAL_MS", "60000") or 0),
        help="how often retention and offset expiry run [STREAMS_RETENTION_CHECK_INTERVAL_MS]",
    )
    s.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=int(_env("STREAMS_MAX_BUFFERED_BYTES", str(64 * 1024 * 1024)) or 0),
        help="memory all connections together may hold for requests still arriving; over it, "
        "connections in the middle of a request wait (Kafka's queued.max.request.bytes) "
        "[STREAMS_MAX_BUFFERED_BYTES]",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        default=int(_env("STREAMS_MAX_CONNECTIONS", "1024") or 0),
        help="connections accepted at once [STREAMS_MAX_CONNECTIONS]",
    )
    s.add_argument(
        "--idle-timeout",
        type=float,
        default=float(_env("STREAMS_IDLE_TIMEOUT", "600") or 0),
        help="seconds before an idle connection is closed [STREAMS_IDLE_TIMEOUT]",
    )
    s.add_argument(
        "--ready-file",
        type=Path,
        default=_env("STREAMS_READY_FILE"),
        help="write the bound HOST:PORT (not the advertised one) to this file once listening [STREAMS_READY_FILE]",
    )
    s.add_argument(
        "--log-level",
        default=_env("STREAMS_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="[STREAMS_LOG_LEVEL]",
    )
    s.set_defaults(func=_cmd_serve)
    add_admin_subcommands(sub)


def _cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name, value, low in (
        ("--default-partitions", args.default_partitions, 1),
        ("--segment-bytes", args.segment_bytes, 1024),
        ("--max-request-size", args.max_request_size, 1024),
        ("--max-message-bytes", args.max_message_bytes, 64),
        ("--segment-ms", args.segment_ms, 1),
        ("--max-connections", args.max_connections, 1),
        ("--max-buffered-bytes", args.max_buffered_bytes, 1024),
        ("--group-initial-rebalance-delay-ms", args.group_initial_rebalance_delay_ms, 0),
        ("--group-min-session-timeout-ms", args.group_min_session_timeout_ms, 1),
        ("--offsets-retention-ms", args.offsets_retention_ms, 0),
        ("--retention-check-interval-ms", args.retention_check_interval_ms, 10),
    ):
        if value < low:
            print(f"outbox streams serve: {name} must be at least {low}", file=sys.stderr)
            return 2
    if args.segment_bytes > 2**31 - 1:
        print("outbox streams serve: --segment-bytes must be below 2 GiB", file=sys.stderr)
        return 2
    _faults.arm(os.environ.get("STREAMS_CRASH_POINTS"))
    _faults.arm_ledger(os.environ.get("STREAMS_WRITE_LEDGER"), args.data_dir)  # tests/chaos/powercut.py
    host, port = args.listen
    adv_host, adv_port = args.advertised_listener or (None, None)
    config = ServerConfig(
        data_dir=args.data_dir,
        host=host,
        port=port,
        advertised_host=adv_host,
        advertised_port=adv_port,
        auto_create_topics=not args.no_auto_create,
        max_request_bytes=args.max_request_size,
        max_buffered_request_bytes=args.max_buffered_bytes,
        retention_check_interval_s=args.retention_check_interval_ms / 1000,
        groups=GroupSettings(
            initial_rebalance_delay_ms=args.group_initial_rebalance_delay_ms,
            min_session_timeout_ms=args.group_min_session_timeout_ms,
            max_session_timeout_ms=args.group_max_session_timeout_ms,
            offsets_retention_ms=args.offsets_retention_ms,
        ),
        max_connections=args.max_connections,
        idle_timeout_s=args.idle_timeout,
        fsync=args.fsync,
        ready_file=args.ready_file,
    )
    store_config = storage.StoreConfig(
        data_dir=args.data_dir,
        default_partitions=args.default_partitions,
        topic_defaults=storage.TopicConfig(
            retention_ms=args.retention_ms,
            retention_bytes=args.retention_bytes,
            segment_bytes=args.segment_bytes,
            segment_ms=args.segment_ms,
            max_message_bytes=args.max_message_bytes,
        ),
    )
    try:
        if args.event_loop == "uvloop":
            try:
                import uvloop
            except ImportError:
                logging.getLogger("streams").warning("uvloop is not installed; using the asyncio event loop")
            else:
                return int(uvloop.run(serve(config, store_config)))
        return asyncio.run(serve(config, store_config))
    except StreamsError as exc:
        logging.getLogger("streams").critical("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams", description="The built-in stream store.")
    add_subcommands(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
