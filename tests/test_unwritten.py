"""The proof a restore after a failed downgrade needs (deploy/servertool/unwritten.py), on a real
PostgreSQL: the migration's own work (DDL, a backfill) is no write; any other transaction's
insert, update, delete or open transaction is, whatever role made it."""
from __future__ import annotations

import sys
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "servertool"))
import dumps  # noqa: E402  (a server script: its modules import each other by name)
from pgenv import revision_xids  # noqa: E402
from unwritten import reasons_not_to_restore  # noqa: E402

SCHEMA = """
CREATE TABLE boards (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('e2b8f4a6c913');
INSERT INTO boards (name) VALUES ('kept'), ('also kept');
"""
MIGRATION = """
ALTER TABLE boards ADD COLUMN note text;
UPDATE boards SET note = 'backfilled';
CREATE TABLE labels (id serial PRIMARY KEY, board_id int REFERENCES boards);
INSERT INTO labels (board_id) VALUES (1);
UPDATE alembic_version SET version_num = 'a0d0a0d0beef';
"""


def execute(url: str, sql: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)


@pytest.fixture
def migrated(database_url, tmp_path, monkeypatch):
    """A pre-deploy backup (with its evidence), then the migration in one transaction; its xids."""
    execute(database_url, SCHEMA)
    monkeypatch.setenv("DATABASE_URL", database_url)
    manifest = dumps.dump(str(tmp_path / "backups"), "b1", None, "predeploy", "custom", 1, 1, content=True)
    execute(database_url, MIGRATION)
    return database_url, manifest, revision_xids()


def test_the_migrations_own_ddl_and_backfill_are_not_writes(migrated):
    url, manifest, xids = migrated
    assert reasons_not_to_restore(manifest, xids) == []


@pytest.mark.parametrize("write, table", [
    ("INSERT INTO boards (name, note) VALUES ('new', NULL)", "public.boards"),
    ("UPDATE boards SET note = 'typed by a user' WHERE id = 2", "public.boards"),  # a column the backup lacks
    ("DELETE FROM boards WHERE id = 2", "public.boards"),  # leaves no row version: the digest sees it
    ("INSERT INTO labels (board_id) VALUES (2)", "public.labels"),  # a table the backup lacks
])
def test_any_other_transactions_write_is_found(migrated, write, table):
    url, manifest, xids = migrated
    execute(url, write)
    reasons = reasons_not_to_restore(manifest, xids)
    assert reasons and all(table in r for r in reasons), reasons


def test_an_open_transaction_that_wrote_is_found(migrated):
    url, manifest, xids = migrated
    with psycopg2.connect(url) as writer, writer.cursor() as cur:
        cur.execute("UPDATE boards SET name = name WHERE id = 1")  # uncommitted: it could commit later
        reasons = reasons_not_to_restore(manifest, xids)
        writer.rollback()
    assert any("has an open transaction that wrote" in r for r in reasons), reasons


def test_without_the_migrations_xids_its_backfill_cannot_be_told_apart(migrated):
    url, manifest, _ = migrated
    assert any("written since the backup by another transaction" in r for r in reasons_not_to_restore(manifest, []))


def test_a_backup_without_evidence_proves_nothing(migrated):
    url, manifest, xids = migrated
    del manifest["content"]
    assert "holds no row digests" in reasons_not_to_restore(manifest, xids)[0]
