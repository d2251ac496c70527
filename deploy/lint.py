"""squawk over the SQL each revision runs, with findings mapped back to revisions.

Each revision's offline SQL is linted on its own, prefixed with the timeout
settings env.py emits, so a finding names the migration file that caused it.
A migration may waive a rule only in its own file, with a reason:

    # lint: waive require-concurrent-index-creation because the table is new and empty

Waivers are shown in the report; a waiver without a reason is itself a failure. Rules in
`[lint] warn` (by default squawk's advice on types and style) are reported and never fail:
the gate is for locks, rewrites and compatibility. A statement that breaks the release still
serving during the deploy (a drop, a rename, an incompatible type, a new NOT NULL) fails in a
pre revision with the way out; a drop in a post revision is what it is for, and passes.
Revisions up to `[lint] baseline` (an adopted project's history, long applied) are not linted.
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deploy_runtime.migrations import offline_settings

from .config import ProjectConfig
from .errors import DeployError, MigrationError
from .local.tools import installed_tool
from .migrations import FlaskDb, MigrationGraph, Revision, split_offline_sql

# Statements that break the release still serving while the deploy runs (it reads or writes
# what they change): a pre revision with one fails, with the way out.
BREAKING_RULES = ("ban-drop-column", "ban-drop-table", "renaming-column", "renaming-table", "changing-column-type",
                  "adding-required-field", "adding-not-nullable-field")
# What a post revision is for: it runs once no host serves code that uses the dropped column or table.
CONTRACT_RULES = ("ban-drop-column", "ban-drop-table")
EXPAND_CONTRACT_FIX = ("make the revision post (phase = \"post\") if it only removes what the new code no longer "
                       "uses; else split it into expand, backfill and contract across deploys "
                       "(docs/expand-contract.md)")
EXPAND_CONTRACT = "it breaks the release that serves until the switch: " + EXPAND_CONTRACT_FIX
WAIVER = re.compile(r"#\s*lint:\s*waive\s+(?P<rule>[\w-]+)(?:\s+because\s+(?P<reason>.*\S))?", re.I)
# Rendering offline SQL needs the dialect, not a server.
OFFLINE_URL = "postgresql://offline@localhost/offline"


@dataclass(frozen=True)
class Waiver:
    rule: str
    reason: str
    line: int


@dataclass(frozen=True)
class Finding:
    revision: Revision
    rule: str
    message: str
    help: str
    statement: str
    waiver: Waiver | None = None
    warning: bool = False  # style advice: reported, never failing
    contract: bool = False  # a drop in a post revision: what it is for
    breaking: bool = False  # breaks the release serving until the switch (its help says the way out)

    @property
    def fails(self) -> bool:
        return self.waiver is None and not self.warning and not self.contract


@dataclass
class LintReport:
    revisions: list[Revision]
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(f.fails for f in self.findings)

    def problems(self) -> list[str]:
        """One line per reason the lint failed."""
        lines = list(self.errors)
        for f in self.findings:
            if f.fails:
                way_out = f" ({EXPAND_CONTRACT})" if f.breaking else ""
                lines.append(f"{f.revision.path.name} ({f.revision.id}): {f.rule}: {f.message}{way_out}")
        return lines

    def render(self, root: Path) -> str:
        if not self.revisions:
            return "lint: no revisions to lint"
        out = []
        for rev in self.revisions:
            found = [f for f in self.findings if f.revision.id == rev.id]
            status = "FAIL" if any(f.fails for f in found) else "ok"
            out.append(f"{status:4} {_relative(rev.path, root)}  revision {rev.id}: {rev.message}")
            for f in found:
                tag = ("waived" if f.waiver else "warning" if f.warning else
                       "contract (post: runs after the switch)" if f.contract else "fails")
                out.append(f"     {tag}: [{f.rule}] {f.message}")
                out.append(f"       statement: {f.statement}")
                if f.help:
                    out.append(f"       help: {f.help}")
                if f.waiver:
                    out.append(f"       waived at line {f.waiver.line}: {f.waiver.reason}")
        for err in self.errors:
            out.append(f"error: {err}")
        failing = sum(f.fails for f in self.findings)
        waived = sum(f.waiver is not None for f in self.findings)
        warnings = sum(f.warning and f.waiver is None for f in self.findings)
        not_linted = f", {len(self.errors)} could not be linted" if self.errors else ""
        out.append(
            f"lint: {len(self.revisions)} revision(s), {failing} failing finding(s), {warnings} warning(s), "
            f"{waived} waived{not_linted}: {'FAILED' if self.failed else 'passed'}"
        )
        return "\n".join(out)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def read_waivers(path: Path) -> tuple[dict[str, Waiver], list[str]]:
    """The waivers written in a migration file, and the errors in them."""
    waivers, errors = {}, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = WAIVER.search(line)
        if not match:
            continue
        rule, reason = match.group("rule"), (match.group("reason") or "").strip()
        if not reason:
            errors.append(
                f"{path.name}:{number}: waiver of {rule} has no reason "
                f"(write `# lint: waive {rule} because <why it is safe>`)"
            )
            continue
        waivers[rule] = Waiver(rule, reason, number)
    return waivers, errors


def squawk_binary() -> str:
    return installed_tool("squawk", "it lints the migrations' SQL", "squawk-cli")


def run_squawk(sql: str, filename: str, project: ProjectConfig) -> list[dict]:
    """squawk's findings (JSON) for one SQL text."""
    argv = [squawk_binary(), "--reporter", "json", "--pg-version", project.lint.pg_version,
            "--stdin-filepath", filename]
    if project.lint.exclude:
        argv += ["--exclude", ",".join(project.lint.exclude)]
    proc = subprocess.run(argv, input=sql, capture_output=True, text=True)
    try:
        findings = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        findings = None
    if proc.returncode not in (0, 1) or not isinstance(findings, list):
        raise DeployError(f"squawk failed on {filename} (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return findings


def render_revisions(project: ProjectConfig, graph: MigrationGraph) -> tuple[str, dict[str, str]]:
    """The timeout settings and every revision's upgrade SQL, one offline render per head. A stock
    env.py emits no settings offline; its online runs set them (migration_connection), so they
    are judged as set."""
    flask_db = FlaskDb(project, OFFLINE_URL)
    settings, chunks = "", {}
    for head in graph.heads():
        head_settings, head_chunks = split_offline_sql(flask_db.offline_sql(head))
        settings = settings or head_settings
        chunks.update(head_chunks)
    return settings or offline_settings().strip(), chunks


def lint_revisions(project: ProjectConfig, graph: MigrationGraph, revisions: list[Revision]) -> LintReport:
    """Lint the upgrade SQL of `revisions` (those after the baseline); every problem ends up in the report."""
    baseline = project.lint.baseline
    if baseline and baseline not in graph:
        return LintReport(revisions=revisions, errors=[f"[lint] baseline {baseline} is not a revision of {graph.directory}"])
    if baseline:
        after = {r.id for r in graph.pending((baseline,))}
        revisions = [r for r in revisions if r.id in after]
    report = LintReport(revisions=revisions)
    if not revisions:
        return report
    try:
        settings, chunks = render_revisions(project, graph)
    except MigrationError as exc:
        report.errors.append(str(exc))
        return report
    for rev in revisions:
        waivers, waiver_errors = read_waivers(rev.path)
        report.errors += waiver_errors
        sql = chunks.get(rev.id)
        if sql is None:
            report.errors.append(f"{rev.path.name}: no SQL was rendered for revision {rev.id}")
            continue
        text = f"{settings}\n{sql}" if settings else sql
        lines = text.splitlines()
        for item in run_squawk(text, f"{rev.id}.sql", project):
            line = item.get("line", 0)
            statement = lines[line].strip() if 0 <= line < len(lines) else ""
            rule = item.get("rule_name", "unknown")
            contract = rev.phase == "post" and rule in CONTRACT_RULES
            breaking = rule in BREAKING_RULES and not contract
            report.findings.append(Finding(
                revision=rev, rule=rule, message=item.get("message", ""),
                help=EXPAND_CONTRACT if breaking else item.get("help") or "", statement=statement,
                waiver=waivers.get(rule), warning=rule in project.lint.warn and not breaking, contract=contract,
                breaking=breaking,
            ))
    return report
