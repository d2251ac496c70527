"""The one reading of a server's env file (deploy/servertool/envfile.py): systemd's
EnvironmentFile= rules, never a shell's; and DATABASE_URL's parameters reaching
PostgreSQL's programs (deploy/servertool/pgenv.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deploy.ssh.dbops import LAUNCHER
from deploy.servertool import envfile
from deploy.servertool.pgenv import ToolError, url_variables

NASTY = "p$HOME;rm -rf x&y'z\"q #w`id`\\"


@pytest.mark.parametrize("text, expected", [
    ("A=1\nB=two words\n", {"A": "1", "B": "two words"}),
    ("# a comment\n; another\n\nA=1", {"A": "1"}),
    ("  A  =   padded value   \n", {"A": "padded value"}),
    ("A=$HOME;echo hi&`id`\n", {"A": "$HOME;echo hi&`id`"}),  # a shell would expand, run, background
    ("A=x # not a comment\n", {"A": "x # not a comment"}),
    ("A='single $HOME \\n \"quoted\"'\n", {"A": 'single $HOME \\n "quoted"'}),
    ('A="dq \\"in\\" \\$HOME \\\\ \\n"\n', {"A": 'dq "in" $HOME \\ \\n'}),
    ("A='spans\nlines'\n", {"A": "spans\nlines"}),
    ("A=con\\\ntinued\n", {"A": "continued"}),
    ("A=back\\\\slash\\ \n", {"A": "back\\slash "}),
    ("A=it's\n", {"A": "it's"}),  # a quote after the first character is kept
    ("A=\nB\nC=3\n", {"A": "", "C": "3"}),  # a line without '=' is ignored
    ("export A=1\n1B=2\nA-B=3\n", {}),  # not shell names: ignored, as systemd does
    ("A=1\nA=2\n", {"A": "2"}),
    ("A=no newline at the end  ", {"A": "no newline at the end"}),
    ("A='a''b'\"c\"\n", {"A": "abc"}),
])
def test_the_env_file_is_read_with_systemds_rules(text, expected):
    assert envfile.parse(text) == expected


def test_the_launcher_runs_a_command_with_the_values_verbatim_and_never_runs_the_file(tmp_path):
    env = tmp_path / "env"
    canary = tmp_path / "ran"
    env.write_text(f"SECRET='{NASTY.replace(chr(39), '')}'\nOTHER=x; touch {canary}\n")
    run = subprocess.run([sys.executable, "-c", LAUNCHER, str(env),
                          str(tmp_path), sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["SECRET"] == NASTY.replace("'", "") and seen["OTHER"] == f"x; touch {canary}"
    assert not canary.exists()


def test_the_launcher_says_which_env_file_is_missing(tmp_path):
    run = subprocess.run([sys.executable, envfile.__file__, str(tmp_path / "nope"), str(tmp_path), "true"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "nope" in run.stderr and "Traceback" not in run.stderr


def test_database_url_parameters_reach_libpq_and_the_password_is_decoded():
    found = url_variables("postgresql+psycopg2://app:p%24ss%20w%23rd%26%3B%27%22@db.example:6432/appdb"
                          "?sslmode=verify-full&sslrootcert=/etc/ssl/db.pem&application_name=deploy")
    assert found == {"PGHOST": "db.example", "PGPORT": "6432", "PGUSER": "app", "PGPASSWORD": "p$ss w#rd&;'\"",
                     "PGDATABASE": "appdb", "PGCONNECT_TIMEOUT": "5", "PGSSLMODE": "verify-full",
                     "PGSSLROOTCERT": "/etc/ssl/db.pem", "PGAPPNAME": "deploy"}


def test_a_socket_directory_given_as_host_parameter_is_used():
    found = url_variables("postgresql://app@/appdb?host=/var/run/postgresql")
    assert found["PGHOST"] == "/var/run/postgresql" and found["PGDATABASE"] == "appdb"


def test_an_unknown_database_url_parameter_is_refused_by_name():
    with pytest.raises(ToolError, match="'sslmod'"):
        url_variables("postgresql://app@db/appdb?sslmod=require")
