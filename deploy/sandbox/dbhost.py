"""The database host's PostgreSQL: Debian's postgresql-15 package under systemd
(`postgresql@15-main`), listening on the host's sandbox address, password
authentication (scram-sha-256) for the application role from the sandbox
network only, and peer authentication for the postgres superuser on the host's
own socket.

The password is generated once and kept in the sandbox's secrets folder (root
only) on this machine and, on the servers, in the env file of each host. It is
sent to PostgreSQL as a SCRAM verifier on standard input, never as an argument.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from .hostfs import write_as
from .spec import DATABASE, POSTGRES_PORT, Host, Sandbox
from .system import in_host, write_file

VERSION, CLUSTER = "15", "main"
UNIT = f"postgresql@{VERSION}-{CLUSTER}.service"
ENABLED = "postgresql.service"   # starts every cluster of the host, as Debian installs it
CONFIG = f"/etc/postgresql/{VERSION}/{CLUSTER}"

SETTINGS = """\
# Written by the sandbox; `inv sandbox.up` rewrites it.
listen_addresses = '{address}'
port = {port}
password_encryption = 'scram-sha-256'
max_connections = 200
# A session whose client has gone (its host rebooted) ends within a second, even mid-query,
# and its transaction with it: no lock held for a dead client.
client_connection_check_interval = 1s
# A throwaway server: durability is traded for speed, as in the local cluster.
fsync = off
synchronous_commit = off
full_page_writes = off
"""

HBA = """\
# Written by the sandbox. The superuser only on the host's own socket;
# the application role from the sandbox network, with its password.
local   all   postgres                peer
host    all   {role}      {subnet}    scram-sha-256
"""


def write_config(sandbox: Sandbox, db: Host) -> bool:
    """The cluster's settings and pg_hba.conf; True when either changed."""
    settings = write_as(db, f"{CONFIG}/conf.d/sandbox.conf",
                        SETTINGS.format(address=db.address, port=POSTGRES_PORT), 0o644, owner="postgres")
    hba = write_as(db, f"{CONFIG}/pg_hba.conf", HBA.format(role=DATABASE, subnet=sandbox.network),
                   0o640, owner="postgres")
    return settings or hba


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802/7677), computed here."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def password(sandbox: Sandbox) -> str:
    """The application role's password, generated on first use."""
    path = sandbox.secrets_dir / "database-password"
    if not path.exists():
        sandbox.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file(path, secrets.token_urlsafe(24), 0o600)
    return path.read_text().strip()


def database_url(sandbox: Sandbox) -> str:
    return sandbox.database_url_template.format(password=password(sandbox))


def is_running(db: Host) -> bool:
    return in_host(db, ["systemctl", "is-active", "--quiet", UNIT], check=False).returncode == 0


def start(db: Host) -> bool:
    """Start the cluster (`systemctl start`); False when it was running."""
    if is_running(db):
        return False
    in_host(db, ["systemctl", "start", UNIT], hint="read the db host's log: journalctl -u " + UNIT)
    return True


def stop(db: Host) -> bool:
    """Stop the cluster (`systemctl stop`: a fast shutdown, open sessions are cut); False when it was stopped."""
    if not is_running(db):
        return False
    in_host(db, ["systemctl", "stop", UNIT])
    return True


def psql(db: Host, sql: str, database: str = "postgres", timeout: float = 60) -> str:
    """Run `sql` (from standard input) as the superuser over the host's own socket."""
    return in_host(db, ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", database],
                   user="postgres", input=sql, timeout=timeout).stdout


def ensure_app_database(sandbox: Sandbox, db: Host) -> None:
    """The application role (its password set from the verifier) and its database."""
    verifier = scram_verifier(password(sandbox))
    psql(db, f"""
        SELECT 'CREATE ROLE {DATABASE} LOGIN CREATEDB' WHERE NOT EXISTS
            (SELECT FROM pg_roles WHERE rolname = '{DATABASE}') \\gexec
        ALTER ROLE {DATABASE} PASSWORD '{verifier}';
        SELECT 'CREATE DATABASE {DATABASE} OWNER {DATABASE}' WHERE NOT EXISTS
            (SELECT FROM pg_database WHERE datname = '{DATABASE}') \\gexec
    """)


# What fab setup's pgbackrest engine (pgbr_setup.py) adds to the db host.
PGBACKREST_FILES = ("/etc/pgbackrest/flask-deploy", "/etc/flask-deploy", "/usr/local/sbin/flask-deploy-pgbackrest",
                    "/var/lib/postgresql/.ssh")


def reset_archiving(db: Host) -> None:
    """The cluster as the sandbox made it: no WAL archiving (a restart when it was on), and none of
    the pgbackrest engine's files."""
    in_host(db, ["sh", "-c", 'rm -rf "$@" /etc/sudoers.d/flask-deploy-*-pgbackrest', "reset", *PGBACKREST_FILES])
    if psql(db, "SHOW archive_mode").strip() == "on":
        psql(db, "ALTER SYSTEM RESET archive_mode; ALTER SYSTEM RESET archive_command;")
        in_host(db, ["systemctl", "restart", UNIT])


def reset(db: Host) -> None:
    """Drop every database but postgres and the templates, then an empty app database."""
    names = psql(db, "SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')")
    for name in names.split():
        quoted = name.replace('"', '""')
        psql(db, f'DROP DATABASE "{quoted}" WITH (FORCE)')
    psql(db, f"CREATE DATABASE {DATABASE} OWNER {DATABASE}")
