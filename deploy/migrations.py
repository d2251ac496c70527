"""The project's migrations: their graph (read with Alembic's ScriptDirectory),
the SQL each revision runs (offline mode), and `flask db` run for the app.

Reading the graph needs no app and no database. Anything that needs the app
(autogenerate, upgrade, offline SQL) runs `flask db` in a subprocess, so the
toolkit never imports the app it deploys.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory
from alembic.util import CommandError
from deploy_runtime.migrations import ADVISORY_LOCK_KEY
from deploy_runtime.phases import phase_of

from . import console
from .config import ProjectConfig
from .errors import AppNotLoaded, CommandFailed, MigrationError

# The session advisory lock a migration holds (deploy_runtime.migrations.migration_connection).
MIGRATION_LOCK_KEY = ADVISORY_LOCK_KEY
# Raised while `flask --app` loads the app, before any migration runs.
_APP_NOT_LOADED = re.compile(r"^.*(No module named \S+|Could not import \S+|Failed to find Flask application[^\n]*|"
                             r"Could not locate a Flask application[^\n]*).*$", re.M)
# A traceback through Flask's app loading: the app raised while it was imported or created.
_RAISED_LOADING = re.compile(r'flask/cli\.py", line \d+, in (?:load_app|locate_app|find_app_by_string|find_best_app)')
# Tools older than the toolkit needs, and an app that is not on DATABASE_URL: the hint is theirs,
# not the migration's.
_OLD_TOOLS = (
    (re.compile(r"No such option: --app"), "this Flask is older than 2.2 (it has no `flask --app`)",
     "require Flask>=2.2 in requirements.txt, pip install -r requirements.txt, then remake the lock (inv lock)"),
    (re.compile(r"No such command '(check|upgrade|migrate|downgrade)'"),
     "this Flask-Migrate is older than 4.0.2 (it has no `flask db check`), or Flask-Migrate is not set up in the app",
     "require Flask-Migrate>=4.0.2 in requirements.txt, pip install -r requirements.txt, then remake the lock "
     "(inv lock); check that the app calls Migrate(app, db)"),
    (re.compile(r"No module named '?psycopg'?(?!2)"),
     "the app's SQLAlchemy connects postgresql:// URLs with psycopg (version 3: SQLAlchemy 2.1's default), "
     "which is not installed",
     "add psycopg[binary] to your requirements (pip install it here, then inv lock)"),
    (re.compile(r"sqlite3\.OperationalError|Context impl SQLiteImpl|sqlite:///"),
     "the app connected to SQLite, not to DATABASE_URL (the app must take its database from DATABASE_URL)",
     "set the app's database from DATABASE_URL (and any setting that chooses its configuration, such as "
     "FLASK_CONFIG, here and in each host's env file: fab env.set)"),
)
# Alembic's offline output marks where each revision starts.
_RUNNING = re.compile(r"^-- Running (upgrade|downgrade) (.*?) -> (\S+)\s*$", re.M)
_TRANSACTION = re.compile(r"^(BEGIN|START|COMMIT|ROLLBACK|END)\b.*;$", re.M | re.I)
_TIMEOUT_SETTING = re.compile(r"^SET (lock_timeout|statement_timeout) = .*;$", re.M)


@dataclass(frozen=True)
class Revision:
    id: str
    parents: tuple[str, ...]
    message: str
    path: Path
    non_transactional: bool  # uses an autocommit block: what ran before it is committed
    phase: str = "pre"       # "post": runs after every app host serves the new code (deploy_runtime.phases)

    def label(self) -> str:
        return f"{self.id} ({self.message})" + (" [post]" if self.phase == "post" else "")


class MigrationGraph:
    """The revisions in a migrations folder, read without running anything."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            self.script = ScriptDirectory(str(directory))
            self._revisions = {
                rev.revision: rev for rev in self.script.walk_revisions("base", "heads")
            }
        except CommandError as exc:
            raise MigrationError(f"{directory}: {exc}") from None

    def heads(self) -> tuple[str, ...]:
        return tuple(sorted(self.script.get_heads()))

    def single_head(self) -> str:
        """The one head; refuses, naming them and the fix, when there are several."""
        heads = self.heads()
        if len(heads) == 1:
            return heads[0]
        if not heads:
            raise MigrationError(f"{self.directory} has no revisions", hint="inv migrate -m 'first'")
        raise MigrationError(
            f"the migrations have {len(heads)} heads: " + ", ".join(self.get(h).label() for h in heads),
            hint=f"merge them: flask db merge -m 'merge heads' {' '.join(heads)}",
        )

    def get(self, rev_id: str) -> Revision:
        script = self._revisions.get(rev_id)
        if script is None:
            raise MigrationError(f"revision {rev_id} is not in {self.directory}")
        source = Path(script.path).read_text()
        try:
            phase = phase_of(script)
        except ValueError as exc:
            raise MigrationError(str(exc), hint='write phase = "post" (or nothing, for "pre")') from None
        return Revision(
            id=script.revision,
            parents=tuple(script._normalized_down_revisions),
            message=(script.doc or "").strip().splitlines()[0] if script.doc else "",
            path=Path(script.path),
            non_transactional="autocommit_block" in source,
            phase=phase,
        )

    def __contains__(self, rev_id: str) -> bool:
        return rev_id in self._revisions

    def ordered(self) -> list[Revision]:
        """Every revision, base first."""
        return [self.get(r.revision) for r in reversed(list(self.script.walk_revisions("base", "heads")))]

    def pending(self, current: tuple[str, ...], target: str | None = None) -> list[Revision]:
        """Revisions an upgrade from `current` to `target` (default: the head) would run, in order."""
        target = target or self.single_head()
        for rev in current:
            if rev not in self:
                raise MigrationError(
                    f"the database is at revision {rev}, which these migrations do not contain",
                    hint="check out the code that wrote it, or find the missing migration file",
                )
        lower = current[0] if len(current) == 1 else ("base" if not current else None)
        if lower is None:
            raise MigrationError(f"the database has several revisions: {', '.join(current)}")
        try:
            scripts = list(self.script.iterate_revisions(target, lower))
        except CommandError as exc:
            raise MigrationError(str(exc)) from None
        return [self.get(s.revision) for s in reversed(scripts)]

    def revision_for_path(self, path: Path) -> Revision | None:
        resolved = path.resolve()
        for rev_id, script in self._revisions.items():
            if Path(script.path).resolve() == resolved:
                return self.get(rev_id)
        return None


