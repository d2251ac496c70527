"""A scratch copy of this repository's demo project (app/, its boards), with its own git
repository, that deploys to a throwaway sandbox: what the tests and the benchmarks change,
commit and deploy. Demo-specific, so it lives here and not in the toolkit."""
from __future__ import annotations

import shutil
from pathlib import Path

from deploy.local.git import git
from deploy.sandbox.spec import Sandbox

PROJECT_FILES = ["app", "migrations", "tasks.py", "fabfile.py", "deploy.toml", "requirements"]


def copy_project(repo: Path, root: Path, author: str) -> None:
    """The project's files copied into `root` (made here), as a new git repository (nothing committed)."""
    root.mkdir()
    for name in PROJECT_FILES:
        source = repo / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    (root / ".gitignore").write_text("__pycache__/\n.local/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", f"{author.lower()}@example.test")
    git(root, "config", "user.name", author)


def retarget(deploy_toml: str, sandbox: Sandbox) -> str:
    """deploy.toml's text with its [sandbox] and sandbox stage pointed at `sandbox`: a copy
    of the project that deploys to a throwaway sandbox (the tests', the benchmarks')."""
    s = sandbox.settings
    for old, new in (('prefix = "fds"', f'prefix = "{s.prefix}"'),
                     ('subnet = "10.213.0.0/24"', f'subnet = "{s.subnet}"'),
                     ('state_dir = ".local/sandbox"', f'state_dir = "{s.state_dir}"'),
                     ('include = ".local/sandbox/stage.toml"', f'include = "{sandbox.stage_file}"')):
        if old not in deploy_toml:
            raise ValueError(f"deploy.toml has no {old!r} to point at the sandbox {s.prefix}")
        deploy_toml = deploy_toml.replace(old, new)
    return deploy_toml


# An edit of the demo's app/__init__.py: a release that boots and migrates, but whose served
# workers cannot reach the database, so its health check fails (a broken release).
BREAK_SERVING = ("    db.init_app(app)\n",
                 '    if "gunicorn" in __import__("sys").modules:  # broken on purpose: served, it reaches no database\n'
                 '        app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg2://nobody@127.0.0.1:9/none"\n'
                 "    db.init_app(app)\n")


def add_column_migration(revision: str, down_revision: str, column: str, message: str, *,
                         then: str = "", downgrade: str = "") -> str:
    """An Alembic migration file adding a nullable text column to boards, then running the
    statement `then` (a failure, a sleep, a write); its downgrade drops the column, or runs
    `downgrade` instead."""
    then = f"\n    {then}" if then else ""
    return f'''"""{message}"""
from alembic import op
import sqlalchemy as sa

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("boards", sa.Column("{column}", sa.Text(), nullable=True)){then}


def downgrade():
    {downgrade or f'op.drop_column("boards", "{column}")'}
'''
