"""`inv lint` and `inv check`: what must hold before a migration is committed."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field

from .. import console
from ..config import ProjectConfig, database_url
from ..database import create_database, drop_database
from ..errors import CheckFailed, CommandFailed, DeployError
from ..lint import LintReport, lint_revisions
from ..migrations import FlaskDb, MigrationGraph, Revision
from . import git


def revisions_since(project: ProjectConfig, graph: MigrationGraph, since: str | None) -> tuple[list[Revision], str]:
    """The revisions whose files are not at `since` (default: the upstream branch, else all)."""
    root = project.root
    if since is None and git.is_repository(root):
        since = git.upstream(root)
    if since is None:
        return graph.ordered(), "all revisions (no upstream branch to compare with)"
    if not git.is_repository(root):
        raise DeployError(f"--since {since!r} needs a git repository; {root} is not one")
    commit = git.resolve_commit(root, since)
    known = {p.resolve() for p in git.files_at(root, commit, project.migrations_dir)}
    fresh = [rev for rev in graph.ordered() if rev.path.resolve() not in known]
    return fresh, f"revisions added since {since} ({commit[:10]})"


def lint(project: ProjectConfig, since: str | None = None) -> LintReport:
    """Lint the revisions added since `since`; print the report; raise when it fails."""
    graph = MigrationGraph(project.migrations_dir)
    revisions, scope = revisions_since(project, graph, since)
    console.say(f"lint: {scope}")
    report = lint_revisions(project, graph, revisions)
    console.say(report.render(project.root))
    if report.failed:
        raise CheckFailed("lint failed:\n" + "\n".join("  - " + p for p in report.problems()),
                          hint="fix the migration, or waive the rule in its file with a reason")
    return report


@dataclass
class CheckResult:
    name: str
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def round_trip(project: ProjectConfig, url: str) -> list[str]:
    """Upgrade → downgrade → upgrade each revision on `url` (an empty database)."""
    argv = [sys.executable, "-m", "deploy.local.roundtrip", "--app", project.app,
            "--directory", str(project.migrations_dir)]
    env = dict(os.environ, DATABASE_URL=url)
    proc = subprocess.run(argv, cwd=project.root, env=env, capture_output=True, text=True)
    problems, passed = [], 0
    for line in proc.stdout.splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        if result["ok"]:
            passed += 1
        else:
            problems.append(f"revision {result['revision']} ({result['message']}) failed at "
                            f"{result['step']}: {result['error']}")
    if proc.returncode != 0 and not problems:
        problems.append(f"the round trip could not run (exit {proc.returncode}): "
                        + (proc.stderr.strip().splitlines() or ["no output"])[-1])
    return problems


def drift(project: ProjectConfig, url: str) -> list[str]:
    """Alembic's check on a database at head: do the models match the migrations?"""
    try:
        FlaskDb(project, url).run("check")
    except CommandFailed as exc:
        found = re.search(r"New upgrade operations detected: (.*)", exc.output)
        detail = found.group(1).strip() if found else exc.output.strip().splitlines()[-1]
        return [f"models and migrations disagree; autogenerate would write: {detail}"]
    return []


def check(project: ProjectConfig) -> list[CheckResult]:
    """Run every check, print a line for each, and raise one CheckFailed listing all problems."""
    graph = MigrationGraph(project.migrations_dir)
    results = [CheckResult("single head")]
    heads = graph.heads()
    if len(heads) != 1:
        results[0].problems.append(f"{len(heads)} heads: {', '.join(heads) or 'none'} "
                                   f"(merge them: flask db merge -m 'merge heads' {' '.join(heads)})")
    trip, models = CheckResult("round trip (upgrade, downgrade, upgrade)"), CheckResult("models match migrations")
    if results[0].ok:
        scratch = f"check_{uuid.uuid4().hex[:12]}"
        server = database_url(project)
        scratch_url = create_database(server, scratch)
        try:
            trip.problems = round_trip(project, scratch_url)
            if trip.ok:
                models.problems = drift(project, scratch_url)
            else:
                models.skipped = "needs a passing round trip"
        finally:
            drop_database(server, scratch)
    else:
        trip.skipped = models.skipped = "needs a single head"
    linted = CheckResult("lint")
    try:
        report = lint_revisions(project, graph, revisions_since(project, graph, None)[0])
        linted.problems = report.problems()
    except DeployError as exc:
        linted.problems = [str(exc)]
    results += [trip, models, linted]
    _print_results(results)
    problems = [f"{r.name}: {p}" for r in results for p in r.problems]
    if problems:
        raise CheckFailed("check failed:\n" + "\n".join("  - " + p for p in problems))
    return results


def _print_results(results: list[CheckResult]) -> None:
    for r in results:
        if r.skipped:
            console.say(f"skip  {r.name} ({r.skipped})")
        elif r.ok:
            console.say(f"ok    {r.name}")
        else:
            console.say(f"FAIL  {r.name}")
            for p in r.problems:
                console.say(console.indent(p, "      "))
