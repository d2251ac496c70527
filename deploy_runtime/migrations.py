"""The migration connection for a project's Alembic `env.py`: timeouts and one-at-a-time.

In a stock Flask-Migrate `env.py`, change one line of `run_migrations_online()`:

    from deploy_runtime.migrations import migration_connection
    ...
    with migration_connection(connectable) as connection:   # was: connectable.connect()

An older template opens it without `with` (`connection = engine.connect()`, closed in a
`finally`): there, `connection = locked_connection(engine)` does the same.

The connection then
- sets `lock_timeout` and `statement_timeout`, so that an ALTER waiting behind a long
  transaction gives up instead of stalling every query queued behind it;
- holds a PostgreSQL advisory lock, so that two upgrades never run at once: a second one
  waits up to MIGRATION_LOCK_WAIT seconds, then fails clearly, naming the session that
  holds the lock. The deploy finds an orphaned migration by this key.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from typing import Iterator

# 5s: a migration that cannot get its lock within 5s is queued in front of application
# queries, which then wait too; failing fast and retrying later is cheaper than an outage.
# 10min: ends a runaway statement (a missed WHERE, a rewrite of a huge table) well before it
# becomes the incident. The deploy passes its stage's values in these variables.
DEFAULTS = {"MIGRATION_LOCK_TIMEOUT": "5s", "MIGRATION_STATEMENT_TIMEOUT": "10min", "MIGRATION_LOCK_WAIT": "60"}
ADVISORY_LOCK_KEY = 0x616C656D626963  # "alembic": one key for every migration run
_DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")
logger = logging.getLogger("alembic.env")


def settings() -> tuple[str, str, float]:
    """(lock_timeout, statement_timeout, seconds to wait for the lock), from the environment."""
    values = {name: os.environ.get(name) or default for name, default in DEFAULTS.items()}
    for name in ("MIGRATION_LOCK_TIMEOUT", "MIGRATION_STATEMENT_TIMEOUT"):
        if not _DURATION.match(values[name]):
            raise SystemExit(f"{name}={values[name]!r} is not a PostgreSQL duration (e.g. 5s, 500ms, 10min)")
    try:
        wait = float(values["MIGRATION_LOCK_WAIT"])
    except ValueError:
        raise SystemExit(f"MIGRATION_LOCK_WAIT={values['MIGRATION_LOCK_WAIT']!r} is not a number of seconds") from None
    return values["MIGRATION_LOCK_TIMEOUT"], values["MIGRATION_STATEMENT_TIMEOUT"], wait


def offline_settings() -> str:
    """The SET statements an offline (`--sql`) script should start with."""
    lock_timeout, statement_timeout, _ = settings()
    return f"SET lock_timeout = '{lock_timeout}';\nSET statement_timeout = '{statement_timeout}';\n"


@contextlib.contextmanager
def migration_connection(engine) -> Iterator:
    """A connection of `engine` with the timeouts set and the migration lock held; the lock is
    released when the block ends (and by PostgreSQL if the process dies)."""
    from sqlalchemy import text

    with engine.connect() as connection:
        _prepare(connection)
        try:
            yield connection
        finally:
            try:
                _finish(connection, "rollback")
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                _finish(connection, "commit")
            except Exception:  # the connection is gone; so is its lock
                pass


def locked_connection(engine):
    """A connection of `engine` prepared as by migration_connection, for an env.py that closes
    it itself; the lock ends with the session (the close of a NullPool engine's connection, as
    that template makes, or the process's end)."""
    connection = engine.connect()
    try:
        _prepare(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _finish(connection, how: str) -> None:
    """Commit or roll back: SQLAlchemy 2.0's (or 1.4's future) Connection has the method; 1.4's
    legacy one does not, and its DBAPI connection does it."""
    method = getattr(connection, how, None)
    if method is not None:
        method()
    else:
        getattr(connection.connection, how)()


def _prepare(connection) -> None:
    """The timeouts and the application name set for the session, then the lock taken."""
    from sqlalchemy import text

    lock_timeout, statement_timeout, wait = settings()
    for name, value in (("lock_timeout", lock_timeout), ("statement_timeout", statement_timeout),
                        ("application_name", "migrations")):
        connection.execute(text("SELECT set_config(:n, :v, false)"), {"n": name, "v": value})
    _finish(connection, "commit")
    _take_lock(connection, wait)


def _take_lock(connection, wait: float) -> None:
    from sqlalchemy import text

    deadline = time.monotonic() + wait
    announced = False
    while True:
        got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar()
        _finish(connection, "commit")
        if got:
            return
        holder = _lock_holder(connection)
        _finish(connection, "commit")
        if time.monotonic() >= deadline:
            raise SystemExit(f"another migration is running (held by {holder}); waited {wait:g}s. "
                             "Wait for it to finish and run the upgrade again, or raise MIGRATION_LOCK_WAIT.")
        if not announced:
            logger.info("Waiting for another migration to finish (lock held by %s)", holder)
            announced = True
        time.sleep(0.2)


def _lock_holder(connection) -> str:
    from sqlalchemy import text

    row = connection.execute(text(
        "SELECT a.pid, a.application_name, a.client_addr, a.backend_start"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted"
        " AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"), {"key": ADVISORY_LOCK_KEY}).first()
    if row is None:
        return "a session that has just ended"
    return (f"pid {row.pid} ({row.application_name or 'no name'}, from {row.client_addr or 'local socket'}, "
            f"connected {row.backend_start:%Y-%m-%d %H:%M:%S})")
