"""What the sandbox-fleet tests share: the seed project's revision and test migrations,
reading a host (its `current` release, health, database), running `fab deploy`, and
background load and lock holders to deploy under."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from conftest import output

from bench.scratch import BREAK_SERVING, add_column_migration
from deploy.ssh.dbops import LAUNCHER
from deploy.sandbox import lbhost


HEAD = "e2b8f4a6c913"


FAILING_MIGRATION = add_column_migration("f00dfa11beef", HEAD, "note", "add a note, then fail",
                                         then='op.execute("SELECT 1 / 0")')
GOOD_MIGRATION = add_column_migration("a0d0a0d0beef", HEAD, "note", "add a note")
SLOW_MIGRATION = add_column_migration("a0d0a0d0beef", HEAD, "note", "add a note", then='op.execute("SELECT pg_sleep(60)")')
IRREVERSIBLE = add_column_migration("a0d0a0d0beef", HEAD, "note", "add a note",
                                    downgrade='raise RuntimeError("this migration cannot be undone")')


BOARDS = "SELECT string_agg(name, ',' ORDER BY id) FROM boards"  # the boards' names, in order


def ssh(project, host: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", str(project.sandbox.ssh_config), host, command],
                          capture_output=True, text=True, timeout=60)


def with_env(*argv: str, folder: str = "/", env_file: str = "/srv/app/shared/env") -> str:
    """A server command line running `argv` in `folder` with the env file read as systemd
    reads it (the toolkit's own launcher; never sourced by a shell)."""
    return shlex.join(["python3", "-c", LAUNCHER, env_file, folder, *argv])


def psql_command(*args: str) -> str:
    return with_env("sh", "-c", 'exec psql "$DATABASE_URL" "$@"', "psql", *args)


def sql(project, query: str) -> str:
    """A query on the stage's database, from app1 with the server's own env file."""
    proc = ssh(project, "app1", psql_command("-Atc", query))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def health(project, host: str) -> dict:
    proc = ssh(project, host, "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:8000/healthz\").read().decode())'")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_serving(project, release: str, revision: str) -> None:
    """Every app host's `current` is `release`, and it answers healthy at `revision`."""
    for host in ("app1", "app2"):
        assert current(project, host) == release, host
        assert health(project, host) == {"release": release, "revision": revision, "expected_revision": revision,
                                         "status": "ok", "env_reload": True}, host


def fab_ok(project, *args: str) -> str:
    """`fab ARGS` that must succeed; its output."""
    proc = project.fab(*args, db=False)
    assert proc.returncode == 0, output(proc)
    return output(proc)


def deploy(project, *args: str) -> subprocess.CompletedProcess:
    return project.fab("deploy", *args, db=False)


def current(project, host: str) -> str:
    return ssh(project, host, "basename $(readlink /srv/app/current)").stdout.strip()


def add_migration(project, text: str, name: str) -> None:
    (project.root / "migrations" / "versions" / name).write_text(text)
    project.commit_all(name)
    project.push()


def deploy_and_seed(project, *names: str):
    """The project's commit deployed and healthy on the test fleet, with these boards in its database."""
    proc = deploy(project)
    assert proc.returncode == 0, output(proc)
    project.first_release = current(project, "app1")
    sql(project, "INSERT INTO boards (name) VALUES " + ", ".join(f"('{n}')" for n in names))
    return project


def run_until(project, line_start: str, argv: list[str]) -> subprocess.Popen:
    """Start `fab ...` and return once it prints a line starting with `line_start`."""
    env = dict(os.environ, NO_COLOR="1")
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "fabric", *argv], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.seen = []
    for line in proc.stdout:
        proc.seen.append(line)
        if line.startswith(line_start):
            return proc
    raise AssertionError("never saw " + line_start + ":\n" + "".join(proc.seen))


def command_lines(hosts=None) -> dict[int, str]:
    """Every process's command line on the machine (the sandbox hosts share its process table),
    or only on `hosts`: the other test worker's fleet runs the same commands."""
    wanted = {net_namespace(f"/run/netns/{host.netns}") for host in hosts
              if os.path.exists(f"/run/netns/{host.netns}")} if hosts is not None else None
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:  # a process may end while we look
            if wanted is not None and net_namespace(f"/proc/{name}/ns/net") not in wanted:
                continue
            found[int(name)] = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def net_namespace(path: str) -> tuple[int, int]:
    """The network namespace a /run/netns name or a /proc/PID/ns/net link stands for."""
    found = os.stat(path)
    return found.st_dev, found.st_ino


