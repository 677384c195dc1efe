"""Migrations: idempotent, safe to run concurrently, and exactly the schema the SQL files describe;
configurable (and quoted) names; least-privilege grants."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from outbox import Event, MigrationError, OutboxError, SchemaError, grant, migrate, publish, read_settings, sql_text
from outbox import sql as sql_files
from outbox._table import OutboxTable
from tests.support._proc import REPO_ROOT
from tests.support.postgres import PostgresServer

CATALOG = {
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = %(schema)s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY 1, 2""",
    "relations": """
        SELECT c.relname, c.relkind, c.reloptions, obj_description(c.oid, 'pg_class')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s ORDER BY 1""",
    "constraints": """
        SELECT r.relname, x.conname, pg_get_constraintdef(x.oid)
        FROM pg_constraint x JOIN pg_class r ON r.oid = x.conrelid JOIN pg_namespace n ON n.oid = r.relnamespace
        WHERE n.nspname = %(schema)s ORDER BY 1, 2""",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %(schema)s ORDER BY 1",
    "triggers": """
        SELECT t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid JOIN pg_namespace n ON n.oid = r.relnamespace
        WHERE n.nspname = %(schema)s AND NOT t.tgisinternal ORDER BY 1""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = %(schema)s ORDER BY 1""",
}


def catalog(url: str, schema: str, table: str) -> dict[str, Any]:
    """Everything the migrations create, as catalog rows (plus the rows they write)."""
    target = OutboxTable(schema, table)
    ph = target.placeholders()
    with psycopg.connect(url, autocommit=True) as conn:
        out: dict[str, Any] = {name: conn.execute(q, {"schema": schema}).fetchall() for name, q in CATALOG.items()}
        out["settings"] = conn.execute(psycopg.sql.SQL("SELECT * FROM {}").format(ph["settings"])).fetchall()
        out["migrations"] = conn.execute(
            psycopg.sql.SQL("SELECT version, name, checksum FROM {} ORDER BY 1").format(ph["migrations"])
        ).fetchall()
    return out


