"""What a sandbox is made of, computed from its settings: names, addresses and paths.

Nothing here touches the machine. Every other sandbox module takes a `Sandbox`
and acts on the things it names, so `up`, `down`, `status` and the fault
switches always agree on what belongs to the sandbox.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import SandboxSettings

DB_HOST = "db"
LB_HOST = "lb"
BACKUP_HOST = "backup"
ORIGIN_REPO = "origin.git"
GIT_PORT = 9418
POSTGRES_PORT = 5432
DATABASE = "app"        # the application's database and role on the db host
LB_PORT = 80            # where the load balancer takes the users' traffic
def _images() -> Path:
    """The hosts' shared, read-only images: one cache for every project and sandbox this toolkit
    makes. In a checkout of the toolkit, its .local/; installed with pip, the user's cache."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "deploy_runtime").is_dir():
        return checkout / ".local" / "images"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flask-pg-deploy" / "images"


IMAGES = _images()


def admin_name(user: str) -> str:
    """The operator account beside the deploy user: full sudo, used only by `fab setup`."""
    return f"{user}-admin"


@dataclass(frozen=True)
class Host:
    """One server: a container booted with systemd from the shared image, with a
    writable layer, a network namespace and a /srv of its own."""

    name: str
    roles: tuple[str, ...]
    address: str
    netns: str          # `ip netns` name, also the container's machine name
    link: str           # this machine's end of the host's veth, on the sandbox bridge
    root: Path          # the host's folder of state on this machine

    @property
    def is_db(self) -> bool:
        return "db" in self.roles

    @property
    def is_lb(self) -> bool:
        return "lb" in self.roles

    @property
    def is_backup(self) -> bool:
        return "backup" in self.roles

    @property
    def machine(self) -> str:
        """The container's name (systemd-nspawn --machine)."""
        return self.netns

    @property
    def rootfs(self) -> Path:
        """The host's / as this machine sees it: its layer over the image (overlayfs)."""
        return self.root / "fs"

    @property
    def upper(self) -> Path:
        """What the host wrote over the image."""
        return self.root / "upper"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def srv(self) -> Path:
        """The host's /srv: a size-limited tmpfs on this machine (the disk-full fault shrinks it)."""
        return self.root / "srv"

    @property
    def supervisor_pid(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"


@dataclass(frozen=True)
class Sandbox:
    """The fleet described by [sandbox] in deploy.toml, for a given number of app hosts."""

    settings: SandboxSettings
    project_root: Path
    app_hosts: int

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.settings.subnet)

    @classmethod
    def throwaway(cls, prefix: str, subnet: str, state_dir: Path, project_root: Path, app_hosts: int = 2) -> "Sandbox":
        """A sandbox of its own names and subnet beside any other (the tests', the benchmarks')."""
        settings = SandboxSettings(hosts=app_hosts, prefix=prefix, subnet=subnet, state_dir=state_dir,
                                   user="deploy", service="app", deploy_to="/srv/app", disk_size="1g")
        return cls(settings, project_root, app_hosts)

    def address(self, index: int) -> str:
        return str(self.network.network_address + index)

    @property
    def gateway(self) -> str:
        """This machine's address on the sandbox network (the origin listens here)."""
        return self.address(1)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    @property
    def image_dir(self) -> Path:
        """Where the image is built and cached (the toolkit's checkout, whichever project it serves)."""
        return IMAGES

    def host(self, name: str, roles: tuple[str, ...], index: int) -> Host:
        return Host(
            name=name,
            roles=roles,
            address=self.address(index),
            netns=f"{self.prefix}-{name}",
            link=f"{self.prefix}-{name}",
            root=self.state_dir / "hosts" / name,
        )

    @property
    def db(self) -> Host:
        return self.host(DB_HOST, ("db",), 10)

    @property
    def apps(self) -> list[Host]:
        """app1..appN; app1 also runs the migrations and the backups."""
        return [
            self.host(f"app{i}", ("app", "migrations") if i == 1 else ("app",), 10 + i)
            for i in range(1, self.app_hosts + 1)
        ]

    @property
    def lb(self) -> Host:
        """The load balancer in front of the app hosts."""
        return self.host(LB_HOST, ("lb",), 9)

    @property
    def backup(self) -> Host:
        """The backup repository host (pgBackRest's, for a stage with backups.engine = "pgbackrest")."""
        return self.host(BACKUP_HOST, ("backup",), 8)

    @property
    def hosts(self) -> list[Host]:
        return [*self.apps, self.db, self.backup, self.lb]

    @property
    def lb_url(self) -> str:
        return f"http://{self.lb.address}:{LB_PORT}/"

    def find(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

    # Files on this machine (the controller).
    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def admin_key(self) -> Path:
        """The admin account's own key (never the deploy user's)."""
        return self.state_dir / "id_ed25519_admin"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def stage_file(self) -> Path:
        return self.state_dir / "stage.toml"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    @property
    def origin(self) -> Path:
        return self.state_dir / ORIGIN_REPO

    @property
    def origin_url(self) -> str:
        """What the hosts fetch from (git's own protocol, read-only)."""
        return f"git://{self.gateway}/{ORIGIN_REPO}"

    @property
    def git_daemon_pid(self) -> Path:
        return self.state_dir / "git-daemon.pid"

    @property
    def database_url_template(self) -> str:
        return f"postgresql://{DATABASE}:{{password}}@{self.db.address}:{POSTGRES_PORT}/{DATABASE}"
