"""Alembic environment for the app, run through Flask-Migrate.

Every online run (upgrade, downgrade, autogenerate, check):
- sets `lock_timeout` and `statement_timeout` on the migration connection, so
  that an ALTER waiting behind a long transaction gives up instead of stalling
  every query queued behind it;
- holds a PostgreSQL advisory lock, so that two upgrades never run at once:
  a second one waits up to MIGRATION_LOCK_WAIT seconds, then fails clearly,
  naming the session that holds the lock.

Offline (`--sql`) output starts with the same SET statements.
"""
import logging
import os
import re
import time
from logging.config import fileConfig

from alembic import context
from flask import current_app
from sqlalchemy import text

config = context.config
fileConfig(config.config_file_name)
logger = logging.getLogger("alembic.env")

# 5s: a migration that cannot get its lock within 5s is queued in front of
# application queries, which then wait too; failing fast and retrying later
# is cheaper than an outage. 10min: ends a runaway statement (a missed WHERE,
# a rewrite of a huge table) well before it becomes the incident.
LOCK_TIMEOUT = os.environ.get("MIGRATION_LOCK_TIMEOUT", "5s")
STATEMENT_TIMEOUT = os.environ.get("MIGRATION_STATEMENT_TIMEOUT", "10min")
LOCK_WAIT_SECONDS = os.environ.get("MIGRATION_LOCK_WAIT", "60")
ADVISORY_LOCK_KEY = 0x616C656D626963  # "alembic": one key for every migration run
_DURATION = re.compile(r"^\d+\s*(us|ms|s|min|h|d)?$")


def _checked_settings() -> tuple[str, str, float]:
    for name, value in (
        ("MIGRATION_LOCK_TIMEOUT", LOCK_TIMEOUT),
        ("MIGRATION_STATEMENT_TIMEOUT", STATEMENT_TIMEOUT),
    ):
        if not _DURATION.match(value):
            raise SystemExit(
                f"{name}={value!r} is not a PostgreSQL duration (e.g. 5s, 500ms, 10min)"
            )
    try:
        wait = float(LOCK_WAIT_SECONDS)
    except ValueError:
        raise SystemExit(
            f"MIGRATION_LOCK_WAIT={LOCK_WAIT_SECONDS!r} is not a number of seconds"
        ) from None
    return LOCK_TIMEOUT, STATEMENT_TIMEOUT, wait


def get_engine():
    return current_app.extensions["migrate"].db.engine


def get_metadata():
    return current_app.extensions["migrate"].db.metadata


def _lock_holder(connection) -> str:
    row = connection.execute(
        text(
            "SELECT a.pid, a.application_name, a.client_addr, a.backend_start"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
        ),
        {"key": ADVISORY_LOCK_KEY},
    ).first()
    if row is None:
        return "a session that has just ended"
    return f"pid {row.pid} ({row.application_name or 'no name'}, from {row.client_addr or 'local socket'}, connected {row.backend_start:%Y-%m-%d %H:%M:%S})"


def _take_migration_lock(connection, wait: float) -> None:
    deadline = time.monotonic() + wait
    announced = False
    while True:
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        ).scalar()
        connection.commit()
        if got:
            return
        holder = _lock_holder(connection)
        connection.commit()
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"another migration is running (held by {holder}); waited {wait:g}s. "
                "Wait for it to finish and run the upgrade again, or raise MIGRATION_LOCK_WAIT."
            )
        if not announced:
            logger.info("Waiting for another migration to finish (lock held by %s)", holder)
            announced = True
        time.sleep(0.2)


def _prepare_session(connection, lock_timeout: str, statement_timeout: str) -> None:
    for name, value in (
        ("lock_timeout", lock_timeout),
        ("statement_timeout", statement_timeout),
        ("application_name", "migrations"),
    ):
        connection.execute(text("SELECT set_config(:n, :v, false)"), {"n": name, "v": value})
    connection.commit()


def run_migrations_offline():
    """Emit the SQL instead of running it (`--sql`)."""
    lock_timeout, statement_timeout, _ = _checked_settings()
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=get_metadata(),
        literal_binds=True,
    )
    with context.begin_transaction():
        context.execute(f"SET lock_timeout = '{lock_timeout}'")
        context.execute(f"SET statement_timeout = '{statement_timeout}'")
        context.run_migrations()


def run_migrations_online():
    """Run against the database, under the migration lock and the timeouts."""
    lock_timeout, statement_timeout, wait = _checked_settings()

    def process_revision_directives(context, revision, directives):
        # Never write a revision that does nothing.
        if getattr(config.cmd_opts, "autogenerate", False):
            if directives[0].upgrade_ops.is_empty():
                directives[:] = []
                logger.info("No changes in schema detected.")

    conf_args = current_app.extensions["migrate"].configure_args
    conf_args.setdefault("process_revision_directives", process_revision_directives)

    with get_engine().connect() as connection:
        _prepare_session(connection, lock_timeout, statement_timeout)
        _take_migration_lock(connection, wait)
        try:
            context.configure(connection=connection, target_metadata=get_metadata(), **conf_args)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            try:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                connection.commit()
            except Exception:  # the connection is gone; so is its lock
                pass


config.set_main_option(
    "sqlalchemy.url",
    get_engine().url.render_as_string(hide_password=False).replace("%", "%%"),
)
if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
