"""The remote half of the workflow, as Fabric tasks: a project's fabfile.py imports `ns`.
Each task parses its arguments and calls one function of the toolkit."""
from invoke import Collection

import getpass
import sys

from . import app_env, backups, commands, journal, logs as logs_, maintenance, phases
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
            "download": "also copy the backup and its manifest into this folder (sha256 checked)",
            "type": "pgbackrest engine: full, diff (default) or incr"})
def backup(c, stage=None, label=None, download=None, type=None):
    """Back up the stage's database (pg_dump with a manifest, or a pgBackRest backup)."""
    backups.backup(load_project(), stage, label, download, type)


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
    restore_.restore_any(load_project(), stage, backup_id)


@task(name="to", help={**STAGE, "time": "the moment to restore to (UTC unless an offset is given)",
                       "release": "the restore point its deploy made before migrating",
                       "point": "a restore point by name (fab backups lists them)"})
def restore_to(c, stage=None, time=None, release=None, point=None):
    """pgbackrest engine: restore to a point in time, a release's restore point or a named one (safety point first)."""
    restore_.restore_any(load_project(), stage, None, time, release, point)


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


@task(help={**STAGE, "restart-db": "pgbackrest engine: restart PostgreSQL if WAL archiving needs it (archive_mode)"})
def setup(c, stage=None, restart_db=False):
    """Create the server layout and an env file template (never overwriting one); check the unit."""
    commands.setup(load_project(), stage, restart_db)


@task(help=STAGE)
def lock(c, stage=None):
    """Lock the stage against deploys."""
    commands.lock_stage(load_project(), stage)


@task(help={**STAGE, "force": "also release a lock held by a deploy (only when it is dead)"})
def unlock(c, stage=None, force=False):
    """Release the stage's lock."""
    commands.unlock_stage(load_project(), stage, force)


@task(help={**STAGE, "host": "one host only (default: every host that runs the unit)",
            "since": "as journalctl takes it: '1 hour ago', '2026-11-25 10:00', 'today'",
            "lines": "the last N lines of each host (default: 200; 10 with --follow)",
            "follow": "print new lines as they come, until Ctrl-C",
            "unit": "app (default) or backup (the backup and backup check units)"})
def logs(c, stage=None, host=None, since=None, lines=None, follow=False, unit="app"):
    """The app's journal from every app host, each line prefixed by its host (or the backup units')."""
    logs_.logs(load_project(), stage, host, since, _number("--lines", lines), follow, unit)


@task(name="on", help={**STAGE, "page": "an HTML file to show (default: a plain page of the toolkit)",
                       "retry-after": "seconds for the Retry-After header (default: 300)"})
def maintenance_on(c, stage=None, page=None, retry_after=None):
    """Every request gets a 503 maintenance page, on every app host, until maintenance.off (deploys go on)."""
    seconds = _number("--retry-after", retry_after)
    maintenance.turn_on(load_project(), stage, page, seconds if seconds else 300)


@task(name="off", help=STAGE)
def maintenance_off(c, stage=None):
    """End maintenance mode: the app serves again on every app host."""
    maintenance.turn_off(load_project(), stage)


@task(name="list", help={**STAGE, "show": "print the values too (they are secrets: mind who looks)"})
def env_list(c, stage=None, show=False):
    """The keys of the app's env file on the stage (values hidden unless --show)."""
    app_env.show(load_project(), stage, show)


@task(name="set", positional=["assignment"],
      help={**STAGE, "assignment": "KEY=VALUE; KEY alone: the value is asked for (or read from standard input); "
                                   "-: KEY=VALUE lines from standard input"})
def env_set(c, assignment, stage=None):
    """Set keys in the app's env file on every host, then reload gracefully (all undone if a host fails)."""
    app_env.change(load_project(), stage, sets=app_env.pairs_from(assignment, _secret_input))


@task(name="unset", positional=["keys"], help={**STAGE, "keys": "KEY, or KEY1,KEY2"})
def env_unset(c, keys, stage=None):
    """Remove keys from the app's env file on every host, then reload gracefully."""
    app_env.change(load_project(), stage, unsets=set(filter(None, keys.split(","))))


@task(name="push", positional=["file"], help={**STAGE, "file": "a local env file: it replaces every host's"})
def env_push(c, file, stage=None):
    """Replace the app's env file on every host with FILE, then reload gracefully."""
    app_env.change(load_project(), stage, replacement=app_env.push_text(file))


@task(name="diff", help=STAGE)
def env_diff(c, stage=None):
    """The keys on which the hosts' env files disagree (values never shown); exit 1 if any."""
    app_env.diff(load_project(), stage)


def _secret_input() -> str:
    """A value typed without echo at a terminal, else standard input to its end."""
    if sys.stdin.isatty():
        return getpass.getpass("value (not echoed): ")
    return sys.stdin.read()


def _number(option: str, value):
    if value is None:
        return None
    if not str(value).isdigit():
        raise ConfigError(f"{option} must be a whole number, got {value!r}")
    return int(value)


restore_ns = Collection("restore")
restore_ns.add_task(restore, default=True)
restore_ns.add_task(restore_to)
backups_ns = Collection("backups")
backups_ns.add_task(list_backups, default=True)
backups_ns.add_task(check_backups)
env_ns = Collection("env")
env_ns.add_task(env_list, default=True)
for env_task in (env_set, env_unset, env_push, env_diff):
    env_ns.add_task(env_task)
maintenance_ns = Collection("maintenance", maintenance_on, maintenance_off)
ns = Collection(deploy, migrate, rollback, backup, backups_ns, restore_ns, recover, status, releases, setup, lock, unlock,
                env_ns, logs, maintenance_ns)
