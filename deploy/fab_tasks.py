"""The remote half of the workflow, as Fabric tasks: a project's fabfile.py imports `ns`.
Each task parses its arguments and calls one function of the toolkit."""
from invoke import Collection

from . import backups, commands, journal, phases
from . import restore as restore_
from . import rollback as rollback_
from .config import load_project
from .errors import ConfigError
from .tasking import task

STAGE = {"stage": "the stage in deploy.toml (default: [deploy] default_stage)"}


@task(help={**STAGE, "ref": "branch, tag or commit in the stage's repository (default: main)",
            "batch": "app hosts switched at a time (default: the stage's batch, 0 = all)",
            "dry-run": "print the plan (hosts, release, migrations and their SQL, lint, backup); change nothing"})
def deploy(c, stage=None, ref="main", batch=None, dry_run=False):
    """Build a release on every host, back up, migrate once, switch, check health; undo all on failure."""
    commands.deploy(load_project(), stage, ref, _number("--batch", batch), dry_run)


@task(help={**STAGE, "post": "run the serving release's pending post revisions (a backup first)"})
def migrate(c, stage=None, post=False):
    """Run the post revisions a deploy left (post_migrations = "manual", or a failed post phase)."""
    if not post:
        raise ConfigError("fab migrate runs post revisions only: pass --post",
                          hint="pre revisions run with fab deploy, before its switch")
    phases.migrate_post(load_project(), stage)


@task(help={**STAGE, "to": "a release id (default: the previous good release); see fab releases"})
def rollback(c, stage=None, to=None):
    """Code and database back to what a release expects, with a backup first and a health check."""
    rollback_.rollback(load_project(), stage, to)


@task(help={**STAGE, "label": "a word for the backup's id (default: manual)",
            "download": "also copy the backup and its manifest into this folder (sha256 checked)"})
def backup(c, stage=None, label=None, download=None):
    """Back up the stage's database (pg_dump on the migrations host, with a manifest)."""
    backups.backup(load_project(), stage, label, download)


@task(name="list", help={**STAGE, "json": "print JSON"})
def list_backups(c, stage=None, json=False):
    """The stage's backups: id, time, size, revision, release, last verification."""
    backups.list_backups(load_project(), stage, json)


@task(name="check", help={**STAGE, "json": "print JSON",
                          "restore-test": "also restore it into a scratch database now (default: every "
                                          "backups.restore_test_days)",
                          "skip-restore-test": "not this time, even if one is due"})
def check_backups(c, stage=None, json=False, restore_test=False, skip_restore_test=False):
    """Check the newest backup (age, size, sha256, full read, restore test); exit 0 OK, 1 WARNING, 2 CRITICAL."""
    if restore_test and skip_restore_test:
        raise ConfigError("--restore-test and --skip-restore-test contradict each other")
    backups.check(load_project(), stage, json, True if restore_test else False if skip_restore_test else None)


@task(positional=["backup_id"], help={**STAGE, "backup_id": "an id from fab backups"})
def restore(c, backup_id, stage=None):
    """Restore a verified backup: safety backup first, app stopped meanwhile, put back if it fails."""
    restore_.restore(load_project(), stage, backup_id)


@task(help=STAGE)
def recover(c, stage=None):
    """Undo a deploy, rollback or restore whose controller was killed (or whose undo failed), from its journal."""
    journal.recover(load_project(), stage)


@task(help={**STAGE, "json": "print JSON"})
def status(c, stage=None, json=False):
    """Per host: current release, service, health; the lock holder."""
    commands.status(load_project(), stage, json)


@task(help={**STAGE, "json": "print JSON"})
def releases(c, stage=None, json=False):
    """The releases on the stage, with their status (current / good / failed)."""
    commands.releases(load_project(), stage, json)


@task(help=STAGE)
def setup(c, stage=None):
    """Create the server layout and an env file template (never overwriting one); check the unit."""
    commands.setup(load_project(), stage)


@task(help=STAGE)
def lock(c, stage=None):
    """Lock the stage against deploys."""
    commands.lock_stage(load_project(), stage)


@task(help={**STAGE, "force": "also release a lock held by a deploy (only when it is dead)"})
def unlock(c, stage=None, force=False):
    """Release the stage's lock."""
    commands.unlock_stage(load_project(), stage, force)


def _number(option: str, value):
    if value is None:
        return None
    if not str(value).isdigit():
        raise ConfigError(f"{option} must be a whole number, got {value!r}")
    return int(value)


backups_ns = Collection("backups")
backups_ns.add_task(list_backups, default=True)
backups_ns.add_task(check_backups)
ns = Collection(deploy, migrate, rollback, backup, backups_ns, restore, recover, status, releases, setup, lock, unlock)
