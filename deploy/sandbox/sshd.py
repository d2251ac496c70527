"""OpenSSH on every host: its own host key and config in its own /etc/ssh, key-only
login for the deploy user, and on this machine the client key, a known_hosts
file holding exactly the hosts' keys, and an ssh_config for `ssh -F`."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .hostfs import ids, inside, write_as
from .spec import Host, Sandbox, admin_name
from .system import SandboxError, run, write_file

SSHD_CONFIG = """\
# Written by the sandbox for host {name}; `inv sandbox.up` rewrites it.
# Read before Debian's own sshd_config, so these settings win.
HostKey /etc/ssh/ssh_host_ed25519_key
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {users}
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%u
X11Forwarding no
AllowAgentForwarding no
ClientAliveInterval 5
ClientAliveCountMax 3
MaxStartups 64:30:128
MaxSessions 64
"""

SSH_CONFIG_HOST = """\
Host {name} {address}
    HostName {address}
    User {user}
    IdentityFile {key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 5
"""


def ensure_client_key(sandbox: Sandbox) -> bool:
    """The controller's keys: the deploy user's and the admin account's own; False when both exist."""
    made = False
    for path, comment in ((sandbox.key, "deployer"), (sandbox.admin_key, "admin")):
        if not path.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{sandbox.prefix}-sandbox-{comment}",
                 "-f", str(path)])
            made = True
    return made


def host_key(host: Host) -> Path:
    return host.rootfs / "etc" / "ssh" / "ssh_host_ed25519_key"


def prepare_host(sandbox: Sandbox, host: Host) -> bool:
    """The host's own key (kept across `up`s), sshd's settings and the users' authorized
    keys; True when the settings changed (a running sshd must reload them)."""
    if not host_key(host).exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host.name}-host-key",
             "-f", str(host_key(host))])
    user, admin = sandbox.settings.user, admin_name(sandbox.settings.user)
    # postgres logs in on the db host only: pgBackRest's repository host reaches the cluster as it.
    users = " ".join([user, admin] + (["postgres"] if host.is_db else []))
    config = SSHD_CONFIG.format(name=host.name, users=users)
    changed = write_as(host, "/etc/ssh/sshd_config.d/sandbox.conf", config, 0o644)
    home = f"/home/{user}"
    dot_ssh = inside(host, f"{home}/.ssh")
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    os.chown(inside(host, f"{home}/.ssh"), *ids(host, user))
    write_as(host, f"{home}/.ssh/authorized_keys", Path(f"{sandbox.key}.pub").read_text(), 0o600, owner=user)
    inside(host, "/etc/ssh/authorized_keys").mkdir(mode=0o755, exist_ok=True)
    write_as(host, f"/etc/ssh/authorized_keys/{admin}", Path(f"{sandbox.admin_key}.pub").read_text(), 0o644)
    return changed


def wait_for_port(address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise SandboxError(f"nothing answers on {address}:{port} after {timeout:.0f}s ({exc})") from None
            time.sleep(0.05)


def write_client_files(sandbox: Sandbox) -> None:
    """known_hosts with each host's key (by name and address), and the ssh_config."""
    lines = []
    for host in sandbox.hosts:
        key_type, key = Path(f"{host_key(host)}.pub").read_text().split()[:2]
        lines.append(f"{host.address},{host.name} {key_type} {key}\n")
    write_file(sandbox.known_hosts, "".join(lines), 0o644)
    config = "# Written by `inv sandbox.up`: ssh -F this-file app1\n\n" + "\n".join(
        SSH_CONFIG_HOST.format(name=h.name, address=h.address, user=sandbox.settings.user,
                               key=sandbox.key, known_hosts=sandbox.known_hosts)
        for h in sandbox.hosts
    )
    write_file(sandbox.ssh_config, config, 0o644)
