"""A project-owned PostgreSQL cluster for local work (`inv db.up/down/reset`).

initdb into an ignored folder, listen on a free port on 127.0.0.1 only, and
record the URL so that it is the default when DATABASE_URL is not set. As
root, the cluster runs as the `postgres` system user. Durability is traded
for speed (fsync off): this database is rebuilt from the migrations at will.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from ..database import create_database, drop_database
from ..errors import CommandFailed, DatabaseError
from .postgres_bin import check_owner_can_reach, find_bindir, give_to_service_user, run_pg

SUPERUSER = "postgres"

SETTINGS = """\
# Written by the toolkit on every start; edit deploy/local/database.py instead.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """The cluster under `root`: data/, run/ (its log) and cluster.json (its port)."""

    root: Path
    database: str = "app"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def log_file(self) -> Path:
        return self.root / "run" / "postgres.log"

    def port(self) -> int | None:
        try:
            return int(json.loads(self.state_file.read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None

    def url_for(self, database: str) -> str:
        port = self.port()
        if port is None:
            raise DatabaseError("the local database was never started", hint="inv db.up")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}"

    def url(self) -> str:
        """The app database's URL; fails with the fix when the cluster is not running."""
        if not self.is_running():
            raise DatabaseError(
                "no database: DATABASE_URL is not set and the local database is not running",
                hint="inv db.up (or set DATABASE_URL)",
            )
        return self.url_for(self.database)

    def is_running(self) -> bool:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        return self.port() is not None

    def up(self) -> str:
        """Create (first time) and start the cluster, and its app database; return the URL."""
        if self.is_running():
            self.create_database(self.database, exist_ok=True)
            return self.url()
        bindir = find_bindir()
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.data, self.log_file.parent):
            folder.mkdir(mode=0o700, exist_ok=True)
            give_to_service_user(folder)
        check_owner_can_reach(self.data)
        if not (self.data / "PG_VERSION").exists():
            run_pg(
                [str(bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                 "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"],
                hint=f"remove {self.data} and run `inv db.up` again",
            )
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write("\ninclude_if_exists = 'toolkit.conf'\n")
        self._start(bindir)
        self.create_database(self.database, exist_ok=True)
        return self.url()

    def _start(self, bindir: Path, attempts: int = 3) -> None:
        for attempt in range(attempts):
            port = free_port()
            (self.data / "toolkit.conf").write_text(SETTINGS.format(port=port))
            try:
                run_pg(
                    [str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file),
                     "-w", "-t", "60", "start"],
                )
            except CommandFailed as exc:
                log = self.log_file.read_text() if self.log_file.exists() else ""
                if "could not bind" in log and attempt + 1 < attempts:
                    continue  # another process took the port between our probe and the start
                raise DatabaseError(
                    f"the local PostgreSQL did not start:\n{exc}\n  log: {self.log_file}",
                    hint=f"read {self.log_file}; `inv db.down` then `inv db.up` retries",
                ) from None
            self.state_file.write_text(json.dumps({"port": port, "data": str(self.data)}))
            return

    def down(self) -> bool:
        """Stop the cluster; False when it was not running."""
        if not self.is_running():
            return False
        run_pg([str(find_bindir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        return True

    def destroy(self) -> None:
        """Stop the cluster and remove everything under its root."""
        self.down()
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        return create_database(self.url_for("postgres"), name, exist_ok=exist_ok)

    def drop_database(self, name: str) -> None:
        drop_database(self.url_for("postgres"), name)
