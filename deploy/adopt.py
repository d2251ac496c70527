"""`flask-pg-deploy init`: add the toolkit to an existing Flask-Migrate project.

It writes what the project lacks (deploy.toml, the thin task files, the hashed lock) and
makes the one-line change the project's `env.py` needs. It never overwrites a file the
project has: a file it would change differently is reported with what to do by hand. Run
again, it changes nothing.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import CONFIG_NAME
from . import console
from .console import indent
from .errors import ConfigError, DeployError
from .local.tools import installed_tool
from .migrations import MigrationGraph
from .templates import render

FABFILE = '''"""Remote half of the workflow (flask-pg-deploy): `fab --list`."""
from deploy.fab_tasks import ns  # noqa: F401
'''
TASKS = '''"""Local half of the workflow (flask-pg-deploy): `inv --list`."""
from deploy.inv_tasks import ns  # noqa: F401
'''
HELPERS = "migration_connection, locked_connection"
# The stock template's `with engine.connect() as connection:`, and an older one's `connection = engine.connect()`.
WITH_CONNECT = re.compile(r"^(?P<indent>\s*)with (?P<engine>\w+)\.connect\(\) as (?P<name>\w+):[ \t]*$", re.M)
OPEN_CONNECT = re.compile(r"^(?P<indent>\s*)(?P<name>\w+) = (?P<engine>\w+)\.connect\(\)[ \t]*$", re.M)
# A class with db.Model (or Model, or x.Model) among its bases: a Flask-SQLAlchemy model.
MODEL_CLASS = re.compile(r"^class\s+\w+\s*\((?:[^()]*[,\s(])?(?:\w+\.)?Model\s*[,)]", re.M)
# Settings read from the environment: os.environ / os.getenv, python-decouple's config("X"),
# environs' env("X") / env.str("X").
ENV_READ = re.compile(r"""(?:os\.environ\.get\(|os\.getenv\(|os\.environ\[|\bconfig\(|\benv(?:\.\w+)?\()\s*["']([A-Z][A-Z0-9_]*)["']""")
SKIPPED = {".venv", "venv", ".git", ".local", "migrations", "node_modules", "tests", "__pycache__"}


@dataclass
class Step:
    path: str
    action: str      # wrote, changed, kept, todo
    detail: str = ""


def init(root: Path, app: str | None = None, server_python: str = "3.11", pg_version: str = "15",
         ask: Callable[[list[str]], str] | None = None) -> list[Step]:
    """Everything `flask-pg-deploy init` does in the project at `root`; what it did, step by step.
    `ask` chooses the app's import path among the candidates when none is certain (a prompt)."""
    migrations = root / "migrations"
    if not (migrations / "env.py").is_file():
        raise ConfigError(f"{root} has no migrations/env.py: this is for a Flask-Migrate project",
                          hint="run `flask --app YOURAPP db init` first (and commit it)")
    # Everything that can refuse runs before anything is written: the requirements, the tools'
    # versions, the app, and the lock (resolved into a temporary file first).
    wanted = requirements_in(root)
    check_versions(installed_versions())
    sources = python_files(root)
    app = app or detect_app(root, sources, ask)
    lock_text = resolve_lock(root, wanted, server_python)
    steps = [
        write_new(root / CONFIG_NAME, deploy_toml(root, app, sources, pg_version)),
        write_new(root / "fabfile.py", FABFILE, needs="deploy.fab_tasks"),
        write_new(root / "tasks.py", TASKS, needs="deploy.inv_tasks"),
        patch_env_py(migrations / "env.py"),
        *make_lock(root, wanted, lock_text, server_python),
        ignore_local(root),
    ]
    for step in steps:
        step.path = str(Path(step.path).relative_to(root)) if Path(step.path).is_absolute() else step.path
    return steps


# What the local workflow calls: `flask --app` (Flask 2.2), `flask db check` (Flask-Migrate 4.0.2).
FLOORS = {"flask": (2, 2), "flask-migrate": (4, 0, 2), "sqlalchemy": (1, 4)}


def installed_versions() -> dict[str, str | None]:
    """The versions of the app's tools in this virtualenv (the project's, where init runs)."""
    from importlib.metadata import PackageNotFoundError, version
    found: dict[str, str | None] = {}
    for name in FLOORS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def check_versions(found: dict[str, str | None]) -> None:
    """Refuse, before writing anything, tools the workflow cannot use, naming each."""
    missing = [name for name, v in found.items() if v is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed in this "
                          "virtualenv: init reads the app as `flask --app` will",
                          hint="install the app's own requirements here first (pip install -r requirements.txt)")
    old = [f"{name} {v} (needs >= {'.'.join(map(str, FLOORS[name]))})" for name, v in found.items()
           if tuple(int(x) for x in re.findall(r"\d+", v)[:len(FLOORS[name])]) < FLOORS[name]]
    if old:
        raise ConfigError("too old for the workflow: " + ", ".join(old) + "; `flask --app` needs Flask 2.2, "
                          "`flask db check` Flask-Migrate 4.0.2",
                          hint="raise them in requirements.txt, pip install -r requirements.txt, then run init again")


def python_files(root: Path) -> list[Path]:
    """The project's own Python files: not its migrations, tests, hidden folders or any virtualenv."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED and not d.startswith(".")
                               and not (Path(folder) / d / "pyvenv.cfg").exists())
        found += [Path(folder) / name for name in sorted(files) if name.endswith(".py")]
    return found


def detect_app(root: Path, sources: list[Path], ask: Callable[[list[str]], str] | None = None) -> str:
    """The import path `flask --app` needs: FLASK_APP from .flaskenv/.env, else the one module
    that makes a Flask app (`app = Flask(...)` or `app = create_app(...)`) or the one package with
    a create_app factory that takes no argument; a module that sets up Flask-Migrate wins."""
    for name in (".flaskenv", ".env"):
        match = re.search(r"^FLASK_APP\s*=\s*['\"]?([^'\"\s]+)", _read(root / name), re.M)
        if match:
            return match.group(1)
    found, migrating = [], []
    for path in sources:
        text = _read(path)
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        if (match := re.search(r"^(\w+)\s*=\s*(?:Flask|create_app)\(", text, re.M)):
            found.append(f"{module}:{match.group(1)}")
        elif re.search(r"^def create_app\(\s*(\)|\w+\s*=|\*)", text, re.M):  # flask calls it with no argument
            found.append(f"{module}:create_app")
        else:
            continue
        if re.search(r"\bMigrate\(", text):
            migrating.append(found[-1])
    if len(migrating) == 1 and len(found) > 1:
        return migrating[0]
    if len(found) != 1 and ask:
        return ask(found)
    if len(found) != 1:
        raise ConfigError("cannot tell which app to deploy: " + (f"found {', '.join(found)}" if found
                                                                  else "no module makes a Flask app"),
                          hint="pass it: flask-pg-deploy init --app MODULE:APP (what `flask --app` takes)")
    return found[0]


def deploy_toml(root: Path, app: str, sources: list[Path], pg_version: str) -> str:
    models = [str(p.relative_to(root)) for p in sources if MODEL_CLASS.search(_read(p))]
    env = sorted({key for p in sources for key in ENV_READ.findall(_read(p))} - {"DATABASE_URL"})
    heads = MigrationGraph(root / "migrations").heads()
    baseline = (f'\nbaseline = "{heads[0]}"            # the history before init is applied everywhere: not linted'
                if len(heads) == 1 else "")
    name = re.sub(r"[^a-z0-9_]", "_", root.name.lower()) or "app"
    return render("deploy.toml", app=app, app_note="          # what `flask --app` loads (found by init)",
                  migrations="migrations", models=_toml_list(models), env=_toml_list(env),
                  pg_version=pg_version, baseline=baseline, database_name=name)


def write_new(path: Path, text: str, needs: str | None = None) -> Step:
    """`text` into `path` unless the project has that file: then say what it should hold."""
    if not path.exists():
        path.write_text(text)
        return Step(str(path), "wrote")
    if path.read_text() == text or (needs and needs in path.read_text()):
        return Step(str(path), "kept", "already set up")
    return Step(str(path), "todo", "yours, left as it is; it should hold:\n" + indent(text))


def patch_env_py(path: Path) -> Step:
    """The one changed line (and its import) that runs migrations under the lock and timeouts."""
    text = path.read_text()
    if "migration_connection(" in text or "locked_connection(" in text:
        return Step(str(path), "kept", "already takes its connection from deploy_runtime.migrations")
    found = [(pattern, m) for pattern in (WITH_CONNECT, OPEN_CONNECT) for m in pattern.finditer(text)]
    if len(found) != 1:
        return Step(str(path), "todo", "found no single line that opens the migration connection "
                    "(`with ENGINE.connect() as connection:` or `connection = ENGINE.connect()`). In "
                    "run_migrations_online(), open it with the toolkit's helper instead:\n" + indent(
                        f"from deploy_runtime.migrations import {HELPERS}\n"
                        "with migration_connection(ENGINE) as connection:     # a `with` block\n"
                        "connection = locked_connection(ENGINE)               # closed by your own `finally`"))
    pattern, match = found[0]
    line = (f"{match['indent']}with migration_connection({match['engine']}) as {match['name']}:" if pattern is WITH_CONNECT
            else f"{match['indent']}{match['name']} = locked_connection({match['engine']})")
    helper = "migration_connection" if pattern is WITH_CONNECT else "locked_connection"
    changed = text[:match.start()] + line + text[match.end():]
    anchor = re.search(r"^from alembic import context[ \t]*$", changed, re.M)
    at = anchor.end() + 1 if anchor else 0
    changed = changed[:at] + f"from deploy_runtime.migrations import {helper}\n" + changed[at:]
    diff = "".join(difflib.unified_diff(text.splitlines(True), changed.splitlines(True), "env.py", "env.py", n=0))
    path.write_text(changed)
    return Step(str(path), "changed", diff)


def resolve_lock(root: Path, wanted: str, server_python: str) -> str | None:
    """The hashed lock of `wanted` (requirements/app.in's text), resolved into temporary files
    beside where it goes, so that a requirement that cannot be met stops init before it writes
    anything; None when the project has its lock already."""
    folder = root / "requirements"
    if (folder / "app.lock").exists():
        return None
    made = not folder.exists()
    folder.mkdir(exist_ok=True)
    source, target = folder / f".app.in.{os.getpid()}", folder / f".app.lock.{os.getpid()}"
    try:
        source.write_text(wanted)
        proc = _compile(folder, source.name, target.name, wanted, server_python)
        if proc.returncode != 0:
            raise DeployError(f"could not lock the requirements (nothing was written):\n{proc.stderr.strip()[-2000:]}",
                              hint="fix the requirement it names in requirements.txt (gunicorn, if pinned, must be "
                                   ">= 23), then run init again")
        return target.read_text().replace(target.name, "app.lock").replace(source.name, "app.in")
    finally:
        source.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        if made and not any(folder.iterdir()):
            folder.rmdir()


def make_lock(root: Path, wanted: str, lock_text: str | None, server_python: str) -> list[Step]:
    """requirements/app.in (`wanted`: the project's requirements, and gunicorn) and its hashed lock
    for the servers (`lock_text`, resolved by resolve_lock)."""
    folder = root / "requirements"
    folder.mkdir(exist_ok=True)
    steps = [write_new(folder / "app.in", wanted)]
    lock = folder / "app.lock"
    if lock_text is None:
        return steps + [Step(str(lock), "kept", "remake it after changing your requirements: inv lock")]
    lock.write_text(lock_text)
    return steps + [Step(str(lock), "wrote", f"hashed, for Python {server_python} on x86_64 Linux servers; "
                                            "remake it after changing your requirements: inv lock")]


def relock(project, server_python: str = "3.11") -> Path:
    """`inv lock`: the hashed lock ([project] lock) made again from the .in file beside it."""
    root = project.root
    target = root / project.lock
    source = target.with_suffix(".in")
    if not source.is_file():
        raise ConfigError(f"{source.relative_to(root)} is missing: the lock is made from it",
                          hint="flask-pg-deploy init writes it (your requirements, plus gunicorn)")
    proc = _compile(target.parent, source.name, target.name, source.read_text(), server_python)
    if proc.returncode != 0:
        raise DeployError(f"could not lock {source.relative_to(root)}:\n{proc.stderr.strip()[-2000:]}",
                          hint="fix the requirement it names, then inv lock again")
    console.ok(f"locked {project.lock} for Python {server_python}; commit it with your requirements")
    return target


def requirements_in(root: Path) -> str:
    lines = ["# What runs on the servers (written by flask-pg-deploy init). The lock is made from it",
             "# (requirements/app.lock, hashed): `inv lock` after changing your requirements."]
    if (root / "requirements.txt").is_file():
        lines.append("-r ../requirements.txt")
        known = _read(root / "requirements.txt")
    elif (root / "pyproject.toml").is_file():
        deps = tomllib.loads(_read(root / "pyproject.toml")).get("project", {}).get("dependencies", [])
        lines.append("# also: ../pyproject.toml    ([project] dependencies: inv lock reads them from there)")
        known = "\n".join(deps)
    else:
        raise ConfigError(f"{root} has neither requirements.txt nor pyproject.toml dependencies",
                          hint="list what the app needs in requirements.txt, then run init again")
    if not re.search(r"^\s*gunicorn\b", known, re.M | re.I):
        lines.append("gunicorn>=23  # serves the app on the servers (added by init)")
    return "\n".join(lines) + "\n"


def ignore_local(root: Path) -> Step:
    """`.local/` (the local database, the sandbox, caches) and a virtualenv kept in the project
    (the one running this) in .gitignore, so that `git add -A` takes neither."""
    path = root / ".gitignore"
    text = _read(path)
    wanted = [".local/"]
    venv = Path(sys.prefix).resolve()
    if venv != root.resolve() and root.resolve() in venv.parents:
        wanted.append(venv.relative_to(root.resolve()).as_posix() + "/")
    missing = [entry for entry in wanted if not re.search(rf"^/?{re.escape(entry.rstrip('/'))}/?$", text, re.M)]
    if not missing:
        return Step(str(path), "kept")
    path.write_text(text + ("" if text.endswith("\n") or not text else "\n") +
                    "# flask-pg-deploy: the local database, the sandbox, caches; the virtualenv\n" +
                    "".join(entry + "\n" for entry in missing))
    return Step(str(path), "changed", "added " + ", ".join(missing))


ALSO = re.compile(r"^# also: (\S+)", re.M)  # another input of the lock, named in the .in file (a pyproject.toml)


def _compile(folder: Path, source: str, target: str, text: str, server_python: str) -> subprocess.CompletedProcess:
    """`uv pip compile` of `source` (and the files its `# also:` lines name) into `target`, hashed,
    for the servers' Python on x86_64 Linux."""
    argv = [installed_tool("uv", "it makes the hashed lock", "uv"), "pip", "compile", "--quiet", "--generate-hashes",
            "--python-version", server_python, "--python-platform", "x86_64-manylinux_2_28", source,
            *ALSO.findall(text), "-o", target]
    return subprocess.run(argv, cwd=folder, capture_output=True, text=True)


def _toml_list(items: list[str]) -> str:
    """A TOML array of strings (JSON's string escapes are TOML's)."""
    return json.dumps(items)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""
