"""The controller's side of the release source: a mirror of the stage's repository,
refs resolved there (never on a shell), and a commit exported to read its migrations,
config and lock file."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from .config import ProjectConfig
from .errors import CommandFailed, DeployError
from .local.git import git, resolve_commit


def cache(project: ProjectConfig, *parts: str) -> Path:
    return project.root / ".local" / "deploy" / Path(*parts)


def mirror(project: ProjectConfig, stage: str, repo_url: str) -> Path:
    """A bare mirror of the stage's repository, fetched now."""
    path = cache(project, stage, "repo.git")
    if not (path / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "--quiet", "--bare")
    try:
        git(path, "fetch", "--quiet", "--prune", "--", repo_url, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
    except CommandFailed as exc:
        raise DeployError(f"cannot fetch {repo_url}: {exc.output.strip()}",
                          hint="check the stage's repo URL and the network") from None
    return path


def resolve(mirror_path: Path, ref: str, repo_url: str) -> str:
    """The commit `ref` names in the stage's repository; anything else is refused."""
    if not ref or len(ref) > 200 or ref.startswith("-") or any(c.isspace() or ord(c) < 32 for c in ref):
        raise DeployError(f"{ref[:80]!r} is not a git ref", hint="pass a branch, tag or commit of the repository")
    try:
        return resolve_commit(mirror_path, ref)
    except DeployError:
        raise DeployError(f"{ref!r} is not a commit in {repo_url}",
                          hint=f"push it first (git push {repo_url} HEAD:refs/heads/NAME), or check the name") from None


def export(mirror_path: Path, commit: str, dest: Path) -> Path:
    """The commit's files in `dest` (to read its migrations, lock file and config)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=mirror_path, capture_output=True)
    if archive.returncode != 0:
        raise CommandFailed(["git", "archive", commit], archive.returncode, archive.stderr.decode())
    tar = subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, capture_output=True)
    if tar.returncode != 0:
        raise CommandFailed(["tar", "-x"], tar.returncode, tar.stderr.decode())
    return dest


# Bump when the way an environment is made from a lock changes, so that no host reuses an old one.
ENVIRONMENT_RECIPE = "2"


def lock_hash(export_dir: Path, lock_path: str) -> str:
    """Names the Python environment a release needs: same lock file, same environment."""
    lock = export_dir / lock_path
    if not lock.is_file():
        raise DeployError(f"the commit has no {lock_path} ([project] lock in its deploy.toml)",
                          hint="make it from your requirements (docs/adopting.md, Dependencies), commit and push it")
    return hashlib.sha256(ENVIRONMENT_RECIPE.encode() + lock.read_bytes()).hexdigest()[:16]