def pids_running(sandbox, *words: str) -> list[int]:
    """Processes on the hosts of `sandbox` whose command line has all `words`."""
    return [pid for pid, line in command_lines(sandbox.hosts).items() if all(w in line for w in words)]


def in_rotation(project) -> dict[str, dict[str, str]]:
    """Once the load balancer has every app host UP (its health checks passed), its servers."""
    return lbhost.wait_in_rotation(project.sandbox.lb)


def through_lb(project, path: str) -> list[str]:
    """Users' traffic: every request through the load balancer, once every app host is in rotation."""
    in_rotation(project)
    return [project.sandbox.lb_url + path.lstrip("/")]


class Load(threading.Thread):
    """Requests to every app host, back to back, until stopped; every failure is kept,
    and the slowest request's seconds."""

    def __init__(self, urls: list) -> None:
        """`urls`: GETs (strings), or urllib Requests (a POST with its body)."""
        super().__init__(daemon=True)
        self.urls, self.done, self.ok, self.failures, self.slowest = urls, threading.Event(), 0, [], 0.0

    def run(self) -> None:
        while not self.done.is_set():
            for url in self.urls:
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(url, timeout=10) as answer:
                        answer.read()
                        self.ok += answer.status in (200, 201)
                except Exception as exc:  # a dropped request, whatever its kind
                    self.failures.append(repr(exc))
                self.slowest = max(self.slowest, time.monotonic() - started)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=30)


def break_the_app(project) -> None:
    """A release that boots and migrates but whose health check fails (its workers reach no database)."""
    project.edit("app/__init__.py", *BREAK_SERVING)
    project.commit_all("break the app")
    project.push()


class Holding:
    """A transaction on the stage's database holding a lock on a table (ACCESS EXCLUSIVE:
    a backup waits at a known point; ACCESS SHARE: a long reader) until `release`."""

    def __init__(self, project, table: str, mode: str = "ACCESS EXCLUSIVE") -> None:
        self.proc = subprocess.Popen(
            ["ssh", "-F", str(project.sandbox.ssh_config), "app1", psql_command("-Xq")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.proc.stdin.write(f"BEGIN; LOCK TABLE {table} IN {mode} MODE; SELECT 'is locked';\n")
        self.proc.stdin.flush()
        seen = [self.proc.stdout.readline()]
        while "is locked" not in seen[-1]:
            seen.append(self.proc.stdout.readline())
            assert seen[-1], "".join(seen)

    def release(self) -> None:
        self.proc.stdin.write("COMMIT;\n\\q\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def wait_for_sql(project, query: str, until, what: str, seconds: float = 60) -> None:
    """Until `until` holds for `query`'s answer (a state of the database a test needs, however
    long the deploy under test takes to reach it); `what` names that state when it never comes."""
    deadline = time.monotonic() + seconds
    while not until(sql(project, query)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        time.sleep(0.1)


def wait_for_lock_waiter(project, seconds: float = 60) -> None:
    wait_for_sql(project, "SELECT count(*) FROM pg_locks WHERE NOT granted", lambda n: n != "0",
                 "nothing waited for the lock", seconds)


def in_the_migration(project) -> None:
    """Until SLOW_MIGRATION sleeps inside its transaction (its column added, boards locked)."""
    wait_for_sql(project, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                          "AND query LIKE 'SELECT pg_sleep(60)%'", lambda n: n == "1",
                 "the migration never began its transaction")


PGBACKREST = """
[stages.sandbox.backups]
engine = "pgbackrest"

[stages.sandbox.backups.pgbackrest]
archive_timeout = 5
"""


def backups_listed(project) -> list[dict]:
    """`fab backups --json`: one list for either engine, oldest first (read from stdout alone)."""
    proc = project.fab("backups", "--json", db=False)
    assert proc.returncode == 0, output(proc)
    return json.loads(proc.stdout)


def use_pgbackrest(project) -> None:
    """The project's sandbox stage backs up with pgBackRest (fab setup still to run)."""
    with open(project.root / "deploy.toml", "a") as f:
        f.write(PGBACKREST)
    project.commit_all("back up with pgBackRest")
    project.push()
