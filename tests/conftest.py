"""Fixtures: a real PostgreSQL cluster for the session, a fresh database per
test, and scratch copies of the project (its own git repository) to run the
`inv` tasks in, as a user would."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.scratch import copy_project, retarget
from deploy.database import create_database, drop_database
from deploy.local.database import LocalCluster
from deploy.local.git import git
from deploy.sandbox import fleet
from deploy.sandbox.spec import Sandbox

REPO = Path(__file__).resolve().parent.parent
# A run started in the background by a shell without job control (`cmd &`) inherits SIGINT
# ignored, and so would every `fab` it starts: the Ctrl-C tests need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Test clusters live in a folder the `postgres` user can reach (as root, the
# cluster runs as that user), whatever the permissions above the checkout.
SCRATCH = Path(tempfile.mkdtemp(prefix="flask-pg-deploy-tests-"))
SCRATCH.chmod(0o755)
# xdist's controlling process imports this file too but runs no fixture: its folder, empty, goes at
# exit (never more than an empty folder: a sandbox left mounted in one is not to be walked into).
atexit.register(lambda: SCRATCH.exists() and not any(SCRATCH.iterdir()) and SCRATCH.rmdir())


@pytest.fixture(scope="session", autouse=True)
def scratch() -> Path:
    """Removed last, after every cluster and sandbox living in it is gone."""
    yield SCRATCH
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> LocalCluster:
    cluster = LocalCluster(SCRATCH / f"postgres-{os.getpid()}", "postgres")
    cluster.up()
    yield cluster
    cluster.destroy()


@pytest.fixture
def database_url(pg_cluster: LocalCluster) -> str:
    name = f"test_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_cluster.url_for("postgres"), name)
    yield url
    drop_database(url, name)


def sandbox_spec(prefix: str, subnet: str, app_hosts: int = 2) -> Sandbox:
    """A sandbox of the tests' own (its own names and subnet), beside any `inv sandbox.up` one."""
    return Sandbox.throwaway(prefix, subnet, SCRATCH / f"sandbox-{prefix}", REPO, app_hosts)


def fleet_network(worker_id: str) -> tuple[str, str]:
    """The prefix and subnet of a worker's fleet: `./dev test` runs two pytest-xdist workers, each
    with a fleet of its own, so that the fleet's tests run in both (a single process: the first)."""
    n = int(worker_id[2:]) if worker_id.startswith("gw") else 0
    if n > 6:
        raise RuntimeError("at most 7 workers: each needs a fleet prefix and subnet of its own")
    return f"fd{'tuvwxyz'[n]}", f"10.213.{9 + 10 * n}.0/24"


@pytest.fixture(scope="session")
def sandbox_fleet(worker_id: str) -> Sandbox:
    """The worker's fleet: 2 app hosts, a db host, a backup host and a load balancer, made once
    (leftovers of a killed run removed first)."""
    spec = sandbox_spec(*fleet_network(worker_id))
    fleet.down(spec)
    try:
        fleet.up(spec, REPO)
    except BaseException:
        fleet.down(spec)
        raise
    yield spec
    fleet.down(spec)


@pytest.fixture
def sandbox(sandbox_fleet: Sandbox) -> Sandbox:
    """The session's fleet with clean hosts, links up, disks free and an empty app database.

    The built Python environments (caches keyed by the lock file) are kept, so
    that each deploy test does not upload and install the same wheels again.
    """
    fleet.reset(sandbox_fleet, keep=ENV_CACHES)
    return sandbox_fleet


ENV_CACHES = ("/srv/app/shared/venvs", "/srv/app/shared/wheels")


@pytest.fixture
def clean_sandbox(sandbox_fleet: Sandbox) -> Sandbox:
    """Like `sandbox`, but with nothing at all kept under /srv (a first deploy onto empty hosts)."""
    fleet.reset(sandbox_fleet)
    return sandbox_fleet


@dataclass
class Project:
    """A scratch copy of the project, with its own git history and database."""

    root: Path
    database_url: str
    sandbox: Sandbox | None = None

    def run(self, *argv: str, env: dict | None = None, db: bool = True, input: str | None = None
            ) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, NO_COLOR="1", **(env or {}))
        full_env.pop("DATABASE_URL", None)
        if db:
            full_env["DATABASE_URL"] = self.database_url
        return subprocess.run(list(argv), cwd=self.root, env=full_env, capture_output=True, text=True, timeout=240,
                              input=input)

    def inv(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "invoke", *args, **kw)

    def fab(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "fabric", *args, **kw)

    def flask_db(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "flask", "--app", "app:create_app", "db", *args, **kw)

    def edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / relative
        text = path.read_text()
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new))

    def versions(self) -> list[Path]:
        return sorted((self.root / "migrations" / "versions").glob("*.py"))

    def push(self, branch: str = "main") -> None:
        git(self.root, "push", "--quiet", "--force", str(self.sandbox.origin), f"HEAD:refs/heads/{branch}")

    def commit_all(self, message: str) -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", message)


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    root = tmp_path / "project"
    copy_project(REPO, root, "Dev")
    proj = Project(root, database_url)
    proj.commit_all("seed")
    return proj


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def assert_clean_failure(proc: subprocess.CompletedProcess) -> str:
    """A refused task: non-zero exit, a message, no traceback."""
    text = output(proc)
    assert proc.returncode != 0, text
    assert "Traceback" not in text, text
    return text


def point_at_sandbox(project: Project, sandbox: Sandbox) -> None:
    """Make the project copy's [sandbox] and sandbox stage the test fleet's, and push its HEAD there."""
    path = project.root / "deploy.toml"
    path.write_text(retarget(path.read_text(), sandbox))
    # undo_expand: the tests of a failed deploy's full undo; test_expand_contract.py tests the default, "keep".
    project.edit("deploy.toml", "health_timeout = 30\n", 'health_timeout = 10\nundo_expand = "downgrade"\n')
    project.commit_all("point at the test sandbox")
    project.push()


@pytest.fixture
def staged(project: Project, sandbox: Sandbox) -> Project:
    """A project copy whose `sandbox` stage is the test fleet, its HEAD pushed as main."""
    project.sandbox = sandbox
    point_at_sandbox(project, sandbox)
    return project


@pytest.fixture
def deployed(staged: Project) -> Project:
    """The seed commit deployed and healthy on the test fleet, with two boards."""
    from fleet_helpers import deploy_and_seed

    return deploy_and_seed(staged, "kept", "also kept")
