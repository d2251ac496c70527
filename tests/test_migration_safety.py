"""A stock env.py with migration_connection (deploy_runtime.migrations): concurrent upgrades are
serialized by an advisory lock (the key the deploy ends orphans by); timeouts apply."""
import threading
import time
from contextlib import closing

import psycopg2
import pytest

from conftest import output
from deploy.database import current_revisions
from deploy.local.checks import round_trip
from test_lint_task import add_revision

ADVISORY_KEY = 0x616C656D626963  # written out: a changed key would strand a running deploy's orphan check
HEAD = "e2b8f4a6c913"


def test_every_revision_round_trips(project, database_url):
    from deploy.config import load_project

    assert round_trip(load_project(project.root), database_url) == []


def test_two_upgrades_started_together_apply_once(project, database_url):
    add_revision(project, "5105105105aa", "    op.execute('SELECT pg_sleep(3)')\n"
                 "    op.add_column('cards', sa.Column('slow', sa.Text()))\n")
    procs = []
    start = threading.Barrier(2)

    def upgrade():
        start.wait()
        procs.append(project.flask_db("upgrade"))

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.returncode for p in procs] == [0, 0], [output(p) for p in procs]
    assert any("Waiting for another migration" in output(p) for p in procs)
    assert sum("Running upgrade e2b8f4a6c913 -> 5105105105aa" in output(p) for p in procs) == 1
    assert current_revisions(database_url) == ("5105105105aa",)


def test_an_upgrade_that_cannot_get_the_migration_lock_fails_clearly(project, database_url):
    with closing(psycopg2.connect(database_url)) as holder:
        holder.autocommit = True
        holder.cursor().execute("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
        proc = project.flask_db("upgrade", env={"MIGRATION_LOCK_WAIT": "1"})
    assert proc.returncode != 0
    assert "another migration is running" in output(proc) and "waited 1s" in output(proc)
    assert current_revisions(database_url) == ()


def test_lock_timeout_stops_a_migration_stuck_behind_a_long_transaction(project, database_url):
    assert project.inv("upgrade").returncode == 0
    add_revision(project, "10c410c410c4", "    op.add_column('cards', sa.Column('late', sa.Text()))\n")
    with closing(psycopg2.connect(database_url)) as reader:
        reader.cursor().execute("SELECT count(*) FROM cards")  # holds ACCESS SHARE until rollback
        started = time.monotonic()
        proc = project.flask_db("upgrade", env={"MIGRATION_LOCK_TIMEOUT": "1s"})
        elapsed = time.monotonic() - started
        # Meanwhile the application could still read: the ALTER gave up instead of queueing forever.
        reader.rollback()
    assert proc.returncode != 0
    assert "lock timeout" in output(proc)
    assert elapsed < 30
    assert current_revisions(database_url) == (HEAD,)


def test_a_bad_timeout_setting_is_refused_before_connecting(project, database_url):
    proc = project.flask_db("upgrade", env={"MIGRATION_LOCK_TIMEOUT": "5s; DROP TABLE cards"})
    assert proc.returncode != 0
    assert "is not a PostgreSQL duration" in output(proc)
    assert "Traceback" not in output(proc)
    assert current_revisions(database_url) == ()


def test_locked_connection_holds_the_lock_and_timeouts_until_it_closes_for_an_older_env_py(database_url, monkeypatch):
    """The helper for env.py files that open the connection without `with` (older Flask-Migrate
    templates, with a NullPool engine): the same lock and settings, ended by its close."""
    from sqlalchemy import create_engine, pool, text

    from deploy_runtime.migrations import locked_connection

    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=pool.NullPool)
    monkeypatch.setenv("MIGRATION_LOCK_WAIT", "0.5")
    first = locked_connection(engine)
    try:
        assert first.execute(text("SHOW lock_timeout")).scalar() == "5s"
        assert first.execute(text("SHOW statement_timeout")).scalar() == "10min"
        with pytest.raises(SystemExit, match="another migration is running"):
            locked_connection(engine)
    finally:
        first.close()
    second = locked_connection(engine)  # the lock ended with the first session
    second.close()
