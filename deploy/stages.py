"""Stages (sandbox, staging, production...): where and how `fab` deploys.

A stage is `[stages.NAME]` in deploy.toml. Its servers may come from another
file named by `include` (what `inv sandbox.up` writes), whose `[stage]` table is
read first; keys in deploy.toml win. Errors name the file, the key and what
was expected, like the rest of the configuration.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import backup_settings, hooks, notify
from .backup_settings import BackupSettings
from .config import ProjectConfig, _Table
from .errors import ConfigError

ROLES = ("app", "migrations", "db", "backup")
ROLLBACK_POLICIES = ("downgrade-or-restore", "downgrade", "stop")
POST_MIGRATIONS = ("deploy", "manual")   # post revisions run by the deploy, or by `fab migrate --post`
UNDO_EXPAND = ("keep", "downgrade")      # a failed deploy's pre revisions that the old release was checked on
MAINTENANCE_MAP = "/etc/haproxy/maintenance.map"  # [stages.S.lb] maintenance_map, and the sandbox's


@dataclass(frozen=True)
class StageHost:
    name: str
    address: str
    roles: tuple[str, ...]
    port: int = 22


@dataclass(frozen=True)
class LoadBalancer:
    """`[stages.NAME.lb]`: the HAProxy in front of the app hosts, driven through its runtime
    API over SSH, to drain a host before a switch that cannot be graceful."""

    host: StageHost             # reached as the stage's user, with its key and known_hosts
    socket: str                 # HAProxy's `stats socket ... level admin`, which the user may use
    backend: str
    servers: dict[str, str]     # app host name -> HAProxy's server name (default: the same)
    drain_timeout: float        # how long a drained host's open requests may take to finish
    maintenance_map: str = MAINTENANCE_MAP  # fab maintenance.on puts its page here

    def server(self, host: str) -> str:
        return self.servers.get(host, host)


@dataclass(frozen=True)
class StageConfig:
    """Everything `fab ... --stage NAME` needs, validated."""

    name: str
    hosts: tuple[StageHost, ...]
    user: str
    key: Path
    known_hosts: Path
    repo: str
    deploy_to: str
    service: str
    keep_releases: int
    batch: int                 # app hosts switched at once; 0 = all
    health_url: str            # asked on each app host, from the host itself ([project] health_path)
    health_timeout: float
    lock_timeout: str          # for migrations: PostgreSQL lock_timeout
    statement_timeout: str
    rollback: str              # what to do with the database when a deploy fails
    post_migrations: str       # POST_MIGRATIONS
    undo_expand: str           # UNDO_EXPAND: kept, since a downgrade would drop what the new code wrote
    min_free_mb: int
    admin_user: str | None     # an account with sudo, used only by `fab setup` (units, sudo rule)
    admin_key: Path | None     # its own key: never the deploy user's
    bind: str                  # where gunicorn listens (the unit's BIND)
    backups: BackupSettings
    lb: LoadBalancer | None = None
    notify: notify.NotifySettings | None = None   # [stages.S.notify]: webhooks for deploy events
    hooks: hooks.HookSettings = hooks.HookSettings()  # [stages.S.hooks]: local commands around the steps

    @property
    def app_hosts(self) -> tuple[StageHost, ...]:
        return tuple(h for h in self.hosts if "app" in h.roles)

    @property
    def migrations_host(self) -> StageHost:
        return next(h for h in self.hosts if "migrations" in h.roles)

    @property
    def backup_host(self) -> StageHost:
        """Where backups are taken, kept and checked: `backups.host`, else the migrations host."""
        return next((h for h in self.hosts if h.name == self.backups.host), self.migrations_host)

    @property
    def env_file(self) -> str:
        return f"{self.deploy_to}/shared/env"


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", hint="for the sandbox stage: inv sandbox.up") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def stage_names(project: ProjectConfig) -> list[str]:
    stages = _read(project.path).get("stages", {})
    return sorted(stages) if isinstance(stages, dict) else []


def default_stage(project: ProjectConfig) -> str | None:
    value = _read(project.path).get("deploy", {}).get("default_stage")
    return value if isinstance(value, str) else None


def load_stage(project: ProjectConfig, name: str | None) -> StageConfig:
    """The stage `name` (or the default stage) from deploy.toml, validated."""
    name = name or default_stage(project)
    names = stage_names(project)
    if not name:
        raise ConfigError(f"no --stage given and no [deploy] default_stage in {project.path}",
                          hint=f"pass --stage ({', '.join(names) or 'none defined'})")
    if name not in names:
        raise ConfigError(f"unknown stage {name!r} in {project.path}",
                          hint=f"stages: {', '.join(names) or 'none; add [stages.NAME]'}")
    own = _read(project.path)["stages"][name]
    if not isinstance(own, dict):
        raise ConfigError(f"{project.path}: [stages.{name}]: expected a table")
    data, path = dict(own), project.path
    if "include" in own:
        included = project.root / _Table(path, own, f"stages.{name}").text("include")
        data = {**_read(included).get("stage", {}), **own}
    return _build(project, name, _Table(path, data, f"stages.{name}"))


def _build(project: ProjectConfig, name: str, table: _Table) -> StageConfig:
    hosts = _hosts(table)
    if not any("app" in h.roles for h in hosts):
        raise table.fail("hosts", "at least one host with the role \"app\"")
    if sum("migrations" in h.roles for h in hosts) != 1:
        raise table.fail("hosts", "exactly one host with the role \"migrations\" (it migrates and backs up)")
    return StageConfig(
        name=name,
        hosts=hosts,
        user=table.matching("user", "deploy", r"[a-z_][a-z0-9_-]{0,30}", "a Unix user name"),
        key=_existing(project, table, "key"),
        known_hosts=_existing(project, table, "known_hosts"),
        repo=table.text("repo"),
        deploy_to=table.matching("deploy_to", None, r"(/[A-Za-z0-9_.-]+)+", "an absolute folder"),
        service=table.matching("service", "app", r"[A-Za-z0-9_.@-]+", "a unit name without .service"),
        keep_releases=table.integer("keep_releases", 5, 1, 100),
        batch=table.integer("batch", 0, 0, 1000),
        health_url=table.matching("health_url", _local_url(table, project.health_path), r"https?://\S+",
                                  "an http(s) URL"),
        health_timeout=float(table.integer("health_timeout", 30, 1, 600)),
        lock_timeout=table.matching("lock_timeout", "5s", r"\d+(ms|s|min)?", "a PostgreSQL duration like 5s"),
        statement_timeout=table.matching("statement_timeout", "10min", r"\d+(ms|s|min|h)?", "a duration like 10min"),
        rollback=table.choice("rollback", "downgrade-or-restore", ROLLBACK_POLICIES),
        post_migrations=table.choice("post_migrations", "deploy", POST_MIGRATIONS),
        undo_expand=table.choice("undo_expand", "keep", UNDO_EXPAND),
        min_free_mb=table.integer("min_free_mb", 200, 0, 10**7),
        admin_user=(table.matching("admin_user", None, r"[a-z_][a-z0-9_-]{0,30}", "a Unix user name")
                    if "admin_user" in table.data else None),
        admin_key=_admin_key(project, table),
        bind=table.matching("bind", "127.0.0.1:8000", r"[0-9A-Za-z.:\[\]-]+:\d+", "host:port"),
        backups=backup_settings.read(table.table("backups"), table.data.get("deploy_to", ""), hosts),
        lb=_load_balancer(table.table("lb"), hosts) if "lb" in table.data else None,
        notify=notify.settings(table.table("notify")) if "notify" in table.data else None,
        hooks=hooks.settings(table.table("hooks")),
    )


def _local_url(table: _Table, path: str) -> str:
    """`path` on the app as each host reaches it: at its bind address (a wildcard one through loopback)."""
    host, _, port = str(table.data.get("bind", "127.0.0.1:8000")).rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "", "[::]") else host
    return f"http://{host}:{port}{path}"


def _load_balancer(table: _Table, hosts: tuple[StageHost, ...]) -> LoadBalancer:
    address = table.text("address")
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", address) or address.startswith("-"):
        raise table.fail("address", f"a host name or IP address, got {address!r}")
    servers = table.data.get("servers", {})
    apps = {h.name for h in hosts if "app" in h.roles}
    if not isinstance(servers, dict) or not all(isinstance(v, str) for v in servers.values()) \
            or set(servers) - apps:
        raise table.fail("servers", f"a table of app host name = HAProxy server name (app hosts: {', '.join(sorted(apps))})")
    name_pattern = r"[A-Za-z0-9_.:-]+"
    for name in servers.values():
        if not re.fullmatch(name_pattern, name):
            raise table.fail("servers", f"HAProxy server names ({name_pattern}), got {name!r}")
    return LoadBalancer(
        host=StageHost(table.matching("name", "lb", r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a host name"), address, ("lb",),
                       table.integer("port", 22, 1, 65535)),
        socket=table.matching("socket", "/run/haproxy/admin.sock", r"(/[A-Za-z0-9_.-]+)+", "an absolute path"),
        backend=table.matching("backend", "app", name_pattern, "a HAProxy backend name"),
        servers=dict(servers),
        drain_timeout=float(table.integer("drain_timeout", 30, 1, 3600)),
        maintenance_map=table.matching("maintenance_map", MAINTENANCE_MAP, r"(/[A-Za-z0-9_.-]+)+",
                                       "an absolute path"),
    )


def _admin_key(project: ProjectConfig, table: _Table) -> Path | None:
    """The admin account's key: required with admin_user, and never the deploy key (a stolen
    deploy key must not reach an account with full sudo)."""
    if "admin_user" not in table.data:
        return None
    if "admin_key" not in table.data:
        raise table.fail("admin_key", "the admin account's own private key (admin_user is set); "
                                      "it must not be the deploy user's key")
    admin, deploy = _existing(project, table, "admin_key"), _existing(project, table, "key")
    if admin.resolve() == deploy.resolve() or admin.read_bytes() == deploy.read_bytes():
        raise table.fail("admin_key", "a key of its own, but it is the deploy user's key")
    return admin


def _existing(project: ProjectConfig, table: _Table, key: str) -> Path:
    path = project.root / Path(table.text(key)).expanduser()  # ~/.ssh/... as well as a project path
    if not path.is_file():
        raise table.fail(key, f"an existing file, but {path} does not exist")
    return path


def _hosts(table: _Table) -> tuple[StageHost, ...]:
    raw = table.data.get("hosts")
    if not isinstance(raw, list) or not raw:
        raise table.fail("hosts", "a list of tables with name, address and roles")
    hosts = []
    for i, item in enumerate(raw):
        entry = _Table(table.path, item if isinstance(item, dict) else {}, f"{table.name}.hosts[{i}]")
        roles = entry.texts("roles")
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise entry.fail("roles", f"roles among {', '.join(ROLES)}, got {bad[0]!r}")
        address = entry.text("address")
        if not re.fullmatch(r"[A-Za-z0-9.:-]+", address) or address.startswith("-"):
            raise entry.fail("address", f"a host name or IP address, got {address!r}")
        hosts.append(StageHost(entry.matching("name", None, r"[A-Za-z0-9][A-Za-z0-9_.-]*", "a host name"),
                               address, roles, entry.integer("port", 22, 1, 65535)))
    return tuple(hosts)


