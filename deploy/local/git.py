"""The few git questions the local workflow asks, with refs passed safely."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import CommandFailed, DeployError


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CommandFailed(["git", *args], proc.returncode, proc.stdout + proc.stderr)
    return proc.stdout


def is_repository(root: Path) -> bool:
    return subprocess.run(["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True).returncode == 0


def resolve_commit(root: Path, ref: str) -> str:
    """The commit `ref` names; a clear error for anything that is not a ref."""
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        cwd=root, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise DeployError(f"{ref!r} is not a commit in this repository", hint="git log --oneline, or git fetch")
    return proc.stdout.strip()


def upstream(root: Path) -> str | None:
    """The current branch's upstream (e.g. origin/main), if it has one."""
    proc = subprocess.run(
        ["git", "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}"],
        cwd=root, capture_output=True, text=True,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def files_at(root: Path, commit: str, folder: Path) -> set[Path]:
    """The files under `folder` as they are at `commit` (absolute paths)."""
    rel = folder.relative_to(root)
    out = git(root, "ls-tree", "-r", "--name-only", commit, "--", str(rel))
    return {root / line for line in out.splitlines() if line}


def changed(root: Path, paths: list[Path]) -> list[Path]:
    """Which of `paths` (files or folders) have uncommitted or untracked changes."""
    if not paths:
        return []
    out = git(root, "status", "--porcelain", "--untracked-files=all", "--",
              *[str(p.relative_to(root)) for p in paths])
    return [root / line[3:].strip('"') for line in out.splitlines() if line]


def commit_paths(root: Path, paths: list[Path], message: str) -> str:
    """Stage and commit exactly `paths`; return the new commit's short sha."""
    rel = [str(p.relative_to(root)) for p in paths]
    git(root, "add", "--", *rel)
    git(root, "commit", "--quiet", "-m", message, "--", *rel)
    return git(root, "rev-parse", "--short", "HEAD").strip()