def test_migrate_is_idempotent(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        assert migrate(conn) == [m.version for m in sql_files.migrations()]
        before = catalog(database_url, "outbox", "events")
        assert migrate(conn) == []
        assert migrate(conn, buckets=64) == []
    assert catalog(database_url, "outbox", "events") == before
    assert [v for v, _, _ in before["migrations"]] == [m.version for m in sql_files.migrations()]


def test_each_migration_file_is_idempotent_on_its_own(database_url: str) -> None:
    """Files re-applied by hand (or by a tool that lost its bookkeeping) change nothing."""
    target = OutboxTable()
    with psycopg.connect(database_url) as conn:
        migrate(conn)
    before = catalog(database_url, "outbox", "events")
    with psycopg.connect(database_url) as conn:
        for migration in sql_files.migrations():
            conn.execute(target.render(migration.template).encode())
        conn.commit()
    assert catalog(database_url, "outbox", "events") == before


@pytest.mark.parametrize(("schema", "table"), [("outbox", "events"), ("My App", 'Out"box.Events')])
def test_migrate_builds_exactly_what_the_sql_describes(postgres: PostgresServer, schema: str, table: str) -> None:
    """migrate() in one database, `outbox db sql` applied as a script in another: same catalog."""
    names = [f"mig_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    urls = [postgres.create_database(n) for n in names]
    try:
        with psycopg.connect(urls[0]) as conn:
            migrate(conn, schema=schema, table=table, buckets=16)
        with psycopg.connect(urls[1]) as conn:
            conn.execute(sql_text(schema=schema, table=table, buckets=16).encode())
            conn.commit()
            # and the script's bookkeeping is what migrate() reads: nothing left to apply
            assert migrate(conn, schema=schema, table=table) == []
        migrated, scripted = catalog(urls[0], schema, table), catalog(urls[1], schema, table)
        assert migrated == scripted
        assert {r[0] for r in migrated["relations"]} >= {table, f"{table}_settings", f"{table}_migrations"}
        assert any(name == "bucket" and generated == "s" for _, _, name, *_, generated in migrated["columns"])
        assert migrated["settings"][0][1] == 16
    finally:
        for n in names:
            postgres.drop_database(n)


def test_concurrent_migrations_threads_and_processes(database_url: str) -> None:
    """Four threads and four `outbox db migrate` processes on a fresh database at once."""
    env = {**os.environ, "OUTBOX_DATABASE_URL": database_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "outbox.cli", "db", "migrate", "--only", "outbox"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results: list[Any] = []

    def run() -> None:
        try:
            with psycopg.connect(database_url) as conn:
                results.append(migrate(conn))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert not [r for r in results if isinstance(r, BaseException)], results
    applied_by_threads = [r for r in results if r]
    applied_by_procs = [out for out, _ in outputs if "applied migration(s) 0001, 0002, 0003, 0004" in out]
    assert len(applied_by_threads) + len(applied_by_procs) == 1  # exactly one run did the work
    assert sum("up to date" in out for out, _ in outputs) == 4 - len(applied_by_procs)
    assert [v for v, _, _ in catalog(database_url, "outbox", "events")["migrations"]] == [m.version for m in sql_files.migrations()]


def test_bucket_count_is_fixed_at_creation(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn, buckets=8)
        assert migrate(conn) == []  # keeps the table's 8
        with pytest.raises(MigrationError, match="has 8 key buckets, not 64"):
            migrate(conn, buckets=64)
        assert read_settings(conn).buckets == 8
        with conn.transaction():
            publish(conn, [Event(topic="t", key=f"k{i}", type="t") for i in range(200)])
        got = conn.execute("SELECT DISTINCT bucket FROM outbox.events ORDER BY 1").fetchall()
        assert [b for (b,) in got] == list(range(8))


def test_migrate_refuses_an_open_transaction_and_a_newer_database(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(MigrationError, match="inside one"):
            migrate(conn)
        conn.rollback()
        migrate(conn)
        conn.execute("INSERT INTO outbox.events_migrations (version, name, checksum) VALUES (99, 'future', 'x')")
        conn.commit()
        with pytest.raises(MigrationError, match=r"\[99\] .* upgrade the library"):
            migrate(conn)


def test_edited_migration_is_detected(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn)
        conn.execute("UPDATE outbox.events_migrations SET checksum = 'edited' WHERE version = 2")
        conn.commit()
        with pytest.raises(MigrationError, match=r"0002_doorbell .* different SQL"):
            migrate(conn)


def test_configurable_names_need_quoting(database_url: str) -> None:
    schema, table = "Tenant One", 'Events; DROP TABLE "x"'
    with psycopg.connect(database_url) as conn:
        migrate(conn, schema=schema, table=table)
        with conn.transaction():
            publish(conn, Event(topic="t", key="k", type="t"), schema=schema, table=table)
        got = conn.execute(psycopg.sql.SQL("SELECT key FROM {}").format(psycopg.sql.Identifier(schema, table))).fetchall()
        assert got == [("k",)]
        with pytest.raises(SchemaError, match=r"Tenant One\.events does not exist"):
            publish(conn, Event(topic="t", type="t"), schema=schema)
        conn.rollback()
        settings = read_settings(conn, schema=schema, table=table)
        assert settings.channel == f"{schema}.{table}"
    for bad in ("", "x" * 41, "a$$b"):
        with pytest.raises(OutboxError):
            OutboxTable("s", bad)


@pytest.fixture
def roles(database_url: str) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    app, relay = f"app_{suffix}", f"relay_{suffix}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in (app, relay):
            conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(role)))
    yield app, relay
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in (app, relay):
            conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(role)))
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))


def test_grant_gives_least_privilege(database_url: str, roles: tuple[str, str]) -> None:
    app, relay = roles
    with psycopg.connect(database_url) as conn:
        migrate(conn)
        grant(conn, app_role=app, relay_role=relay)
    denied = psycopg.errors.InsufficientPrivilege
    with psycopg.connect(database_url, user=app) as conn:
        with conn.transaction():
            publish(conn, [Event(topic="t", key="k", type="t"), Event(topic="t", type="t")])
        with conn.transaction():
            publish(conn, Event(topic="t", key="k2", type="t"))
        for statement in (
            "SELECT 1 FROM outbox.events",
            "DELETE FROM outbox.events",
            "UPDATE outbox.events SET key = 'x'",
            "TRUNCATE outbox.events",
            "SELECT * FROM outbox.events_settings",
        ):
            with pytest.raises(denied), conn.transaction():
                conn.execute(statement)
    target = OutboxTable()
    with psycopg.connect(database_url, user=relay) as conn:
        assert read_settings(conn).buckets == 64
        claimed = conn.execute(target.query("claim"), {"buckets": list(range(64)), "limit": 10}).fetchall()
        assert len(claimed) == 3
        conn.execute(target.query("delete"), {"ids": [claimed[0][0]]})
        conn.commit()
        for statement in (
            "INSERT INTO outbox.events (event_id, topic, type, payload, key_hash, created_at) VALUES (gen_random_uuid(), 't', 't', '', 0, now())",
            "UPDATE outbox.events SET key = 'x'",
            "TRUNCATE outbox.events",
        ):
            with pytest.raises(denied), conn.transaction():
                conn.execute(statement)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM outbox.events").fetchone() == (2,)


def test_grant_names_a_missing_role(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        migrate(conn)
        with pytest.raises(OutboxError, match="role 'nobody_here' does not exist: create it first"):
            grant(conn, app_role="nobody_here")
