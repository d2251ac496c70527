"""The database host's PostgreSQL: a real cluster listening on the host's sandbox
address, password authentication (scram-sha-256) for the application role, and
peer authentication for the postgres superuser on the host's own socket.

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
import shutil

from ..local.postgres_bin import find_bindir
from .spec import DATABASE, POSTGRES_PORT, Host, Sandbox
from .system import in_host, write_file

SETTINGS = """\
# Written by the sandbox; `inv sandbox.up` rewrites it.
listen_addresses = '{address}'
port = {port}
unix_socket_directories = '/run/postgresql'
password_encryption = 'scram-sha-256'
max_connections = 200
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


def data_dir() -> str:
    return f"/var/lib/postgresql/{find_bindir().parent.name}/sandbox"


def _pg(db: Host, tool: str, *args: str, **kwargs):
    return in_host(db, [str(find_bindir() / tool), *args], user="postgres", **kwargs)


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
    return _pg(db, "pg_ctl", "-D", data_dir(), "status", check=False).returncode == 0


def initialise(sandbox: Sandbox, db: Host) -> bool:
    """initdb on first use and (re)write the settings; False when the cluster existed."""
    home = db.root / "postgresql"
    home.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.chown(home, "postgres", "postgres")
    logs = db.root / "log" / "postgresql"
    logs.mkdir(mode=0o750, parents=True, exist_ok=True)
    shutil.chown(logs, "postgres", "postgres")
    local_data = home / data_dir().removeprefix("/var/lib/postgresql/")
    created = not (local_data / "PG_VERSION").exists()
    if created:
        local_data.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (local_data, local_data.parent):
            shutil.chown(folder, "postgres", "postgres")
        _pg(db, "initdb", "-D", data_dir(), "-U", "postgres", "--auth-local=peer",
            "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync")
        with open(local_data / "postgresql.conf", "a") as conf:
            conf.write("\ninclude_if_exists = 'sandbox.conf'\n")
    settings = SETTINGS.format(address=db.address, port=POSTGRES_PORT)
    write_file(local_data / "sandbox.conf", settings, 0o600, owner="postgres")
    hba = HBA.format(role=DATABASE, subnet=sandbox.network)
    write_file(local_data / "pg_hba.conf", hba, 0o600, owner="postgres")
    return created


def start(db: Host) -> bool:
    """Start the cluster; False when it was running."""
    if is_running(db):
        return False
    _pg(db, "pg_ctl", "-D", data_dir(), "-l", "/var/log/postgresql/sandbox.log", "-w", "-t", "60", "start",
        hint="read the db host's /var/log/postgresql/sandbox.log (under the sandbox state folder)")
    return True


def stop(db: Host) -> bool:
    """Stop the cluster (fast shutdown: open sessions are cut); False when it was stopped."""
    if not is_running(db):
        return False
    _pg(db, "pg_ctl", "-D", data_dir(), "-m", "fast", "-w", "stop")
    return True


def psql(db: Host, sql: str, database: str = "postgres") -> str:
    """Run `sql` (from standard input) as the superuser over the host's own socket."""
    return _pg(db, "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql",
               "-d", database, input=sql).stdout


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


def reset(db: Host) -> None:
    """Drop every database but postgres and the templates, then an empty app database."""
    names = psql(db, "SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')")
    for name in names.split():
        quoted = name.replace('"', '""')
        psql(db, f'DROP DATABASE "{quoted}" WITH (FORCE)')
    psql(db, f"CREATE DATABASE {DATABASE} OWNER {DATABASE}")
