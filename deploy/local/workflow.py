"""The local migration workflow: migrate → review → upgrade → commit.

One function per verb, configuration first (as Alembic's command.py). Each
refuses with the step that was skipped and the command that fixes it.
"""
from __future__ import annotations

import re
from pathlib import Path

from .. import console
from ..config import ProjectConfig, database_url
from ..database import current_revisions, redact
from ..errors import CheckFailed, CommandFailed, DeployError, WorkflowRefused
from ..lint import OFFLINE_URL, lint_revisions
from ..migrations import FlaskDb, MigrationGraph, Revision, destructive_statements, revision_range
from . import checks, git


def _describe(revs: tuple[str, ...]) -> str:
    return ", ".join(revs) if revs else "no revision (empty database)"


def current(project: ProjectConfig) -> tuple[str, ...]:
    """Print the database's revision, the migrations' head, and what is pending."""
    graph = MigrationGraph(project.migrations_dir)
    url = database_url(project)
    revs = current_revisions(url)
    console.say(f"database: {redact(url)}")
    console.say(f"current:  {_describe(revs)}")
    console.say(f"head:     {', '.join(graph.heads()) or 'none'}")
    if len(graph.heads()) == 1:
        pending = graph.pending(revs)
        if pending:
            console.say(f"pending:  {len(pending)} revision(s): " + ", ".join(r.label() for r in pending))
            console.say("next:     inv upgrade")
        else:
            console.say("pending:  none (the database is at head)")
    return revs


def history(project: ProjectConfig) -> None:
    """Print every revision, base first, marking the database's and the head."""
    graph = MigrationGraph(project.migrations_dir)
    try:
        revs = set(current_revisions(database_url(project)))
    except DeployError:
        revs = set()
    heads = set(graph.heads())
    for rev in graph.ordered():
        marks = [m for m, on in (("current", rev.id in revs), ("head", rev.id in heads),
                                 ("non-transactional", rev.non_transactional),
                                 ("post", rev.phase == "post")) if on]
        parent = ",".join(rev.parents) or "base"
        console.say(f"{parent:>12} -> {rev.id}  {rev.message}" + (f"  ({', '.join(marks)})" if marks else ""))


def upgrade(project: ProjectConfig, revision: str | None = None) -> tuple[str, ...]:
    """Apply migrations up to `revision` (default: head) to the database."""
    graph = MigrationGraph(project.migrations_dir)
    target = revision or graph.single_head()
    url = database_url(project)
    before = current_revisions(url)
    pending = graph.pending(before, target) if target in graph else None
    if pending == []:
        console.ok(f"nothing to do: the database is at {_describe(before)}")
        return before
    try:
        FlaskDb(project, url).run("upgrade", target, stream=True)
    except CommandFailed as exc:
        exc.hint = _state_after_failure(before, current_revisions(url), pending or []) + \
            "; fix the migration, then `inv upgrade` again"
        raise
    after = current_revisions(url)
    console.ok(f"upgraded {_describe(before)} -> {_describe(after)}")
    return after


def _state_after_failure(before: tuple[str, ...], after: tuple[str, ...], pending: list[Revision]) -> str:
    """Where a failed upgrade left the database, read from it rather than assumed."""
    if after != before:
        return f"the database is now at {_describe(after)} (it was at {_describe(before)})"
    state = f"the database is still at {_describe(before)}: the upgrade's transaction was rolled back"
    partial = [r.id for r in pending if r.non_transactional]
    if partial:
        state += f", except what the autocommit block of {', '.join(partial)} committed (not atomic)"
    return state


def downgrade(project: ProjectConfig, revision: str | None = None) -> tuple[str, ...]:
    """Revert the database to `revision` (default: one step back)."""
    url = database_url(project)
    before = current_revisions(url)
    if not before:
        raise WorkflowRefused("nothing to downgrade: the database has no revision")
    FlaskDb(project, url).run("downgrade", revision or "-1", stream=True)
    after = current_revisions(url)
    console.ok(f"downgraded {_describe(before)} -> {_describe(after)}")
    return after


def _require_at_head(graph: MigrationGraph, url: str, action: str) -> str:
    head = graph.single_head()
    revs = current_revisions(url)
    if revs != (head,):
        pending = graph.pending(revs) if all(r in graph for r in revs) else []
        listed = ", ".join(r.label() for r in pending) or "unknown"
        raise WorkflowRefused(
            f"the local database is at {_describe(revs)} but the migrations' head is {head}; "
            f"pending: {listed}. {action}",
            hint="inv upgrade",
        )
    return head


