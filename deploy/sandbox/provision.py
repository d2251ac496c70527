"""What an operator does once per server before the first deploy, done for the
sandbox hosts: their private folders, /etc/hosts naming the fleet, the deploy
folder owned by the deploy user, and the server-side secrets file (0600)."""
from __future__ import annotations

import shutil

from ..templates import app_unit
from . import dbhost, sshd
from .spec import Host, Sandbox
from .system import in_host, write_file


def env_file(sandbox: Sandbox) -> str:
    """The server-side secrets file: the only place the database password is written."""
    return f"{sandbox.settings.deploy_to}/shared/env"


def etc_hosts(sandbox: Sandbox, host: Host) -> str:
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{host.name}", f"{sandbox.gateway}\tcontroller"]
    lines += [f"{h.address}\t{h.name}" for h in sandbox.hosts]
    return "\n".join(lines) + "\n"


def prepare_host_files(sandbox: Sandbox, host: Host) -> bool:
    """Create what the host's mount namespace binds (see mounts.host_dirs); True when
    sshd's config changed."""
    for name in ("systemd", "log/journal"):
        (host.root / name).mkdir(mode=0o755, parents=True, exist_ok=True)
    write_file(host.root / "etc-hosts", etc_hosts(sandbox, host))
    write_file(host.root / "etc-hostname", f"{host.name}\n")
    changed = sshd.prepare_host(sandbox, host)
    install_units(sandbox, host)
    if host.is_db:
        home = host.root / "postgresql"
        home.mkdir(mode=0o755, exist_ok=True)
        shutil.chown(home, "postgres", "postgres")
    return changed


def install_units(sandbox: Sandbox, host: Host) -> None:
    """The project's unit file, rendered for the host, where an operator installs it."""
    if "app" not in host.roles:
        return
    s = sandbox.settings
    unit = app_unit(s.service, s.user, s.deploy_to, "0.0.0.0:8000", "app/gunicorn.conf.py")
    write_file(host.root / "systemd" / f"{s.service}.service", unit)


# The stand-in systemctl waits 0.5 s per wait for "system running" (twice per reload or
# start) unless sysinit.target's status says so, as it does on a booted host.
BOOTED = ("/run/sysinit.target.status", "SubState=running\n")


def provision_server(sandbox: Sandbox, host: Host) -> None:
    """The host marked booted; deploy_to owned by the deploy user, and its secrets file
    with the database URL."""
    in_host(host, ["sh", "-c", 'printf %s "$2" > "$1"', "mark-booted", *BOOTED])
    user, deploy_to = sandbox.settings.user, sandbox.settings.deploy_to
    in_host(host, ["install", "-d", "-m", "0755", "-o", user, "-g", user, deploy_to])
    in_host(host, ["install", "-d", "-m", "0700", "-o", user, "-g", user, f"{deploy_to}/shared"])
    secrets = f"DATABASE_URL={dbhost.database_url(sandbox)}\n"
    in_host(host, ["sh", "-c", 'umask 077 && cat > "$1"', "write-env", env_file(sandbox)],
            user=user, input=secrets)
