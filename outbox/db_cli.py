"""``outbox db ...``: create the outbox table, print its SQL, grant least privilege.

Only this module (and other command-line entry points) reads environment variables.
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg

from outbox._table import DEFAULT_BUCKETS, DEFAULT_SCHEMA, DEFAULT_TABLE
from outbox.errors import OutboxError
from outbox.schema import grant, migrate, sql_text

__all__ = ["add_db_subcommands"]

DATABASE_URL_ENV = "OUTBOX_DATABASE_URL"
SCHEMA_ENV = "OUTBOX_SCHEMA"
TABLE_ENV = "OUTBOX_TABLE"


def _table_args(parser: argparse.ArgumentParser, *, buckets: bool) -> None:
    parser.add_argument(
        "--schema",
        default=os.environ.get(SCHEMA_ENV, DEFAULT_SCHEMA),
        help=f"schema of the outbox table (created if missing) [{SCHEMA_ENV}; default: %(default)s]",
    )
    parser.add_argument(
        "--table",
        default=os.environ.get(TABLE_ENV, DEFAULT_TABLE),
        help=f"name of the outbox table [{TABLE_ENV}; default: %(default)s]",
    )
    if buckets:
        parser.add_argument(
            "--buckets",
            type=int,
            default=None,
            help="number of key buckets relays split between them; fixed when the table is created "
            f"(default: the table's own, or {DEFAULT_BUCKETS} for a new table)",
        )


def _url_arg(parser: argparse.ArgumentParser) -> None:
    url = os.environ.get(DATABASE_URL_ENV)
    parser.add_argument(
        "--database-url",
        default=url,
        required=url is None,
        help=f"libpq URL or conninfo of the application database [{DATABASE_URL_ENV}]",
    )


def _only_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        choices=("outbox", "consumers"),
        help="only the outbox table, or only the consumer SDK's tables (consumer_offsets, consumer_processed, "
        "consumer_failures, in --schema); default: both",
    )


def add_db_subcommands(parser: argparse.ArgumentParser) -> None:
    """Add ``migrate``, ``sql`` and ``grant`` under ``parser`` (the ``db`` command)."""
    sub = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "migrate",
        help="create or upgrade the outbox table (idempotent, safe to run concurrently)",
        description="Apply the outbox migrations the database lacks, in one transaction.",
    )
    _url_arg(p)
    _table_args(p, buckets=True)
    _only_arg(p)
    p.set_defaults(func=_migrate)

    p = sub.add_parser(
        "sql",
        help="print the SQL of every migration, for your own migration tool",
        description="Print the outbox migrations as one script; apply it in one transaction (psql -1 -f).",
    )
    _table_args(p, buckets=True)
    _only_arg(p)
    p.set_defaults(func=_sql)

    p = sub.add_parser(
        "grant",
        help="give the application and relay roles least privilege on the outbox",
        description="The application role may only insert events; the relay role may read and delete them. "
        "Run as the owner of the outbox objects; the roles must exist.",
    )
    _url_arg(p)
    _table_args(p, buckets=False)
    p.add_argument("--app-role", help="role of the application (INSERT only)")
    p.add_argument("--relay-role", help="role of the relay (SELECT, DELETE)")
    p.set_defaults(func=_grant)


def _fail(message: str) -> int:
    sys.stderr.write(f"outbox db: {message}\n")
    return 1


def _migrate(args: argparse.Namespace) -> int:
    from consumers import ConsumerError
    from consumers.schema import migrate as migrate_consumers

    done: list[tuple[str, list[int]]] = []
    try:
        with psycopg.connect(args.database_url) as conn:
            if args.only != "consumers":
                applied = migrate(conn, schema=args.schema, table=args.table, buckets=args.buckets)
                done.append((f"{args.schema}.{args.table}", applied))
            if args.only != "outbox":
                done.append((f"{args.schema} consumer tables", migrate_consumers(conn, schema=args.schema)))
    except (OutboxError, ConsumerError, psycopg.Error) as exc:
        return _fail(str(exc))
    for what, applied in done:
        if applied:
            sys.stdout.write(f"{what}: applied migration(s) {', '.join(f'{v:04d}' for v in applied)}\n")
        else:
            sys.stdout.write(f"{what}: up to date\n")
    return 0


def _sql(args: argparse.Namespace) -> int:
    from consumers import ConsumerError
    from consumers.schema import sql_text as consumers_sql_text

    try:
        parts = []
        if args.only != "consumers":
            buckets = DEFAULT_BUCKETS if args.buckets is None else args.buckets
            parts.append(sql_text(schema=args.schema, table=args.table, buckets=buckets))
        if args.only != "outbox":
            parts.append(consumers_sql_text(schema=args.schema))
        sys.stdout.write("\n".join(parts))
    except (OutboxError, ConsumerError) as exc:
        return _fail(str(exc))
    return 0


def _grant(args: argparse.Namespace) -> int:
    if args.app_role is None and args.relay_role is None:
        return _fail("give --app-role, --relay-role or both")
    try:
        with psycopg.connect(args.database_url) as conn:
            grant(conn, app_role=args.app_role, relay_role=args.relay_role, schema=args.schema, table=args.table)
    except (OutboxError, psycopg.Error) as exc:
        return _fail(str(exc))
    for role, what in ((args.app_role, "INSERT"), (args.relay_role, "SELECT, DELETE")):
        if role is not None:
            sys.stdout.write(f"{role}: {what} on {args.schema}.{args.table}\n")
    return 0
