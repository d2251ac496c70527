"""What an operator does once per server before the first deploy, done for the
sandbox hosts: the deploy user and the admin account with their keys and sudo
rules, sshd's settings, /etc/hosts naming the fleet, the role's own services
enabled (PostgreSQL on the db host, HAProxy on the load balancer, the app's unit
on the app hosts), the deploy folder owned by the deploy user and the
server-side secrets file (0600).

Files are written into the host's root filesystem from this machine (the host
need not be running); what needs the running host goes through `in_host`.
"""
from __future__ import annotations

from ..config import GENERATED_GUNICORN_CONFIG
from ..templates import app_unit, sudo_rule
from . import dbhost, lbhost, sshd
from .hostfs import entries, inside, write_as
from .spec import Host, Sandbox, admin_name
from .system import SandboxError, in_host, run, write_file

APP_BIND = "0.0.0.0:8000"


def env_file(sandbox: Sandbox) -> str:
    """The server-side secrets file: the only place the database password is written."""
    return f"{sandbox.settings.deploy_to}/shared/env"


def etc_hosts(sandbox: Sandbox, host: Host) -> str:
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{host.name}", f"{sandbox.gateway}\tcontroller"]
    lines += [f"{h.address}\t{h.name}" for h in sandbox.hosts]
    return "\n".join(lines) + "\n"


def prepare_host_files(sandbox: Sandbox, host: Host) -> set[str]:
    """The host's configuration, written into its root filesystem; returns the units whose
    configuration changed (a running host reloads them)."""
    changed: set[str] = set()
    _ensure_users(sandbox, host)
    write_as(host, "/etc/hostname", f"{host.name}\n", 0o644)
    write_as(host, "/etc/hosts", etc_hosts(sandbox, host), 0o644)
    if sshd.prepare_host(sandbox, host):
        changed.add("ssh.service")
    if host.is_db and dbhost.write_config(sandbox, host):
        changed.add(dbhost.UNIT)
    if host.is_lb and lbhost.write_config(sandbox, host):
        changed.add(lbhost.UNIT)
    install_units(sandbox, host)
    return changed


JOURNAL_GROUP = "systemd-journal"


def _ensure_users(sandbox: Sandbox, host: Host) -> None:
    """The deploy user (its own home) and the admin account (full sudo, keys in /etc/ssh)."""
    user, admin = sandbox.settings.user, admin_name(sandbox.settings.user)
    passwd = entries(host, "passwd")
    for name, home in ((user, f"/home/{user}"), (admin, "/")):
        if name not in passwd:
            # "*": no password can ever match, yet the account is not locked, so key login works.
            run(["chroot", str(host.rootfs), "useradd", "--create-home" if home != "/" else "--no-create-home",
                 "--home-dir", home, "--shell", "/bin/bash", "--password", "*", "--user-group", name])
    if host.is_lb and not _in_group(host, lbhost.GROUP, user):  # the runtime API socket is the group's
        run(["chroot", str(host.rootfs), "usermod", "--append", "--groups", lbhost.GROUP, user])
    if not _in_group(host, JOURNAL_GROUP, user):  # fab logs, as fab setup allows it on real servers
        run(["chroot", str(host.rootfs), "usermod", "--append", "--groups", JOURNAL_GROUP, user])
    _write_sudoers(host, f"flask-deploy-{admin}", f"{admin} ALL=(ALL) NOPASSWD: ALL\n")
    _write_sudoers(host, f"flask-deploy-{user}", sudo_rule(user, sandbox.settings.service))


def _in_group(host: Host, group: str, user: str) -> bool:
    return user in entries(host, "group").get(group, ["", "", "", ""])[3].split(",")


def _write_sudoers(host: Host, name: str, rule: str) -> None:
    path = inside(host, f"/etc/sudoers.d/{name}")
    if path.exists() and path.read_text() == rule:
        return
    candidate = path.with_name(f".{name}.new")
    write_file(candidate, rule, 0o440)
    run(["chroot", str(host.rootfs), "visudo", "-cqf", f"/etc/sudoers.d/{candidate.name}"])
    candidate.rename(path)


def install_units(sandbox: Sandbox, host: Host) -> None:
    """The project's unit file on the app hosts, rendered for the host and enabled, where an
    operator installs it; and the role's own service enabled."""
    enable = {"db": [dbhost.ENABLED], "lb": [lbhost.UNIT]}.get(host.roles[0], [])
    if "app" in host.roles:
        s = sandbox.settings
        unit = app_unit(s.service, s.user, s.deploy_to, APP_BIND, GENERATED_GUNICORN_CONFIG)
        write_as(host, f"/etc/systemd/system/{s.service}.service", unit, 0o644)
        enable.append(f"{s.service}.service")
    if enable:
        run(["systemctl", f"--root={host.rootfs}", "--quiet", "enable", *enable])


def installed_units(host: Host) -> list[str]:
    """Unit files in the host's /etc/systemd/system that the image does not have: the app's,
    and whatever `fab setup` or a test installed."""
    folder = host.upper / "etc" / "systemd" / "system"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not p.is_symlink() and p.suffix in (".service", ".timer", ".socket", ".path"))


def provision_server(sandbox: Sandbox, host: Host) -> None:
    """deploy_to owned by the deploy user, and its secrets file with the database URL."""
    user, deploy_to = sandbox.settings.user, sandbox.settings.deploy_to
    secrets = f"DATABASE_URL={dbhost.database_url(sandbox)}\n"
    in_host(host, ["sh", "-ec", 'install -d -m 0755 -o "$1" -g "$1" "$2"\n'
                                'install -d -m 0700 -o "$1" -g "$1" "$2/shared"\n'
                                'runuser -u "$1" -- sh -c \'umask 077 && cat > "$1"\' write-env "$3"',
                   "provision", user, deploy_to, env_file(sandbox)], input=secrets)


def essential_units(sandbox: Sandbox, host: Host) -> list[str]:
    """What must be active once the host has booted."""
    return ["ssh.service"] + ([dbhost.UNIT] if host.is_db else []) + ([lbhost.UNIT] if host.is_lb else [])


def ensure_essentials(sandbox: Sandbox, host: Host) -> list[str]:
    """Start what must run on the host but does not (an operator's `systemctl start`); raise
    when it will not start. Returns what it started."""
    units = essential_units(sandbox, host)
    states = in_host(host, ["systemctl", "is-active", *units], check=False).stdout.split()
    down = [u for u, state in zip(units, states, strict=False) if state != "active"]
    if down:
        started = in_host(host, ["systemctl", "start", *down], check=False)
        if started.returncode != 0:
            raise SandboxError(f"{host.name}: {', '.join(down)} will not start: {started.stderr.strip()}",
                               hint=f"read its log: ssh -F .../ssh_config {host.name} sudo journalctl -u {down[0]} "
                                    f"(as {admin_name(sandbox.settings.user)})")
    return [f"started {unit}" for unit in down]