def migrate(project: ProjectConfig, message: str) -> Path | None:
    """Autogenerate a revision from the model changes; print its SQL and lint."""
    if not message or not message.strip():
        raise WorkflowRefused("a migration needs a message", hint='inv migrate -m "add cards.due_date"')
    graph = MigrationGraph(project.migrations_dir)
    url = database_url(project)
    if not graph.heads() and not current_revisions(url):
        console.say("no revisions yet: this will be the first migration")
    else:
        _require_at_head(graph, url, "A migration generated now would repeat the pending ones.")
    versions = project.migrations_dir / "versions"
    before = set(versions.glob("*.py"))
    FlaskDb(project, url).run("migrate", "-m", message.strip())
    created = sorted(set(versions.glob("*.py")) - before)
    if not created:
        console.ok("no model changes: autogenerate found nothing to migrate, so no revision was written")
        return None
    path = created[0]
    if _is_empty_revision(path):
        path.unlink()
        console.ok(f"no model changes: deleted the empty revision {path.name}")
        return None
    graph = MigrationGraph(project.migrations_dir)
    revision = graph.revision_for_path(path)
    _review(project, graph, revision)
    return path


def _is_empty_revision(path: Path) -> bool:
    body = re.search(r"def upgrade\(\):\s*(.*?)\n\ndef downgrade", path.read_text(), re.S)
    lines = [line.strip() for line in (body.group(1) if body else "").splitlines()]
    return all(not line or line.startswith("#") or line == "pass" for line in lines)


def _review(project: ProjectConfig, graph: MigrationGraph, revision: Revision) -> None:
    """Print what a new revision will do: its file, its SQL, drops and lint."""
    console.heading(f"new revision {revision.id}: {revision.message}")
    console.say(f"file: {revision.path.relative_to(project.root)}")
    sql = FlaskDb(project, OFFLINE_URL).offline_sql(revision_range(graph, [revision]))
    console.heading("SQL (offline render of this revision)")
    console.say(sql.strip())
    drops = destructive_statements(sql)
    if drops:
        console.banner(
            ["THIS REVISION DROPS DATA:", *drops,
             "If a model was renamed or not imported, autogenerate reads it as deleted.",
             "Edit the migration (op.rename_table / op.alter_column) unless the drop is intended."]
        )
    if revision.non_transactional:
        console.warn("this revision uses an autocommit block: it is not atomic")
    console.heading("lint")
    report = lint_revisions(project, graph, [revision])
    console.say(report.render(project.root))
    if report.failed:  # autogenerate may also have picked up drift between the models and the history
        console.say("next: edit the migration until `inv lint` passes (or waive a rule in it, with a reason; "
                    "a change you did not make may be older drift between your models and migrations), "
                    "then `inv upgrade`, `inv check` and `inv commit`")
    else:
        console.say("next: review the file, then `inv upgrade`, `inv check` and `inv commit`")


def commit(project: ProjectConfig, message: str | None = None) -> str:
    """Commit migrations/ and the changed model files, only when the workflow was followed."""
    root = project.root
    if not git.is_repository(root):
        raise WorkflowRefused(f"{root} is not a git repository")
    graph = MigrationGraph(project.migrations_dir)
    _require_at_head(graph, database_url(project),
                     "The new migration was never applied locally: `inv upgrade` was skipped.")
    try:
        checks.check(project)
    except CheckFailed as exc:
        raise WorkflowRefused(f"refusing to commit, `inv check` fails:\n{exc.message}",
                              hint=_skipped_step(exc.message)) from None
    paths = git.changed(root, [project.migrations_dir, *(root / m for m in project.models)])
    if not paths:
        console.ok("nothing to commit: migrations and models have no changes")
        return ""
    new_revs = [r for p in paths if (r := graph.revision_for_path(p))]
    message = message or "; ".join(f"Migration {r.id}: {r.message}" for r in new_revs) or "Update models and migrations"
    sha = git.commit_paths(root, paths, message)
    console.ok(f"committed {sha}: {message}")
    for p in paths:
        console.say(f"  {p.relative_to(root)}")
    return sha


def _skipped_step(problems: str) -> str:
    if "models and migrations disagree" in problems:
        return '`inv migrate -m "..."` was skipped: the models changed but no migration records it'
    if "heads" in problems:
        return "merge the heads (flask db merge heads), then `inv upgrade` and `inv check`"
    if "round trip" in problems:
        return "a migration's downgrade does not undo its upgrade: fix it, then `inv check`"
    return "fix the lint findings (or waive them with a reason), then `inv check`"
