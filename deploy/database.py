"""Talking to a PostgreSQL database named by URL: connect, create/drop, read the revision."""
from __future__ import annotations

import time
from contextlib import closing
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from .errors import DatabaseError


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg2://) as libpq accepts it."""
    scheme, sep, rest = url.partition("://")
    return ("postgresql" + sep + rest) if scheme.startswith("postgres") else url


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(libpq_url(url))._replace(path="/" + name))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def connect(url: str, *, attempts: int = 20):
    """Connect, retrying briefly while a just-started server is still starting up."""
    for attempt in range(attempts):
        try:
            return psycopg2.connect(libpq_url(url), connect_timeout=3)
        except psycopg2.OperationalError as exc:
            if "starting up" in str(exc) and attempt + 1 < attempts:
                time.sleep(0.25)
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseError(
                f"cannot connect to {redact(url)}: {reason}",
                hint="start it (`inv db.up` for the local one) or fix DATABASE_URL",
            ) from None
    raise AssertionError("unreachable")


def create_database(url: str, name: str, *, exist_ok: bool = False) -> str:
    """Create database `name` on the server of `url`; return its URL."""
    with closing(connect(with_database(url, "postgres"))) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            elif not exist_ok:
                raise DatabaseError(f"database {name} already exists on {redact(url)}")
    return with_database(url, name)


def drop_database(url: str, name: str) -> None:
    """Drop database `name` on the server of `url`, disconnecting its sessions."""
    with closing(connect(with_database(url, "postgres"))) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def current_revisions(url: str) -> tuple[str, ...]:
    """The revisions in alembic_version, sorted; () for a database never migrated."""
    with closing(connect(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not cur.fetchone()[0]:
            return ()
        cur.execute("SELECT version_num FROM alembic_version ORDER BY 1")
        return tuple(row[0] for row in cur.fetchall())
