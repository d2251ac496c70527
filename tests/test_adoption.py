"""Bring your own app: a Flask-Migrate project that is not the demo (tests/samples/notes: one
module, no factory, classic models, a stock env.py, requirements.txt without hashes, no health
endpoint, a dependency with no wheel) adopts the toolkit, installed into its own venv with pip,
and goes the whole way: init, migrate, upgrade, commit, setup, deploy, a failed deploy,
rollback, backup and its check, on the sandbox."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, Project, assert_clean_failure, output, point_at_sandbox
from fleet_helpers import current, health, sql, through_lb
from deploy import adopt
from deploy.local.git import git

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("adoption")]  # one worker builds its venv once
SAMPLE = Path(__file__).resolve().parent / "samples" / "notes"


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """The project's own environment: its requirements and the toolkit, installed with pip from a path."""
    folder = tmp_path_factory.mktemp("notes") / "venv"
    source = tmp_path_factory.mktemp("toolkit")  # what a package of it holds, built outside the checkout
    shutil.copy(REPO / "pyproject.toml", source)
    for package in ("deploy", "deploy_runtime"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    proc = subprocess.run([str(folder / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
                           "-r", str(SAMPLE / "requirements.txt"), str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return folder


@dataclass
class Adopted(Project):
    venv: Path | None = None

    def tool(self, name: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / name), *args, **kw)

    def inv(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.tool("inv", *args, **kw)

    def fab(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.tool("fab", *args, **kw)


@pytest.fixture
def adopted(tmp_path: Path, database_url: str, venv: Path) -> Adopted:
    """A copy of the sample as its owner has it (flask db init done, committed), then `flask-pg-deploy init`."""
    root = tmp_path / "notes"
    shutil.copytree(SAMPLE, root)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "owner@example.test")
    git(root, "config", "user.name", "Owner")
    project = Adopted(root, database_url, venv=venv)
    assert project.tool("flask", "--app", "notes", "db", "init").returncode == 0
    project.commit_all("notes, with Flask-Migrate")
    init = project.tool("flask-pg-deploy", "init")
    assert init.returncode == 0, output(init)
    project.init_output = init.stdout
    return project


def test_init_writes_what_the_project_lacks_changes_one_line_of_env_py_and_is_idempotent(adopted):
    text = adopted.init_output
    for written in ("deploy.toml", "fabfile.py", "tasks.py", "requirements/app.in", "requirements/app.lock"):
        assert f"wrote    {written}" in text, text
    assert "changed  migrations/env.py" in text and "+from deploy_runtime.migrations import migration_connection" in text
    assert "+    with migration_connection(connectable) as connection:" in text
    diff = git(adopted.root, "diff", "--numstat", "migrations/env.py")
    assert diff.split()[:2] == ["2", "1"], diff  # an import and the one changed line
    toml = (adopted.root / "deploy.toml").read_text()
    assert 'app = "notes:app"' in toml and 'models = ["notes.py"]' in toml and 'env = ["SECRET_KEY"]' in toml
    lock = (adopted.root / "requirements" / "app.lock").read_text()
    assert "docopt==0.6.2" in lock and "gunicorn==" in lock and "--hash=sha256:" in lock
    version = adopted.tool("flask-pg-deploy", "--version")
    assert version.returncode == 0 and version.stdout.startswith("flask-pg-deploy 0."), output(version)
    before = {p: p.read_text() for p in adopted.root.rglob("*") if p.is_file() and ".git" not in p.parts}
    again = adopted.tool("flask-pg-deploy", "init")
    assert again.returncode == 0 and "the project is set up already: nothing changed" in again.stdout, output(again)
    assert {p: p.read_text() for p in before} == before


def test_init_never_overwrites_a_file_of_the_project(tmp_path, venv):
    root = tmp_path / "own"
    shutil.copytree(SAMPLE, root)
    subprocess.run([str(venv / "bin" / "flask"), "--app", "notes", "db", "init"], cwd=root, check=True,
                   capture_output=True, env=dict(os.environ, DATABASE_URL="postgresql://nobody@127.0.0.1/none"))
    (root / "tasks.py").write_text("# the owner's own tasks\n")
    proc = subprocess.run([str(venv / "bin" / "flask-pg-deploy"), "init"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "todo     tasks.py" in proc.stdout and "from deploy.inv_tasks import ns" in proc.stdout
    assert (root / "tasks.py").read_text() == "# the owner's own tasks\n"


def test_init_refuses_a_project_without_flask_migrate_with_what_to_run(tmp_path, venv):
    (tmp_path / "app.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    proc = subprocess.run([str(venv / "bin" / "flask-pg-deploy"), "init"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "no migrations/env.py" in proc.stderr and "db init" in proc.stderr


NOTE_COLOR = ("    body = db.Column(db.Text)\n", "    body = db.Column(db.Text)\n    color = db.Column(db.String(16))\n")
FAILING = '''"""fails on purpose"""
from alembic import op

revision = "f00dfa11beef"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SELECT 1 / 0")


def downgrade():
    pass
'''


def test_the_adopted_app_goes_from_its_first_migration_to_deploys_rollback_and_backups_on_the_sandbox(adopted, sandbox):
    p = adopted
    # The local half: a classic model's first migration passes the gate with no waiver.
    made = p.inv("migrate", "-m", "create notes")
    assert made.returncode == 0, output(made)
    assert "prefer-bigint-over-int" in made.stdout and "FAILED" not in made.stdout, output(made)
    assert p.inv("upgrade").returncode == 0
    committed = p.inv("commit")
    assert committed.returncode == 0, output(committed)
    p.sandbox = sandbox
    point_at_sandbox(p, sandbox)

    setup = p.fab("setup", db=False)
    assert setup.returncode == 0, output(setup)
    assert "does not set SECRET_KEY" in setup.stdout, output(setup)
    first = p.fab("deploy", db=False)
    assert first.returncode == 0, output(first)
    assert "the database is empty: its history runs into it, which blocks nobody (not linted)" in first.stdout
    release1 = current(p, "app1")
    answer = health(p, "app1")  # the toolkit's, in front of an app that has none
    assert answer["release"] == release1 and answer["status"] == "ok"
    assert json.loads(through_lb_get(p, "/about"))["docopt"] == "0.6.2"  # built from its sdist for the servers
    sql(p, "INSERT INTO note (title) VALUES ('kept')")

    # A deploy whose migration fails is undone: the old release serves, the database is as it was.
    versions = p.root / "migrations" / "versions"
    head = _head(p)
    (versions / "f00dfa11beef_fails.py").write_text(FAILING.format(down=head))
    p.commit_all("a failing migration")
    p.push()
    failed = p.fab("deploy", db=False)
    text = assert_clean_failure(failed)
    assert "division by zero" in text
    assert current(p, "app1") == release1 and sql(p, "SELECT version_num FROM alembic_version") == head
    (versions / "f00dfa11beef_fails.py").unlink()

    # A good second deploy (a new column), then fab rollback: code and schema back, the row kept.
    p.edit("notes.py", *NOTE_COLOR)
    assert p.inv("migrate", "-m", "add note color").returncode == 0
    assert p.inv("upgrade").returncode == 0
    p.commit_all("notes get a color")
    p.push()
    second = p.fab("deploy", db=False)
    assert second.returncode == 0, output(second)
    assert current(p, "app1") != release1 and sql(p, "SELECT version_num FROM alembic_version") != head
    back = p.fab("rollback", db=False)
    assert back.returncode == 0, output(back)
    assert current(p, "app1") == release1 and current(p, "app2") == release1
    assert sql(p, "SELECT version_num FROM alembic_version") == head
    assert sql(p, "SELECT string_agg(title, ',') FROM note") == "kept"

    backup = p.fab("backup", db=False)
    assert backup.returncode == 0, output(backup)
    check = p.fab("backups.check", "--restore-test", db=False)
    assert check.returncode == 0, output(check)


def _head(project) -> str:
    from deploy.migrations import MigrationGraph

    return MigrationGraph(project.root / "migrations").single_head()


def through_lb_get(project, path: str) -> str:
    with urllib.request.urlopen(through_lb(project, path)[0], timeout=10) as answer:
        return answer.read().decode()


OLDER_ENV_PY = '''from alembic import context
from sqlalchemy import engine_from_config, pool


def run_migrations_online():
    engine = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    connection = engine.connect()
    context.configure(connection=connection, target_metadata=target_metadata)
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.close()
'''


def test_an_older_env_py_that_opens_its_connection_without_with_gets_the_one_line_helper_too(tmp_path):
    env_py = tmp_path / "env.py"
    env_py.write_text(OLDER_ENV_PY)
    step = adopt.patch_env_py(env_py)
    assert step.action == "changed", step.detail
    assert "+    connection = locked_connection(engine)" in step.detail
    assert env_py.read_text() == OLDER_ENV_PY.replace(
        "from alembic import context\n", "from alembic import context\nfrom deploy_runtime.migrations import locked_connection\n"
    ).replace("    connection = engine.connect()", "    connection = locked_connection(engine)")
    assert adopt.patch_env_py(env_py).action == "kept"


def test_an_env_py_with_no_single_connect_line_is_left_with_what_to_write(tmp_path):
    env_py = tmp_path / "env.py"
    env_py.write_text("def run():\n    with a.connect() as c:\n        pass\n    with b.connect() as d:\n        pass\n")
    before = env_py.read_text()
    step = adopt.patch_env_py(env_py)
    assert step.action == "todo" and "with migration_connection(ENGINE) as connection:" in step.detail
    assert env_py.read_text() == before


def test_a_virtualenv_inside_the_project_is_ignored_beside_local(tmp_path, monkeypatch):
    (tmp_path / ".gitignore").write_text("venv\n")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / ".venv"))
    step = adopt.ignore_local(tmp_path)
    assert step.action == "changed" and (tmp_path / ".gitignore").read_text().endswith(".local/\n.venv/\n")
    assert adopt.ignore_local(tmp_path).action == "kept"
