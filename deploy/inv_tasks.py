"""The local half of the workflow, as Invoke tasks: a project's tasks.py imports `ns`.
Each task parses its arguments and calls one function of the toolkit."""
from invoke import Collection

from . import adopt
from .config import load_project
from .local import checks, commands, workflow
from .sandbox import commands as sandbox
from .sandbox.faults import FAULTS
from .tasking import task


@task(help={"message": "what the migration does (its file name and docstring)"})
def migrate(c, message):
    """Autogenerate a migration from model changes; print its SQL, drops and lint."""
    workflow.migrate(load_project(), message)


@task(help={"rev": "target revision (default: head)"})
def upgrade(c, rev=None):
    """Apply migrations to the database (default: up to head)."""
    workflow.upgrade(load_project(), rev)


@task(help={"rev": "target revision (default: one step back)"})
def downgrade(c, rev=None):
    """Revert the database (default: one revision)."""
    workflow.downgrade(load_project(), rev)


@task
def current(c):
    """Show the database's revision, the head and what is pending."""
    workflow.current(load_project())


@task
def history(c):
    """List every revision, marking the database's and the head."""
    workflow.history(load_project())


@task(help={"since": "lint revisions added since this git ref (default: the upstream branch, else all)"})
def lint(c, since=None):
    """Lint the SQL of new migrations with squawk."""
    checks.lint(load_project(), since)


@task
def check(c):
    """Fail on drift, several heads, a broken round trip or lint findings."""
    checks.check(load_project())


@task(help={"message": "commit message (default: the new revisions' messages)"})
def commit(c, message=None):
    """Commit migrations and model changes, only when `inv check` passes and the database is at head."""
    workflow.commit(load_project(), message)


@task(help={"python": "the servers' Python version (default 3.11: Debian 12)"})
def lock(c, python="3.11"):
    """Remake the hashed lock the servers install from ([project] lock) from the .in file beside it."""
    adopt.relock(load_project(), python)


@task(name="up")
def db_up(c):
    """Start the local PostgreSQL (created on first use) and print its URL."""
    commands.db_up(load_project())


@task(name="down")
def db_down(c):
    """Stop the local PostgreSQL."""
    commands.db_down(load_project())


@task(name="reset", help={"empty": "leave the database empty instead of upgrading it to head"})
def db_reset(c, empty=False):
    """Drop and recreate the local app database, then upgrade it to head."""
    commands.db_reset(load_project(), empty)


@task(name="up", help={"hosts": "app hosts, 1 to 8 (default: [sandbox] hosts, or as many as the last up)"})
def sandbox_up(c, hosts=None):
    """Make (or repair) the sandbox fleet: app hosts, a db host and a load balancer, booted with systemd; push HEAD."""
    sandbox.up(load_project(), hosts)


@task(name="image", help={"rebuild": "build it again even when cached"})
def sandbox_image(c, rebuild=False):
    """Build the hosts' Debian 12 image (debootstrap) when missing; it is cached under .local/images."""
    sandbox.build_image(load_project(), rebuild)


@task(name="down")
def sandbox_down(c):
    """Remove everything the sandbox made, and check that nothing is left."""
    sandbox.down(load_project())


@task(name="status", help={"json": "print JSON (for scripts and monitoring)"})
def sandbox_status(c, json=False):
    """Hosts, their roles and addresses, what runs on each, the database and the origin's URL."""
    sandbox.show_status(load_project(), json)


@task(name="fault", help={"host": "app1, app2, ..., db, lb", "action": " | ".join(FAULTS)})
def sandbox_fault(c, host, action):
    """Inject (or undo) a fault: cut a host's network, fill its disk, stop the database, reboot it."""
    sandbox.fault(load_project(), host, action)


ns = Collection(migrate, upgrade, downgrade, current, history, lint, check, commit, lock)
ns.add_collection(Collection("db", db_up, db_down, db_reset))
ns.add_collection(Collection("sandbox", sandbox_up, sandbox_image, sandbox_down, sandbox_status, sandbox_fault))
