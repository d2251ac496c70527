"""The `flask-pg-deploy` command: what works before a project has the toolkit's task files."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import __version__, console
from .adopt import init
from .console import indent
from .errors import DeployError

NEXT = """next:
  1. read what changed (git diff, git status) and commit it
  2. inv db.up && inv upgrade            # a local PostgreSQL at your migrations' head
  3. inv sandbox.up && fab setup && fab deploy   # a first deploy to Debian hosts on this machine (root)
  then: docs/adopting.md, for your own servers ([stages.production])"""


def ask_app(candidates: list[str]) -> str:
    """The app's import path, asked at the terminal (a candidate's number, or a path)."""
    console.say("Which app does this project deploy? (what `flask --app` takes)")
    for number, candidate in enumerate(candidates, start=1):
        console.say(f"  {number}. {candidate}")
    while True:
        answer = input("app import path" + (f" [1-{len(candidates)} or MODULE:APP]" if candidates else " (MODULE:APP)")
                       + ": ").strip()
        if answer.isdigit() and 1 <= int(answer) <= len(candidates):
            return candidates[int(answer) - 1]
        if re.fullmatch(r"[A-Za-z_][\w.]*(:[\w().,'\" =]+)?|[\w./-]+\.py", answer):
            return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flask-pg-deploy", description="Deploy Flask + PostgreSQL apps "
                                     "with their migrations to your own Linux servers.")
    parser.add_argument("--version", action="version", version=f"flask-pg-deploy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    adopt = commands.add_parser("init", help="add the toolkit to the Flask-Migrate project in this folder")
    adopt.add_argument("--app", help="what `flask --app` loads (default: found in the project)")
    adopt.add_argument("--server-python", default="3.11", help="the servers' python3 version, for the lock (3.11)")
    adopt.add_argument("--pg-version", default="15", help="the servers' PostgreSQL major version, for lint (15)")
    args = parser.parse_args(argv)
    try:
        steps = init(Path.cwd(), args.app, args.server_python, args.pg_version,
                     ask=ask_app if sys.stdin.isatty() else None)
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for step in steps:
        console.say(f"{step.action:<8} {step.path}")
        if step.detail:
            console.say(indent(step.detail, "         "))
    if any(step.action == "todo" for step in steps):
        console.warn("some files are yours and were left as they are: make the changes shown above")
    if all(step.action == "kept" for step in steps):
        console.say("the project is set up already: nothing changed")
    else:
        console.say(NEXT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
