"""``outbox db migrate|sql|grant`` through the real entry point."""

from __future__ import annotations

import psycopg
import pytest

from outbox import sql_text
from outbox.cli import main


def test_db_sql_prints_the_migrations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "sql", "--only", "outbox", "--schema", "s p", "--table", "t", "--buckets", "8"]) == 0
    out = capsys.readouterr().out
    assert out == sql_text(schema="s p", table="t", buckets=8)
    assert 'CREATE TABLE IF NOT EXISTS "s p"."t" (' in out
    assert "% 8) + 8) % 8" in out


def test_db_migrate_reads_the_url_from_the_environment(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    monkeypatch.setenv("OUTBOX_SCHEMA", "app_outbox")
    assert main(["db", "migrate", "--only", "outbox"]) == 0
    assert capsys.readouterr().out == "app_outbox.events: applied migration(s) 0001, 0002, 0003, 0004\n"
    assert main(["db", "migrate", "--only", "outbox", "--table", "events"]) == 0
    assert capsys.readouterr().out == "app_outbox.events: up to date\n"
    assert main(["db", "migrate", "--buckets", "3"]) == 1
    assert "has 64 key buckets, not 3" in capsys.readouterr().err
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM app_outbox.events").fetchone() == (0,)


def test_db_grant_errors_are_reported(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "grant", "--database-url", database_url, "--app-role", "no_such_role"]) == 1
    assert "role 'no_such_role' does not exist" in capsys.readouterr().err
    assert main(["db", "grant", "--database-url", database_url]) == 1
    assert "--app-role, --relay-role or both" in capsys.readouterr().err
    assert main(["db", "migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/x"]) == 1
    assert "outbox db:" in capsys.readouterr().err
