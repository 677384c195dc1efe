"""The ``outbox`` command: one entry point for every part of the platform."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="outbox",
        description="Outbox Streams: transactional outbox, relay, stream store and consumer SDK.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    streams_parser = sub.add_parser("streams", help="run and operate the built-in stream store")
    from streams.cli import add_subcommands

    add_subcommands(streams_parser)
    db_parser = sub.add_parser("db", help="create the outbox table, print its SQL, grant roles")
    from outbox.db_cli import add_db_subcommands

    add_db_subcommands(db_parser)
    dlq_parser = sub.add_parser("dlq", help="show dead letters of consumers and replay them")
    from consumers.cli import add_dlq_subcommands

    add_dlq_subcommands(dlq_parser)
    from relay.cli import add_relay_command, add_status_command

    add_relay_command(sub)
    add_status_command(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
