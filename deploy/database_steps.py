"""The deploy's database steps: the pre-deploy backup, the pre revisions, and their undo
(downgrade, keep an expanded schema the old release was checked on, or restore only when
nothing but the migration wrote since the backup)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import backups, console, pgbr, pgbr_restore, restore
from .console import indent
from .errors import DeployError, MigrationError
from .migrations import MIGRATION_LOCK_KEY, error_summary
from .ssh import dbops, server_tools
from .ssh.connection import HostError

if TYPE_CHECKING:
    from .steps import Deploy


def backup(d: Deploy) -> None:
    if not d.pending:
        console.say("  no migration to run: no backup needed")
        return
    if d.stage.backups.engine == "pgbackrest":
        d.backup = pgbr.safety_point(d.stage, d.remotes, f"{d.release_id}-predeploy", d.release_id)
        d.say(pgbr.db_host(d.stage).name, f"restore point {d.backup['name']} at {d.backup['lsn']} (timeline "
              f"{d.backup['timeline']}); archive checked in {d.backup['archive_check_seconds']}s; "
              f"reachable from backup {d.backup['base_backup']}")
        return
    d.backup = backups.take(d.stage, d.remotes, "predeploy", backup_id=f"{d.release_id}-predeploy",
                            release=d.release_id, content=True)
    host = d.backup_remote.name
    d.say(host, f"backup {d.backup['id']}: {d.backup['size']} bytes, sha256 {d.backup['sha256'][:12]}")
    backups.say_pruned(d.backup, lambda text: d.say(host, text.strip()))


def migrate(d: Deploy) -> None:
    """The pre revisions, once, from the migrations host (the post ones wait for the switch)."""
    if not d.pre:
        return
    risky = [r.label() for r in d.pre if r.non_transactional]
    if risky:
        console.warn("not atomic (autocommit blocks): " + ", ".join(risky) + "; a failure may leave part applied")
    d.migrated = True
    try:
        dbops.flask_db(d.migrator, d.layout, d.release_id, d.app, "upgrade", d.pre[-1].id,
                       env=dbops.migration_env(d.stage), timeout=3600)
    except HostError as exc:
        if not exc.output:
            raise  # the host, not the migration: lost connection, timeout
        if exc.killed:
            raise MigrationError(f"the migration process on {d.migrator.name} was killed (exit status {exc.exited})",
                                 hint="find out what killed it (the OOM killer? an operator?), then deploy again") from None
        raise MigrationError(f"the migration failed on {d.migrator.name}:\n{indent(error_summary(exc.output))}",
                             hint="fix the migration, commit, push, deploy again") from None
    after, d.migration_xids = dbops.revision_and_writers(d.migrator, d.layout)
    d.migrated_to = after
    d.say(d.migrator.name, f"database {d.db_before or '(empty)'} -> {after}")


def undo_migrate(d: Deploy) -> None:
    """Back to the revision the database had: verify, downgrade, or stop and say exactly where it is."""
    if not d.migrated:
        return
    ended = server_tools.end_migrations(d.migrator, d.layout, MIGRATION_LOCK_KEY)
    if ended:  # its client died (killed, or the connection lost): its transaction would hold its locks
        d.notes.append(f"ended the migration's orphaned database session(s) {', '.join(map(str, ended))}; "
                       "their open transaction rolled back")
    now = dbops.current_revision(d.migrator, d.layout)
    if d.compatible and d.stage.undo_expand == "keep" and now == d.migrated_to:
        d.schema_kept = True
        d.notes.append(f"database kept at {now}: the old release was checked to work on it before the switch, and "
                       "a downgrade would drop what the new release wrote (undo_expand = \"keep\"); its health "
                       "path says 503 (database ahead) until the next deploy, its liveness path 200")
        return
    if now == d.db_before:
        risky = [r.label() for r in d.pre if r.non_transactional]
        if risky:  # an autocommit block commits as it goes: the revision can be old while its work stays
            d.notes.append(f"database at {d.db_before or '(empty)'}, but {', '.join(risky)} ran outside a "
                           "transaction: what it did before failing may remain (e.g. an index built "
                           "CONCURRENTLY); such revisions are written to be rerun (IF NOT EXISTS)")
            return
        d.notes.append(f"database untouched at {d.db_before or '(empty)'} (the failed migration rolled back)")
        return
    if d.stage.rollback != "stop":
        down = dbops.flask_db(d.migrator, d.layout, d.release_id, d.app, "downgrade", d.db_before or "base",
                              check=False, timeout=3600)
        now = dbops.current_revision(d.migrator, d.layout)
        if down.exited == 0 and now == d.db_before:
            d.notes.append(f"database downgraded to {d.db_before or '(empty)'}")
            return
    if d.stage.rollback == "downgrade-or-restore" and d.backup:
        _restore_unless_written(d, now)
        return
    backup_note = f"; the pre-deploy backup is {d.backup['id']}" if d.backup else ""
    raise DeployError(f"the database is at {now}, not at {d.db_before} as before the deploy{backup_note}",
                      hint=f"inspect it; downgrade with the release {d.release_id}'s code, or "
                           f"fab restore --stage {d.stage.name} {d.backup['id'] if d.backup else 'BACKUP_ID'}")


def _restore_unless_written(d: Deploy, now: str | None) -> None:
    """The downgrade failed: restore the pre-deploy backup, but only if it is proven that
    nothing but the migration wrote since (server/unwritten.py), with every writer of the
    app stopped first; otherwise stop and say exactly what to run."""
    backup_id = d.backup["id"]
    if d.backup.get("engine") == "pgbackrest":
        result, reasons = pgbr_restore.restore_point_if_unwritten(d.stage, d.remotes, d.backup, d.migration_xids)
    else:
        result, reasons = restore.restore_if_unwritten(d.stage, d.remotes, backup_id, d.migration_xids)
    point = d.backup.get("engine") == "pgbackrest"
    what = f"restore point {backup_id}" if point else f"backup {backup_id}"
    if reasons:
        raise DeployError(
            f"the database is at {now}, not {d.db_before or '(empty)'}: the downgrade failed, and the pre-deploy "
            f"{what} was not restored: it cannot be proven that nothing was written since "
            f"({'; '.join(reasons)}); restoring would lose it",
            hint=f"save what you need, then fab restore --stage {d.stage.name} "
                 f"{'--point ' if point else ''}{backup_id}; or finish the downgrade by hand")
    d.notes.append(f"database restored {'to' if point else 'from'} the pre-deploy {what} (the downgrade failed; "
                   f"nothing but the migration wrote since); the database as it was is in the safety "
                   f"{'point' if point else 'backup'} {result.get('safety')}")
