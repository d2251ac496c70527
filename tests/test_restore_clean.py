"""A restore brings the database back to exactly the dump: what later migrations created
(tables, foreign keys into dumped tables, types, functions, schemas) is gone, and none of it
makes pg_restore --clean fail half-way. The server tool's restore, on a real PostgreSQL."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy" / "servertool"))
import dumps  # noqa: E402  (a server script: its modules import each other by name)

BEFORE = """
CREATE TABLE boards (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE cards (id serial PRIMARY KEY, board_id int NOT NULL REFERENCES boards, title text);
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('e2b8f4a6c913');
INSERT INTO boards (name) VALUES ('kept'), ('also kept');
INSERT INTO cards (board_id, title) VALUES (1, 'a'), (2, 'b');
"""

LATER_MIGRATIONS = """
CREATE TYPE mood AS ENUM ('ok', 'meh');
CREATE TABLE labels (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     board_id int NOT NULL REFERENCES boards ON DELETE CASCADE, mood mood);
INSERT INTO labels (board_id, mood) VALUES (1, 'ok');
ALTER TABLE boards ADD COLUMN pinned_card int;
ALTER TABLE boards ADD CONSTRAINT boards_pinned_card_fkey FOREIGN KEY (pinned_card) REFERENCES cards;
UPDATE boards SET pinned_card = 1 WHERE id = 1;
CREATE FUNCTION label_count(b int) RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM labels WHERE board_id = b';
CREATE VIEW busy_boards AS SELECT b.id, label_count(b.id) FROM boards b;
CREATE SCHEMA reports;
CREATE TABLE reports.daily (day date PRIMARY KEY, board_id int REFERENCES public.boards);
CREATE SEQUENCE standalone_counter;
INSERT INTO boards (name) VALUES ('written later');
UPDATE alembic_version SET version_num = 'a0d0a0d0beef';
"""


def execute(url: str, sql: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def backed_up(database_url, tmp_path, monkeypatch):
    """A database with a dump of its first state in tmp_path/backups, the tool pointed at it."""
    execute(database_url, BEFORE)
    folder = tmp_path / "backups"
    folder.mkdir()
    dumped = subprocess.run(["pg_dump", "--format=directory", "--file", str(folder / "b1.dump"), database_url],
                            capture_output=True, text=True)
    assert dumped.returncode == 0, dumped.stderr
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url, folder


def test_a_restore_to_before_table_creating_migrations_drops_what_they_made_and_succeeds(backed_up):
    url, folder = backed_up
    execute(url, LATER_MIGRATIONS)
    result = dumps.restore(str(folder), "b1", jobs=2)
    assert result["ok"], result
    assert result["revision"] == "e2b8f4a6c913"
    assert result["row_counts"] == {"public.alembic_version": 1, "public.boards": 2, "public.cards": 2}
    assert sorted(result["dropped"]) == sorted([
        "fk constraint public.boards.boards_pinned_card_fkey", "fk constraint public.labels.labels_board_id_fkey",
        "fk constraint reports.daily.daily_board_id_fkey", "table public.labels", "table reports.daily",
        "view public.busy_boards", "sequence public.standalone_counter", "type public.mood",
        "function public.label_count(integer)", "schema reports"])
    assert execute(url, "SELECT string_agg(name, ',' ORDER BY id) FROM boards") == [("kept,also kept",)]
    assert execute(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'pinned_card'") == [(0,)]
    leftovers = execute(url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'reports' UNION ALL "
                             "SELECT count(*) FROM pg_type WHERE typname = 'mood' UNION ALL "
                             "SELECT count(*) FROM pg_proc WHERE proname = 'label_count'")
    assert leftovers == [(0,), (0,), (0,)]


def test_a_restore_over_an_unchanged_database_drops_nothing(backed_up):
    url, folder = backed_up
    result = dumps.restore(str(folder), "b1", jobs=2)
    assert result["ok"] and result["dropped"] == [], result


def test_database_names_from_the_server_are_quoted_so_a_crafted_name_drops_nothing_else(database_url, monkeypatch):
    from pgenv import create_database, databases_starting, drop_database

    monkeypatch.setenv("DATABASE_URL", database_url)
    victim = database_url.rsplit("/", 1)[1]
    crafted = f'flask_deploy_restore_check_";DROP DATABASE "{victim}'
    create_database(crafted)
    assert crafted in databases_starting("flask_deploy_restore_check_")
    drop_database(crafted)
    assert crafted not in databases_starting("flask_deploy_restore_check_")
    assert execute(database_url, "SELECT current_database()") == [(victim,)]  # still there
