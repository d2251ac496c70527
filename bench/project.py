"""What the deploy benchmarks deploy: a scratch copy of the project with its own git
history, pointed at a sandbox of the benchmarks' own, changed, committed, pushed
and deployed with `fab` in a subprocess, as a user does."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.git import git
from deploy.migrations import MigrationGraph
from deploy.ssh import trace
from deploy.sandbox import fleet
from deploy.sandbox.spec import Sandbox
from bench.scratch import BREAK_SERVING, add_column_migration, copy_project, retarget

PREFIX, SUBNET = "fdd", "10.213.6.0/24"  # beside the dev sandbox (fds), the tests' (fdt, fdu), bench sandbox's (fdb)


class BenchError(RuntimeError):
    """A benchmark's own set-up or a deploy it expected to succeed failed."""


@dataclass
class Deployed:
    """One `fab` run: its wall time, exit status, output and the remote commands it ran."""

    seconds: float
    exited: int
    output: str
    commands: list[dict] = field(default_factory=list)
    cpu_seconds: float = 0.0  # used on this whole machine meanwhile: controller, hosts, database

    def per_host(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.commands:
            counts[record["host"]] = counts.get(record["host"], 0) + 1
        return counts


class BenchProject:
    """The scratch project and the sandbox it deploys to."""

    def __init__(self, repo: Path, hosts: int, health_timeout: int = 30, undo_expand: str = "keep") -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-deploys-"))
        self.workdir.chmod(0o755)
        self.repo, self.root = repo.resolve(), self.workdir / "project"
        self.sandbox = Sandbox.throwaway(PREFIX, SUBNET, self.workdir / "sandbox", self.repo, hosts)
        self.head = MigrationGraph(self.repo / "migrations").single_head()
        self.changes, self.health_timeout, self.undo_expand = 0, health_timeout, undo_expand

    def __enter__(self) -> "BenchProject":
        fleet.down(self.sandbox)
        try:
            self.resize(self.sandbox.app_hosts)
            self._copy()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        fleet.down(self.sandbox)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def resize(self, hosts: int) -> None:
        """The fleet with `hosts` app hosts (grown or shrunk in place). Its origin is the scratch
        project's once that is pushed: the checkout's HEAD is never pushed over it again."""
        self.sandbox = Sandbox.throwaway(PREFIX, SUBNET, self.workdir / "sandbox", self.repo, hosts)
        fleet.up(self.sandbox, None if (self.root / ".git").exists() else self.repo)

    def _copy(self) -> None:
        copy_project(self.repo, self.root, "Bench")
        toml = self.root / "deploy.toml"
        toml.write_text(retarget(toml.read_text(), self.sandbox).replace(
            "health_timeout = 30", f"health_timeout = {self.health_timeout}\nundo_expand = \"{self.undo_expand}\""))
        self.commit("seed")

    # changes a user makes -------------------------------------------------------

    def commit(self, message: str) -> None:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", message, "--allow-empty")
        git(self.root, "push", "--quiet", "--force", str(self.sandbox.origin), "HEAD:refs/heads/main")

    def change_code(self) -> None:
        """A code change: a module the app imports gets a new value."""
        self.changes += 1
        (self.root / "app" / "bench_change.py").write_text(f"CHANGE = {self.changes}\n")
        self.commit(f"code change {self.changes}")

    def change_dependencies(self) -> None:
        """A new lock file hash (a comment suffices): a new environment on every host."""
        self.changes += 1
        with open(self.root / "requirements" / "app.lock", "a") as lock:
            lock.write(f"# bench dependency change {self.changes}\n")
        self.commit(f"dependency change {self.changes}")

    def add_migration(self, failing: bool = False) -> None:
        """A migration adding a column (or one that adds it, then fails)."""
        self.changes += 1
        revision = f"bench{self.changes:04d}{'f' if failing else 'a'}0000"
        column = f"bench_{self.changes}"
        text = add_column_migration(revision, self.head, column, f"bench: add column {column}",
                                    then='op.execute("SELECT 1 / 0")' if failing else "")
        (self.root / "migrations" / "versions" / f"{revision}_bench.py").write_text(text)
        self.commit(f"migration {revision}")
        if not failing:
            self.head = revision

    def break_health(self) -> None:
        """A release that boots and migrates but fails its health check (its workers reach no database)."""
        self._edit("app/__init__.py", *BREAK_SERVING)
        self.commit("break the health check")

    def undo_commits(self, count: int) -> None:
        """What a user does after a failed deploy: take the bad commits out (and push)."""
        git(self.root, "reset", "--quiet", "--hard", f"HEAD~{count}")
        git(self.root, "push", "--quiet", "--force", str(self.sandbox.origin), "HEAD:refs/heads/main")
        self.head = MigrationGraph(self.root / "migrations").single_head()

    def _edit(self, relative: str, old: str, new: str) -> None:
        path = self.root / relative
        text = path.read_text()
        if old not in text:
            raise BenchError(f"{old!r} is not in {relative}")
        path.write_text(text.replace(old, new, 1))

    # running the tools ------------------------------------------------------------

    def fab(self, *args: str, expect_ok: bool = True) -> Deployed:
        """`fab ARGS` in the project (as a user runs it), timed, its remote commands traced."""
        return self.run([sys.executable, "-m", "fabric", *args], expect_ok)

    def run(self, argv: list[str], expect_ok: bool = True) -> Deployed:
        trace_file = self.workdir / "trace.jsonl"
        trace_file.unlink(missing_ok=True)
        env = dict(os.environ, NO_COLOR="1", **{trace.VARIABLE: str(trace_file)})
        env.pop("DATABASE_URL", None)
        started, cpu = time.perf_counter(), busy_cpu_seconds()
        proc = subprocess.run(argv, cwd=self.root, env=env, capture_output=True, text=True, timeout=600)
        run = Deployed(time.perf_counter() - started, proc.returncode, proc.stdout + proc.stderr,
                       trace.read(str(trace_file)) if trace_file.exists() else [], busy_cpu_seconds() - cpu)
        if expect_ok and run.exited != 0:
            raise BenchError(f"{' '.join(argv[2:])} exited {run.exited}:\n{run.output[-2000:]}")
        return run

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["ssh", "-F", str(self.sandbox.ssh_config), host, command],
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise BenchError(f"{host}: {command!r} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc


def busy_cpu_seconds() -> float:
    """CPU time this machine has spent busy since boot, all CPUs (/proc/stat: not idle, not iowait)."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
