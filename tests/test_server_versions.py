"""Preflight refuses a server it cannot run on, naming what is missing: its facts come from
the real facts script run by a real shell, here with stand-in programs on PATH (the one
seam faked), and from the tool's version answer."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy.ssh import build, dbops
from deploy.ssh.connection import Output
from deploy.ssh.layout import Layout


class LocalHost:
    """Runs commands here, with `bin` first on PATH (stand-ins for the server's programs)."""

    def __init__(self, bin_dir: Path) -> None:
        self.env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")

    def run(self, argv, **kw) -> Output:
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env)
        return Output(done.stdout, done.stderr, done.returncode)


def stand_in(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


@pytest.fixture
def host(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "shared").mkdir()
    (tmp_path / "srv" / "shared" / "env").write_text("")
    return tmp_path


def facts(host: Path) -> dict:
    return build.host_facts(LocalHost(host / "bin"), Layout(str(host / "srv")))


def test_a_host_with_python_venv_and_git_passes(host):
    found = facts(host)
    assert found["free"] > 0 and found["missing"] == [] and build.unsupported(found) == [], found


def test_an_old_python_is_refused_with_the_version_needed(host):
    stand_in(host / "bin", "python3", 'case "$2" in *version_info*) echo 3.8;; *) exit 0;; esac')
    assert build.unsupported(facts(host)) == ["python3 is 3.8; at least 3.10 is needed (a supported Debian or "
                                              "Ubuntu release has it)"]


def test_a_python_without_its_venv_module_names_the_package(host):
    stand_in(host / "bin", "python3", 'case "$2" in *ensurepip*) exit 1;; *) exec /usr/bin/python3 "$@";; esac')
    assert build.unsupported(facts(host)) == [f"python3 {facts(host)['python']} has no venv/ensurepip module "
                                              "(apt install python3-venv)"]


def test_a_missing_git_is_named(host):
    stand_in(host / "bin", "git", "exit 127")
    assert build.unsupported(facts(host)) == ["git is missing (apt install git)"]


@pytest.mark.parametrize("answer, problems", [
    ({"server_version_num": 150018, "pg_dump": "15.18", "pg_restore": "15.18"}, []),
    ({"server_version_num": 150018, "pg_dump": "17.2", "pg_restore": "17.2"}, []),
    ({"server_version_num": 170002, "pg_dump": "15.18", "pg_restore": "15.18"},
     ["pg_dump is 15.18, older than the server's PostgreSQL 17", "pg_restore is 15.18, older than the server's PostgreSQL 17"]),
    ({"server_version_num": 160004, "pg_dump": None, "pg_restore": "16.4"}, ["pg_dump is missing"]),
])
def test_pg_dump_and_pg_restore_must_be_at_least_the_servers_version(answer, problems):
    found = dbops.old_clients(answer)
    assert [p.split(" (apt")[0] for p in found] == [p.split(" (apt")[0] for p in problems]
    assert all("postgresql-client-" in p for p in found)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parent.parent.joinpath("deploy", "servertool").glob("*.py")),
                         ids=lambda p: p.name)
def test_the_server_side_code_is_python_3_10_syntax(path):
    """What runs on the servers (with their own python3) parses with the oldest supported grammar."""
    import ast

    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))
