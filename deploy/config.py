"""The one place configuration is read and validated.

`deploy.toml` at the project root holds the project's settings; an error
names the file, the key and what was expected. DATABASE_URL, when set, wins
over the local cluster that `inv db.up` records.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_NAME = "deploy.toml"
GENERATED_GUNICORN_CONFIG = ".deploy/gunicorn.conf.py"  # written into each release by the deploy
URL_PATH = r"/[A-Za-z0-9_./-]*"
# squawk's advice on types and style: printed as warnings by default (`[lint] warn`), since a new
# table with them blocks nobody. Rules about locks, rewrites and compatibility fail the gate.
STYLE_RULES = ("prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-big-int", "prefer-identity",
               "prefer-text-field", "prefer-timestamp-tz", "ban-char-field", "prefer-robust-stmts")


@dataclass(frozen=True)
class LintSettings:
    pg_version: str
    exclude: tuple[str, ...]
    warn: tuple[str, ...]         # reported, never failing: style advice, not locking risk
    baseline: str | None          # this revision and those before it are never linted (an adopted history)


@dataclass(frozen=True)
class SandboxSettings:
    """The local fleet made by `inv sandbox.up` (see deploy/sandbox)."""

    hosts: int            # app hosts, besides the one database host
    prefix: str           # names the namespaces, links and processes it owns
    subnet: str           # a private IPv4 network it owns, e.g. 10.213.0.0/24
    state_dir: Path       # keys, host folders, the origin, the stage file
    user: str             # the login user on every host
    service: str          # the systemd unit of the app
    deploy_to: str        # where releases live on the hosts
    disk_size: str        # size of each host's /srv (a tmpfs), e.g. "2g"
    live_path: str = "/livez"  # what its load balancer asks each app host ([project] live_path)


@dataclass(frozen=True)
class ProjectConfig:
    """What the toolkit knows about the project it works on."""

    root: Path
    path: Path
    app: str                      # what `flask --app` loads, on the controller and the servers
    migrations_dir: Path
    models: tuple[str, ...]
    lock: str                     # the hashed lock of what runs on the servers, in the commit
    health_path: str              # the deploy's health answer (the toolkit's, in front of the app)
    live_path: str                # the load balancer's liveness answer
    gunicorn_config: str          # in the release; the default is the one the toolkit writes there
    env: tuple[str, ...]          # the settings the app reads from its environment, besides DATABASE_URL
    lint: LintSettings
    local_database_dir: Path
    local_database_name: str
    sandbox: SandboxSettings


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` that holds deploy.toml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any folder above it",
        hint="run the command from the project's checkout",
    )


class _Table:
    """A TOML table that reports bad or missing keys with their full name."""

    def __init__(self, path: Path, data: dict[str, Any], name: str) -> None:
        self.path, self.data, self.name = path, data, name

    def fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.path}: [{self.name}] {key}: expected {expected}")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string" + (" (it is missing)" if value is None else f", got {value!r}"))
        return value

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if value not in options:
            raise self.fail(key, f"one of {', '.join(options)}, got {value!r}")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"a whole number from {low} to {high}, got {value!r}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(key, f"a number from {low:g} to {high:g}, got {value!r}")
        return float(value)

    def matching(self, key: str, default: str, pattern: str, expected: str) -> str:
        value = self.text(key, default)
        if not re.fullmatch(pattern, value):
            raise self.fail(key, f"{expected}, got {value!r}")
        return value

    def texts(self, key: str, default: list[str] | None = None) -> tuple[str, ...]:
        value = self.data.get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, f"a list of strings, got {value!r}")
        return tuple(value)

    def table(self, key: str) -> "_Table":
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "a table")
        return _Table(self.path, value, f"{self.name}.{key}" if self.name else key)


def load_project(root: Path | None = None) -> ProjectConfig:
    """Read and validate deploy.toml of the project at (or above) `root`."""
    root = find_root(root)
    path = root / CONFIG_NAME
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    top = _Table(path, data, "")
    project, lint, local = top.table("project"), top.table("lint"), top.table("local")
    sandbox = top.table("sandbox")
    migrations_dir = root / project.text("migrations", "migrations")
    if not (migrations_dir / "env.py").is_file():
        raise project.fail("migrations", f"a folder holding env.py; {migrations_dir} has none")
    live_path = project.matching("live_path", "/livez", URL_PATH, "a URL path such as /livez")
    return ProjectConfig(
        root=root,
        path=path,
        app=project.text("app"),
        migrations_dir=migrations_dir,
        models=project.texts("models", []),
        lock=project.matching("lock", "requirements/app.lock", r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_./-]*",
                              "a path in the project"),
        health_path=project.matching("health_path", "/healthz", URL_PATH, "a URL path such as /healthz"),
        live_path=live_path,
        gunicorn_config=project.matching("gunicorn_config", GENERATED_GUNICORN_CONFIG, r"(?!.*\.\.)[A-Za-z0-9_.][A-Za-z0-9_./-]*\.py",
                                         "a .py path in the project"),
        env=tuple(_env_key(project, key) for key in project.texts("env", [])),
        lint=LintSettings(
            pg_version=lint.text("pg_version", "15"),
            exclude=lint.texts("exclude", []),
            warn=lint.texts("warn", list(STYLE_RULES)),
            baseline=lint.matching("baseline", None, r"[0-9A-Za-z_]+", "a revision id") if "baseline" in lint.data else None,
        ),
        local_database_dir=root / local.text("database_dir", ".local/postgres"),
        local_database_name=local.text("database_name", "app"),
        sandbox=sandbox_settings(root, sandbox, live_path),
    )


def _env_key(table: _Table, key: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise table.fail("env", f"environment variable names, got {key!r}")
    return key


def sandbox_settings(root: Path, table: _Table, live_path: str = "/livez") -> SandboxSettings:
    """[sandbox], validated: names short enough for Linux interface names, a private subnet."""
    subnet = table.text("subnet", "10.213.0.0/24")
    try:
        network = ipaddress.IPv4Network(subnet)
    except ValueError:
        raise table.fail("subnet", f"an IPv4 network such as 10.213.0.0/24, got {subnet!r}") from None
    if not network.is_private or network.prefixlen > 27:
        raise table.fail("subnet", f"a private network of at least 32 addresses, got {subnet!r}")
    return SandboxSettings(
        hosts=table.integer("hosts", 2, 1, 8),
        prefix=table.matching("prefix", "fds", r"[a-z][a-z0-9]{1,5}", "2 to 6 lowercase letters or digits"),
        subnet=str(network),
        state_dir=root / table.text("state_dir", ".local/sandbox"),
        user=table.matching("user", "deploy", r"[a-z_][a-z0-9_-]{0,30}", "a Unix user name"),
        service=table.matching("service", "app", r"[A-Za-z0-9_.@-]+", "a unit name without .service"),
        deploy_to=table.matching("deploy_to", "/srv/app", r"/srv(/[A-Za-z0-9_.-]+)+", "a folder under /srv"),
        disk_size=table.matching("disk_size", "2g", r"[1-9][0-9]*[kmg]", "a size such as 512m or 2g"),
        live_path=live_path,
    )


def database_url(project: ProjectConfig) -> str:
    """DATABASE_URL if set, else the local cluster's URL (from `inv db.up`)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    from .local.database import LocalCluster

    cluster = LocalCluster(project.local_database_dir, project.local_database_name)
    return cluster.url()