class FlaskDb:
    """`flask db ...` for the project's app, against one database."""

    def __init__(self, project: ProjectConfig, database_url: str) -> None:
        self.project = project
        self.database_url = database_url

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "flask", "--app", self.project.app, "db", *args,
                "--directory", str(self.project.migrations_dir)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ, DATABASE_URL=self.database_url)
        env.pop("FLASK_APP", None)
        return env

    def run(self, *args: str, stream: bool = False, hint: str | None = None) -> str:
        """Run `flask db ARGS`; return its output, or raise CommandFailed with its tail."""
        argv = self.argv(*args)
        if stream:  # show progress as it happens: a migration can take minutes
            with subprocess.Popen(argv, cwd=self.project.root, env=self.env(), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
                lines, in_traceback = [], False
                for line in proc.stdout:
                    in_traceback = in_traceback or line.startswith("Traceback ")
                    if not in_traceback:
                        console.output.write(line, end="")
                    lines.append(line)
            output = "".join(lines)
        else:
            in_traceback = False
            proc = subprocess.run(argv, cwd=self.project.root, env=self.env(), text=True,
                                  capture_output=True)
            output = proc.stdout + proc.stderr
        if proc.returncode != 0 and not in_traceback_of_migration(output):
            self._refuse_unloaded_app(output)
        if proc.returncode != 0:
            shown = output
            if in_traceback:  # the frames go to a log; the message keeps the exception
                shown = error_summary(output) + f"\n(full output: {self._save_log(args[0], output)})"
            raise CommandFailed(["flask", "db", *args], proc.returncode, shown, hint=hint)
        return output

    def _refuse_unloaded_app(self, output: str) -> None:
        """AppNotLoaded when `output` shows the app itself failing to load (nothing ran), or tools
        too old for the toolkit, or an app that is not on DATABASE_URL."""
        for pattern, what, hint in _OLD_TOOLS:
            if pattern.search(output):
                raise AppNotLoaded(f"`flask --app {self.project.app} db` failed: {what}", hint=hint)
        importing = re.search(r"While importing '([\w.]+)', an? (\w+) was raised", output)
        if importing:
            raised = [line.strip() for line in output.splitlines()
                      if re.match(r"\s*\w+(\.\w+)*(Error|Exception)\b.*:", line)]
            detail = f": {raised[-1][:300]}" if raised else ""
            raise AppNotLoaded(f"importing {importing.group(1)} raised {importing.group(2)}{detail}, so nothing ran",
                               hint=f"see the whole error: flask --app {self.project.app} db current (often an "
                                    "extension too old for the Flask it runs with, a driver missing, or syntax "
                                    "newer than this Python)")
        missing = _APP_NOT_LOADED.search(output)
        if missing:
            raise AppNotLoaded(f"`flask --app {self.project.app}` could not load the app, so nothing ran: "
                               f"{missing.group(0).strip()}",
                               hint="install the project's requirements in this virtualenv (pip install -r "
                                    "requirements.txt), and check [project] app in deploy.toml")
        if _RAISED_LOADING.search(output):
            raise AppNotLoaded(f"the app raised while `flask --app {self.project.app}` loaded it, so nothing ran: "
                               f"{error_summary(output).strip().splitlines()[-1]}",
                               hint="give it what it needs to start: a setting it reads at import (export it here, "
                                    "or put it in a committed .flaskenv: the deploy's checks render from git, where an "
                                    "ignored .env is not; on the servers: fab env.set KEY=VALUE), or a missing "
                                    "package (pip install -r requirements.txt)")

    def _save_log(self, verb: str, output: str) -> Path:
        log = self.project.root / ".local" / "logs" / f"flask-db-{verb}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
        return log

    def offline_sql(self, revision_range: str) -> str:
        """The SQL `upgrade REVISION_RANGE` would run, rendered without a database.

        A rendering failure (Alembic's `FAILED:`, exit 255 or 1) raises: the SQL is
        unknown, so nothing can be said to be safe.
        """
        argv = self.argv("upgrade", "--sql", revision_range)
        proc = subprocess.run(argv, cwd=self.project.root, env=self.env(), text=True, capture_output=True)
        if proc.returncode != 0 and not in_traceback_of_migration(proc.stdout + proc.stderr):
            self._refuse_unloaded_app(proc.stdout + proc.stderr)
        if "Context impl SQLiteImpl" in proc.stderr:  # rendered, but for SQLite: not what the servers run
            self._refuse_unloaded_app("sqlite:///")
        if proc.returncode != 0 or "FAILED:" in proc.stdout:
            raise MigrationError(
                f"rendering the SQL of {revision_range} failed (exit {proc.returncode}):\n"
                + "\n".join("    " + line for line in (proc.stdout + proc.stderr).strip().splitlines()[-12:]),
                hint="fix the migration so that `flask db upgrade --sql` renders it",
            )
        return proc.stdout


def error_summary(output: str) -> str:
    """The exception a Python traceback ends with (and any [SQL: ...] lines), without the frames."""
    tail = output[output.rfind("Traceback "):].splitlines()[1:]
    summary = [line for line in tail if line and not line.startswith(" ")]
    return "\n".join(summary[-6:]) or output.strip().splitlines()[-1]


def in_traceback_of_migration(output: str) -> bool:
    """Whether the failure came from inside a migration (its module imports, say), not the app's loading."""
    return "Running upgrade" in output or "Running downgrade" in output


def split_offline_sql(sql: str) -> tuple[str, dict[str, str]]:
    """(the timeout SET statements, {revision: its SQL}) from offline output.

    Each revision's SQL is made self-contained: it opens with BEGIN when the
    whole script was inside a transaction where it starts, and closes what it
    leaves open, so a linter sees the transaction Alembic really runs it in.
    """
    settings = "\n".join(m.group(0) for m in _TIMEOUT_SETTING.finditer(sql))
    marks = list(_RUNNING.finditer(sql))
    chunks = {}
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(sql)
        body = sql[mark.start():end].strip()
        opens_inside = _in_transaction(sql[:mark.start()])
        text = ("BEGIN;\n\n" if opens_inside else "") + body
        if _in_transaction(text):
            text += "\n\nCOMMIT;"
        chunks[mark.group(3)] = text + "\n"
    return settings, chunks


def _in_transaction(sql: str) -> bool:
    """Whether `sql` ends inside a transaction it (or offline mode) opened."""
    state = False
    for match in _TRANSACTION.finditer(sql):
        state = match.group(1).upper() in ("BEGIN", "START")
    return state


def revision_range(graph: MigrationGraph, revisions: list[Revision]) -> str:
    """The `from:to` range covering consecutive `revisions` (base first)."""
    first, last = revisions[0], revisions[-1]
    return f"{first.parents[0]}:{last.id}" if first.parents else last.id


DROP_STATEMENT = re.compile(r"^\s*(DROP TABLE\b.*|ALTER TABLE\b.*\bDROP COLUMN\b.*)$", re.I | re.M)


def destructive_statements(sql: str) -> list[str]:
    """The statements in `sql` that drop a table or a column."""
    return [m.group(1).strip() for m in DROP_STATEMENT.finditer(sql)]
