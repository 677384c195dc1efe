"""``outbox streams topics ...`` and ``outbox streams groups ...``: operate any Kafka-protocol broker.

These commands talk to a broker through ``--bootstrap-servers`` with kafka-python's admin client, so
they work the same against the stream store and against Apache Kafka. Human output is aligned
tables on stdout (notes go to stderr); ``--json`` prints one JSON document for scripts instead.

Errors are one line on stderr, ``outbox streams <command>: <message>``, with exit code 1 (2 for
bad usage, as argparse does). ``groups reset-offsets`` follows Kafka's ``kafka-consumer-groups``: it
only touches groups without active members, and only shows the plan unless given ``--execute``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import kafka.errors as kerrors
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.structs import OffsetAndMetadata

__all__ = ["BOOTSTRAP_ENV", "add_admin_subcommands"]

BOOTSTRAP_ENV = "OUTBOX_BOOTSTRAP_SERVERS"
_DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
_CLIENT_ID = "outbox-streams-cli"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Errors a broker returns while it is still getting ready (e.g. Kafka creating __consumer_offsets
# on the first group request): the operation is retried until --timeout.
_TRANSIENT = (
    kerrors.CoordinatorNotAvailableError,
    kerrors.CoordinatorLoadInProgressError,
    kerrors.NotCoordinatorError,
    kerrors.LeaderNotAvailableError,
    kerrors.NotLeaderForPartitionError,
    kerrors.RequestTimedOutError,
)
_TRANSIENT_NAMES = tuple(cls.__name__ for cls in _TRANSIENT)

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Session:
    """The admin client of one command and the time its retries give up."""

    admin: KafkaAdminClient
    deadline: float


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


# -- parser -------------------------------------------------------------------------------------


def add_admin_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``topics`` and ``groups`` (with their own subcommands) to ``outbox streams``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT[,...]",
        default=os.environ.get(BOOTSTRAP_ENV) or _DEFAULT_BOOTSTRAP,
        help=f"broker(s) to connect to [{BOOTSTRAP_ENV}, else {_DEFAULT_BOOTSTRAP}]",
    )
    common.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    common.add_argument(
        "--timeout",
        type=_positive_float,
        default=15.0,
        metavar="SECONDS",
        help="give up on an unreachable or unready broker after this long (default: %(default)s)",
    )
    common.add_argument("--verbose", action="store_true", help="log the Kafka client's activity to stderr")

    topics = sub.add_parser("topics", help="list, create, describe and delete topics on any Kafka-protocol broker")
    tsub = topics.add_subparsers(dest="topics_command", required=True, metavar="COMMAND")

    p = tsub.add_parser("list", parents=[common], help="list topics and their partition counts")
    p.add_argument("--exclude-internal", action="store_true", help="leave out internal topics (__consumer_offsets)")
    p.set_defaults(func=_wrap("topics list", _topics_list))

    p = tsub.add_parser("create", parents=[common], help="create a topic")
    p.add_argument("--topic", required=True, help="name of the topic")
    p.add_argument("--partitions", type=_positive_int, help="number of partitions (default: the broker's)")
    p.add_argument("--replication-factor", type=_positive_int, help="replicas per partition (default: the broker's)")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        type=_config_pair,
        metavar="KEY=VALUE",
        help="topic config, e.g. retention.ms=86400000 (repeatable)",
    )
    p.set_defaults(func=_wrap("topics create", _topics_create))

    p = tsub.add_parser("describe", parents=[common], help="partitions, leaders, replicas and offsets of topics")
    p.add_argument("--topic", action="append", default=[], help="topic to describe (repeatable; default: all)")
    p.add_argument("--exclude-internal", action="store_true", help="leave out internal topics (__consumer_offsets)")
    p.set_defaults(func=_wrap("topics describe", _topics_describe))

    p = tsub.add_parser("delete", parents=[common], help="delete topics and all their records")
    p.add_argument("--topic", action="append", required=True, help="topic to delete (repeatable)")
    p.set_defaults(func=_wrap("topics delete", _topics_delete))

    groups = sub.add_parser("groups", help="list, describe and reset the offsets of consumer groups")
    gsub = groups.add_subparsers(dest="groups_command", required=True, metavar="COMMAND")

    p = gsub.add_parser("list", parents=[common], help="list consumer groups and their states")
    p.set_defaults(func=_wrap("groups list", _groups_list))

    p = gsub.add_parser(
        "describe",
        parents=[common],
        help="committed offset, log end offset, lag and owner of every partition of groups",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--group", action="append", help="group to describe (repeatable)")
    which.add_argument("--all-groups", action="store_true", help="describe every group")
    p.set_defaults(func=_wrap("groups describe", _groups_describe))

    p = gsub.add_parser(
        "reset-offsets",
        parents=[common],
        help="move the committed offsets of an inactive group",
        description="Move the committed offsets of a consumer group that has no active members "
        "(stop its consumers first). Without --execute only the plan is printed.",
    )
    p.add_argument("--group", required=True, help="the consumer group")
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--topic",
        action="append",
        type=_topic_spec,
        metavar="TOPIC[:P,P...]",
        help="reset all partitions of TOPIC, or only the listed ones (repeatable)",
    )
    scope.add_argument(
        "--all-topics", action="store_true", help="reset every partition the group has committed offsets for"
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-earliest", action="store_true", help="to the first offset still in the log")
    target.add_argument("--to-latest", action="store_true", help="to the log end offset (skip everything)")
    target.add_argument(
        "--to-datetime",
        type=_datetime_ms,
        metavar="ISO-8601",
        help="to the first record at or after this time, e.g. 2026-11-27T10:00:00Z or "
        "2026-11-27T11:00:00+01:00 (no zone: local time); the log end offset where no record is that new",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only show the new offsets (the default)")
    mode.add_argument("--execute", action="store_true", help="commit the new offsets")
    p.set_defaults(func=_wrap("groups reset-offsets", _groups_reset_offsets))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def _config_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value


def _topic_spec(text: str) -> tuple[str, list[int] | None]:
    name, sep, parts = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not TOPIC or TOPIC:PARTITION,...")
    if not sep:
        return name, None
    try:
        partitions = sorted({int(p) for p in parts.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: partitions must be numbers, e.g. {name}:0,1") from None
    if not partitions or partitions[0] < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: partitions must be numbers, e.g. {name}:0,1")
    return name, partitions


def _datetime_ms(text: str) -> int:
    """ISO-8601 date-time to epoch milliseconds; without a zone it is local time (as Kafka's tool)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 date-time such as 2026-11-27T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    if moment < _EPOCH:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970-01-01T00:00:00Z")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


# -- running a command --------------------------------------------------------------------------


def _wrap(name: str, command: Callable[[argparse.Namespace, _Session], int]) -> Callable[[argparse.Namespace], int]:
    """Connect, run ``command``, and turn every expected failure into one line on stderr."""

    def run(args: argparse.Namespace) -> int:
        if args.verbose:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
        else:
            # kafka-python logs connection failures as warnings; they would repeat our one-line error.
            logging.getLogger("kafka").addHandler(logging.NullHandler())
            logging.getLogger("kafka").propagate = False
        try:
            with _connect(args.bootstrap_servers, args.timeout) as session:
                return command(args, session)
        except CliError as exc:
            print(f"outbox streams {name}: {exc}", file=sys.stderr)
            return 1
        except kerrors.KafkaError as exc:
            print(f"outbox streams {name}: {_kafka_error_text(exc)}", file=sys.stderr)
            return 1
        except BrokenPipeError:  # e.g. `| head` stopped reading: not worth a message
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            return 1

    return run


@contextmanager
def _connect(bootstrap_servers: str, timeout_s: float) -> Iterator[_Session]:
    servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
    if not servers:
        raise CliError("--bootstrap-servers is empty")
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=servers,
            client_id=_CLIENT_ID,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except kerrors.KafkaTimeoutError:
        raise CliError(f"cannot reach a broker at {','.join(servers)} (gave up after {timeout_s:g} s)") from None
    except kerrors.KafkaConfigurationError as exc:
        raise CliError(f"bad --bootstrap-servers {bootstrap_servers!r}: {exc}") from None
    try:
        yield _Session(admin, time.monotonic() + timeout_s)
    finally:
        admin.close()


def _kafka_error_text(exc: kerrors.KafkaError) -> str:
    if isinstance(exc, kerrors.KafkaTimeoutError):
        return f"the broker did not answer in time ({exc})"
    if isinstance(exc, kerrors.UnsupportedVersionError):
        api = re.search(r"'(\w+)Request'", str(exc))
        return f"the broker does not support {api.group(1) if api else 'this operation'} ({exc.message})"
    if isinstance(exc, kerrors.KafkaConnectionError):
        return f"lost the connection to the broker ({exc})"
    if isinstance(exc, kerrors.BrokerResponseError) and exc.description:
        return f"{exc.description} ({exc.message})"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _retry(s: _Session, call: Callable[[], _T]) -> _T:
    """Run ``call``, retrying transient broker errors until the command's deadline."""
    while True:
        try:
            return call()
        except _TRANSIENT:
            if time.monotonic() > s.deadline:
                raise
            time.sleep(0.2)


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns two spaces apart; ``None`` shows as ``-``."""
    cells = [list(headers), *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


# -- metadata helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _PartitionInfo:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]


@dataclass(frozen=True)
class _TopicInfo:
    name: str
    internal: bool
    partitions: list[_PartitionInfo]


def _describe_topics(s: _Session, names: Sequence[str] | None) -> dict[str, _TopicInfo | None]:
    """Metadata of ``names`` (all topics if None); an unknown topic maps to None."""
    found: dict[str, _TopicInfo | None] = {}
    for t in _retry(s, lambda: s.admin.describe_topics(list(names) if names is not None else None)):
        name = str(t["name"])
        error = kerrors.for_code(t["error_code"])
        if error is kerrors.UnknownTopicOrPartitionError:
            found[name] = None
            continue
        if error is not kerrors.NoError:
            raise CliError(f"topic {name!r}: {_kafka_error_text(error())}")
        parts = [
            _PartitionInfo(p["partition_index"], p["leader_id"], list(p["replica_nodes"]), list(p["isr_nodes"]))
            for p in t["partitions"]
        ]
        found[name] = _TopicInfo(name, bool(t.get("is_internal")), sorted(parts, key=lambda p: p.partition))
    return found


def _known_topics(s: _Session, names: Sequence[str]) -> dict[str, _TopicInfo]:
    """Metadata of ``names``; any unknown one is an error."""
    found = _describe_topics(s, names)
    missing = [n for n in names if found.get(n) is None]
    if missing:
        raise CliError(f"unknown topic {', '.join(repr(n) for n in missing)}")
    return {n: t for n, t in found.items() if t is not None}


def _log_offsets(s: _Session, partitions: Sequence[TopicPartition], spec: Any) -> dict[TopicPartition, int]:
    """ListOffsets for ``partitions`` (an OffsetSpec or a timestamp in ms); -1 where there is none."""
    if not partitions:
        return {}
    result = _retry(s, lambda: s.admin.list_partition_offsets({tp: spec for tp in partitions}))
    return {tp: int(result[tp].offset) for tp in partitions}


def _committed(s: _Session, group: str) -> dict[TopicPartition, int]:
    offsets = _retry(s, lambda: s.admin.list_group_offsets({group: None}))[group]
    return {tp: int(oam.offset) for tp, oam in offsets.items() if oam.offset >= 0}


@dataclass(frozen=True)
class _Member:
    consumer_id: str
    host: str
    client_id: str
    assignment: list[TopicPartition]


@dataclass(frozen=True)
class _Group:
    group: str
    state: str
    protocol_type: str
    members: list[_Member]


def _describe_group(s: _Session, group: str) -> _Group | None:
    """The group's state and members, or None if the broker does not know the group."""
    while True:
        desc = _retry(s, lambda: s.admin.describe_groups([group]))[group]
        error = desc.get("error")
        if error and any(name in error for name in _TRANSIENT_NAMES) and time.monotonic() < s.deadline:
            time.sleep(0.2)
            continue
        break
    state = str(desc.get("group_state") or "Unknown")
    if error:
        if "GroupIdNotFound" in error:
            return None
        raise CliError(f"cannot describe group {group!r}: {error}")
    members = []
    for m in desc.get("members") or []:
        assignment = m.get("member_assignment")
        tps: list[TopicPartition] = []
        if isinstance(assignment, dict):
            for entry in assignment.get("assigned_partitions") or []:
                tps.extend(TopicPartition(entry["topic"], p) for p in entry["partitions"])
        members.append(
            _Member(str(m["member_id"]), str(m.get("client_host") or ""), str(m.get("client_id") or ""), sorted(tps))
        )
    if state == "Dead" and not members:
        return None
    return _Group(group, state, str(desc.get("protocol_type") or ""), sorted(members, key=lambda m: m.consumer_id))


# -- topics -------------------------------------------------------------------------------------


def _topics_list(args: argparse.Namespace, s: _Session) -> int:
    topics = sorted(
        (t for t in _describe_topics(s, None).values() if t is not None and not (args.exclude_internal and t.internal)),
        key=lambda t: t.name,
    )
    if args.json:
        _print_json(
            {"topics": [{"topic": t.name, "partitions": len(t.partitions), "internal": t.internal} for t in topics]}
        )
    else:
        print(_table(["TOPIC", "PARTITIONS"], [[t.name, len(t.partitions)] for t in topics]))
    return 0


def _topics_create(args: argparse.Namespace, s: _Session) -> int:
    configs = dict(args.config)
    spec: dict[str, Any] = {"configs": configs}
    if args.partitions is not None:
        spec["num_partitions"] = args.partitions
    if args.replication_factor is not None:
        spec["replication_factor"] = args.replication_factor
    response = s.admin.create_topics({args.topic: spec}, raise_errors=False)
    for result in response["topics"]:
        error = kerrors.for_code(result["error_code"])
        if error is kerrors.TopicAlreadyExistsError:
            raise CliError(f"topic {args.topic!r} already exists")
        if error is not kerrors.NoError:
            detail = result.get("error_message") or error.description
            raise CliError(f"cannot create topic {args.topic!r}: {detail} ({error.message})")
    # CreateTopics returns before every broker has the leaders: wait so the topic is usable at once.
    s.admin.wait_for_topics([args.topic], timeout_ms=max(1, int((s.deadline - time.monotonic()) * 1000)))
    info = _known_topics(s, [args.topic])[args.topic]
    replication = len(info.partitions[0].replicas) if info.partitions else 0
    if args.json:
        _print_json(
            {
                "topic": info.name,
                "partitions": len(info.partitions),
                "replication_factor": replication,
                "configs": configs,
            }
        )
    else:
        print(f"Created topic {info.name} ({len(info.partitions)} partitions, replication factor {replication}).")
    return 0


def _topics_describe(args: argparse.Namespace, s: _Session) -> int:
    names = list(dict.fromkeys(args.topic))
    topics = _known_topics(s, names) if names else {n: t for n, t in _describe_topics(s, None).items() if t is not None}
    shown = sorted(
        (t for t in topics.values() if not (args.exclude_internal and t.internal and not names)), key=lambda t: t.name
    )
    tps = [TopicPartition(t.name, p.partition) for t in shown for p in t.partitions if p.leader >= 0]
    starts = _log_offsets(s, tps, OffsetSpec.EARLIEST)
    ends = _log_offsets(s, tps, OffsetSpec.LATEST)
    rows: list[dict[str, Any]] = []
    for t in shown:
        for p in t.partitions:
            tp = TopicPartition(t.name, p.partition)
            rows.append(
                {
                    "topic": t.name,
                    "partition": p.partition,
                    "leader": p.leader if p.leader >= 0 else None,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "start_offset": starts.get(tp),
                    "end_offset": ends.get(tp),
                }
            )
    if args.json:
        _print_json(
            {
                "topics": [
                    {
                        "topic": t.name,
                        "internal": t.internal,
                        "partitions": [
                            {k: v for k, v in r.items() if k != "topic"} for r in rows if r["topic"] == t.name
                        ],
                    }
                    for t in shown
                ]
            }
        )
    else:
        headers = ["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "START-OFFSET", "END-OFFSET"]
        print(_table(headers, [list(r.values()) for r in rows]))
    return 0


def _topics_delete(args: argparse.Namespace, s: _Session) -> int:
    names = list(dict.fromkeys(args.topic))
    _known_topics(s, names)  # refuse the whole request if any is unknown, before deleting any
    response = s.admin.delete_topics(names, raise_errors=False)
    failed = []
    for result in response["topics"]:
        error = kerrors.for_code(result["error_code"])
        if error is kerrors.UnknownTopicOrPartitionError:
            failed.append(f"unknown topic {result['name']!r}")
        elif error is not kerrors.NoError:
            detail = result.get("error_message") or error.description
            failed.append(f"cannot delete topic {result['name']!r}: {detail} ({error.message})")
    if failed:
        raise CliError("; ".join(failed))
    if args.json:
        _print_json({"deleted": names})
    else:
        for name in names:
            print(f"Deleted topic {name}.")
    return 0


# -- groups -------------------------------------------------------------------------------------


def _groups_list(args: argparse.Namespace, s: _Session) -> int:
    listed = _retry(s, s.admin.list_groups)
    groups = sorted(
        (
            {"group": g["group_id"], "state": g.get("group_state"), "protocol_type": g.get("protocol_type")}
            for g in listed
        ),
        key=lambda g: str(g["group"]),
    )
    # ListGroups reports states only from v4 (Kafka 2.6); ask DescribeGroups where it did not.
    stateless = [str(g["group"]) for g in groups if not g["state"]]
    if stateless:
        described = _retry(s, lambda: s.admin.describe_groups(stateless))
        for g in groups:
            if not g["state"]:
                g["state"] = (described.get(g["group"]) or {}).get("group_state") or None
    if args.json:
        _print_json({"groups": groups})
    else:
        print(_table(["GROUP", "STATE"], [[g["group"], g["state"]] for g in groups]))
    return 0


def _groups_describe(args: argparse.Namespace, s: _Session) -> int:
    if args.all_groups:
        names = sorted(str(g["group_id"]) for g in _retry(s, s.admin.list_groups))
    else:
        names = list(dict.fromkeys(args.group))
    documents = []
    for name in names:
        group = _describe_group(s, name)
        committed = _committed(s, name)
        if group is None and not committed:
            raise CliError(f"consumer group {name!r} does not exist")
        documents.append(_group_document(s, name, group, committed))
    if args.json:
        _print_json({"groups": documents})
        return 0
    headers = [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]
    rows: list[list[object]] = []
    for doc in documents:
        if not doc["members"]:
            print(f"Consumer group {doc['group']!r} has no active members.", file=sys.stderr)
        rows.extend([doc["group"], *r.values()] for r in doc["partitions"])
        # Members without partitions still show, as in Kafka's tool.
        assigned = {r["consumer_id"] for r in doc["partitions"]}
        rows.extend(
            [doc["group"], None, None, None, None, None, m["consumer_id"], m["host"], m["client_id"]]
            for m in doc["members"]
            if m["consumer_id"] not in assigned
        )
    print(_table(headers, rows))
    return 0


def _group_document(
    s: _Session, name: str, group: _Group | None, committed: dict[TopicPartition, int]
) -> dict[str, Any]:
    members = group.members if group is not None else []
    owner = {tp: m for m in members for tp in m.assignment}
    partitions = sorted(set(committed) | set(owner))
    existing = _describe_topics(s, sorted({tp.topic for tp in partitions}))
    live = [tp for tp in partitions if (t := existing.get(tp.topic)) is not None and tp.partition < len(t.partitions)]
    ends = _log_offsets(s, live, OffsetSpec.LATEST)
    rows = []
    for tp in partitions:
        current, end = committed.get(tp), ends.get(tp)
        m = owner.get(tp)
        rows.append(
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "current_offset": current,
                "log_end_offset": end,
                "lag": max(end - current, 0) if current is not None and end is not None else None,
                "consumer_id": m.consumer_id if m else None,
                "host": m.host if m else None,
                "client_id": m.client_id if m else None,
            }
        )
    return {
        "group": name,
        "state": group.state if group is not None else "Empty",
        "protocol_type": group.protocol_type if group is not None else "",
        "members": [
            {
                "consumer_id": m.consumer_id,
                "host": m.host,
                "client_id": m.client_id,
                "assignment": [{"topic": tp.topic, "partition": tp.partition} for tp in m.assignment],
            }
            for m in members
        ],
        "partitions": rows,
    }


def _groups_reset_offsets(args: argparse.Namespace, s: _Session) -> int:
    name = args.group
    group = _describe_group(s, name)
    if group is not None and (group.members or group.state not in ("Empty", "Dead")):
        raise CliError(
            f"offsets can only be reset while group {name!r} is inactive, but it is {group.state} "
            f"with {len(group.members)} member(s); stop its consumers first"
        )
    committed = _committed(s, name)
    if args.all_topics:
        if not committed:
            raise CliError(f"group {name!r} has no committed offsets; name the topics with --topic")
        targets = sorted(committed)
        _known_topics(s, sorted({tp.topic for tp in targets}))
    else:
        topics = _known_topics(s, list(dict.fromkeys(t for t, _ in args.topic)))
        chosen: set[TopicPartition] = set()
        for topic, parts in args.topic:
            count = len(topics[topic].partitions)
            wanted = range(count) if parts is None else parts
            bad = [p for p in wanted if p >= count]
            if bad:
                raise CliError(f"topic {topic!r} has {count} partition(s); there is no partition {bad[0]}")
            chosen.update(TopicPartition(topic, p) for p in wanted)
        targets = sorted(chosen)

    if args.to_earliest:
        new = _log_offsets(s, targets, OffsetSpec.EARLIEST)
    elif args.to_latest:
        new = _log_offsets(s, targets, OffsetSpec.LATEST)
    else:
        found = _log_offsets(s, targets, int(args.to_datetime))
        ends = _log_offsets(s, targets, OffsetSpec.LATEST)
        # No record at or after the time: the end of the log, as Kafka's tool does.
        new = {tp: found[tp] if found[tp] >= 0 else ends[tp] for tp in targets}

    if args.execute:
        results = _retry(
            s,
            lambda: s.admin.alter_group_offsets(name, {tp: OffsetAndMetadata(new[tp], "", None) for tp in targets}),
        )
        failures = [(tp, err) for tp, err in sorted(results.items()) if err is not kerrors.NoError]
        if failures:
            tp, err = failures[0]
            more = f" (and {len(failures) - 1} more partitions)" if len(failures) > 1 else ""
            raise CliError(f"committing {tp.topic}:{tp.partition} failed: {_kafka_error_text(err())}{more}")

    rows = [
        {"topic": tp.topic, "partition": tp.partition, "current_offset": committed.get(tp), "new_offset": new[tp]}
        for tp in targets
    ]
    if args.json:
        _print_json({"group": name, "executed": bool(args.execute), "partitions": rows})
    else:
        print(
            _table(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"], [[name, *r.values()] for r in rows])
        )
        if not args.execute:
            print("Dry run: nothing was committed; add --execute to apply.", file=sys.stderr)
    return 0
