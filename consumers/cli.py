"""``outbox dlq ...``: show dead letters and replay them to their original topics.

Only command-line entry points read environment variables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from consumers.dlq import DeadLetter, list_dead_letters, replay_dead_letters
from consumers.errors import ConsumerError

__all__ = ["add_dlq_subcommands"]

BOOTSTRAP_ENV = "OUTBOX_BOOTSTRAP_SERVERS"


def add_dlq_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add ``list`` and ``replay`` under ``parser`` (the ``dlq`` command)."""
    sub = parser.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        default = os.environ.get(BOOTSTRAP_ENV, "127.0.0.1:9092")
        p.add_argument(
            "--bootstrap-servers",
            default=default,
            help=f"HOST:PORT[,HOST:PORT...] of the store or Kafka [{BOOTSTRAP_ENV}; default: %(default)s]",
        )
        p.add_argument("--topic", required=True, help="the dead-letter topic, e.g. orders.dlq")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("list", help="show the records of a dead-letter topic", description="Show every dead letter.")
    common(p)
    p.set_defaults(func=_list)

    p = sub.add_parser(
        "replay",
        help="re-publish dead letters to their original topic",
        description="Re-publish chosen dead letters (key, value, original headers) to their original topic; "
        "consumers skip events they already applied, so replaying twice applies an event once.",
    )
    common(p)
    choose = p.add_mutually_exclusive_group(required=True)
    choose.add_argument(
        "--record", action="append", metavar="PARTITION:OFFSET", help="a dead letter by its id (repeatable)"
    )
    choose.add_argument("--event-id", action="append", help="dead letters of this event id (repeatable)")
    choose.add_argument("--all", action="store_true", help="every dead letter of the topic")
    p.set_defaults(func=_replay)


def _fail(message: str) -> int:
    sys.stderr.write(f"outbox dlq: {message}\n")
    return 1


def _as_dict(d: DeadLetter) -> dict[str, object]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "key": None if d.key is None else d.key.decode(errors="replace"),
        "original": f"{d.original_topic}/{d.original_partition}@{d.original_offset}",
        "group": d.group,
        "attempts": d.attempts,
        "error": d.error,
        "dead_lettered_at": d.dead_lettered_at,
    }


def _print(letters: list[DeadLetter], as_json: bool) -> None:
    rows = [_as_dict(d) for d in letters]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("(no dead letters)")
        return
    columns = ["id", "event_id", "event_type", "key", "original", "group", "attempts", "error"]
    cells = [[("" if r[c] is None else str(r[c]))[:80] for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _list(args: argparse.Namespace) -> int:
    try:
        letters = list_dead_letters(args.bootstrap_servers, args.topic)
    except ConsumerError as exc:
        return _fail(str(exc))
    _print(letters, args.json)
    return 0


def _replay(args: argparse.Namespace) -> int:
    try:
        if args.event_id:
            wanted = set(args.event_id)
            letters = replay_dead_letters(args.bootstrap_servers, args.topic, select=lambda d: d.event_id in wanted)
            if not letters:
                return _fail(f"no dead letter in {args.topic} has event id {', '.join(sorted(wanted))}")
        else:
            letters = replay_dead_letters(args.bootstrap_servers, args.topic, records=args.record)
    except ConsumerError as exc:
        return _fail(str(exc))
    if args.json:
        _print(letters, True)
    else:
        for d in letters:
            print(f"replayed {args.topic} {d.id} (event {d.event_id}) to {d.original_topic}")
        if not letters:
            print("(no dead letters)")
    return 0
