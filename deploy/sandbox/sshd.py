"""OpenSSH on every host: its own host key and config in its own /etc/ssh, key-only
login for the deploy user, and on this machine the client key, a known_hosts
file holding exactly the hosts' keys, and an ssh_config for `ssh -F`."""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from .machine import admin_name
from .spec import Host, Sandbox
from .system import SandboxError, in_host, run, write_file

SSHD_CONFIG = """\
# Written by the sandbox for host {name}; `inv sandbox.up` rewrites it.
ListenAddress {address}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {user} {admin}
AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%u
# No PAM: its session modules expect a systemd host. The account's "*" password
# cannot match anything but does not lock the account, so keys work.
UsePAM no
StrictModes yes
X11Forwarding no
AllowAgentForwarding no
PrintMotd no
ClientAliveInterval 5
ClientAliveCountMax 3
MaxStartups 64:30:128
MaxSessions 64
Subsystem sftp internal-sftp
AcceptEnv LANG LC_*
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
    return host.root / "etc-ssh" / "ssh_host_ed25519_key"


def prepare_host(sandbox: Sandbox, host: Host) -> bool:
    """The host's /etc/ssh (a host key kept across `up`s) and the users' authorized keys;
    True when sshd_config changed (a running sshd must reload it)."""
    etc = host.root / "etc-ssh"
    etc.mkdir(mode=0o755, parents=True, exist_ok=True)
    if not host_key(host).exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host.name}-host-key",
             "-f", str(host_key(host))])
    for name in ("moduli", "ssh_config"):
        if Path("/etc/ssh", name).exists() and not (etc / name).exists():
            shutil.copy(Path("/etc/ssh", name), etc / name)
    user = sandbox.settings.user
    config = SSHD_CONFIG.format(name=host.name, address=host.address, user=user, admin=admin_name(user))
    changed = not (etc / "sshd_config").exists() or (etc / "sshd_config").read_text() != config
    write_file(etc / "sshd_config", config)
    home = host.root / "home"
    home.mkdir(mode=0o755, parents=True, exist_ok=True)
    shutil.chown(home, user, user)
    os.chmod(home, 0o755)
    dot_ssh = home / ".ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    shutil.chown(dot_ssh, user, user)
    public = Path(f"{sandbox.key}.pub").read_text()
    write_file(dot_ssh / "authorized_keys", public, 0o600, owner=user)
    (etc / "authorized_keys").mkdir(mode=0o755, exist_ok=True)
    write_file(etc / "authorized_keys" / admin_name(user), Path(f"{sandbox.admin_key}.pub").read_text(), 0o644)
    return changed


def sshd_pid(host: Host) -> int | None:
    """The host's running sshd, from its pid file; None when it is not running."""
    pid_file = in_host(host, ["cat", "/run/sshd.pid"], check=False)
    try:
        pid = int(pid_file.stdout.strip())
        if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
            return pid
    except (ValueError, OSError):
        pass
    return None


def start_sshd(host: Host) -> None:
    in_host(host, ["/usr/sbin/sshd", "-t"], hint=f"the sshd_config of {host.name} is invalid")
    in_host(host, ["/usr/sbin/sshd", "-E", "/var/log/sshd.log"])


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
