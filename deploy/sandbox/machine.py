"""What the sandboxes share with this machine: the login user and its sudo rule.

Several sandboxes (the demo's and the tests') may run at once with the same
user; each registers itself, and the last one of that user to go down removes
the user and its sudo rule, the user only if a sandbox made it.
"""
from __future__ import annotations

import pwd
from pathlib import Path

from ..templates import sudo_rule
from .spec import Sandbox
from .system import run, write_file

REGISTRY = Path("/var/lib/flask-deploy-sandbox")


def sudoers_path(user: str) -> Path:
    return Path("/etc/sudoers.d") / f"flask-deploy-{user}"


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _marker(name: str) -> Path:
    return REGISTRY / name


def admin_name(user: str) -> str:
    """The operator account beside the deploy user: full sudo, used only by `fab setup`."""
    return f"{user}-admin"


def _ensure_user(name: str, made: list[str], home: str | None = None) -> None:
    if not user_exists(name):
        # "*": no password can ever match, yet the account is not locked, so key login works.
        run(["useradd", "--no-create-home", "--home-dir", home or f"/home/{name}", "--shell", "/bin/bash",
             "--password", "*", "--user-group", name])
        write_file(_marker(f"made-user-{name}"), "", 0o600)
        made.append(f"user {name}")


def _ensure_rule(path: Path, rule: str, made: list[str]) -> None:
    if not path.exists() or path.read_text() != rule:
        candidate = path.with_name(f".{path.name}.new")
        write_file(candidate, rule, 0o440)
        run(["visudo", "-cf", str(candidate)])
        candidate.rename(path)
        made.append(f"sudo rule {path}")


def claim(sandbox: Sandbox) -> list[str]:
    """Register `sandbox`; create the users, the deploy user's home mount point and sudo rules if missing."""
    user = sandbox.settings.user
    REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(_marker(f"{user}.{sandbox.prefix}.owner"), f"{sandbox.state_dir}\n", 0o600)
    made: list[str] = []
    _ensure_user(user, made)
    _ensure_user(admin_name(user), made, home="/")  # its keys are in each host's /etc/ssh
    _ensure_rule(sudoers_path(admin_name(user)), f"{admin_name(user)} ALL=(ALL) NOPASSWD: ALL\n", made)
    home = Path("/home") / user
    if not home.exists():
        home.mkdir(mode=0o755, parents=True)  # a mount point: each host mounts its own home here
        write_file(_marker(f"made-home-{user}"), "", 0o600)
    _ensure_rule(sudoers_path(user), sudo_rule(user, sandbox.settings.service), made)
    return made


def release(sandbox: Sandbox) -> list[str]:
    """Unregister `sandbox`; as the last sandbox, remove what a sandbox made. Returns what it removed."""
    user = sandbox.settings.user
    _marker(f"{user}.{sandbox.prefix}.owner").unlink(missing_ok=True)
    if REGISTRY.exists() and any(REGISTRY.glob(f"{user}.*.owner")):
        return []
    removed = []
    for name in (user, admin_name(user)):
        if _marker(f"made-user-{name}").exists():
            if user_exists(name):
                run(["userdel", name])
                removed.append(f"user {name}")
            _marker(f"made-user-{name}").unlink()
        if sudoers_path(name).exists():
            sudoers_path(name).unlink()
            removed.append(f"sudo rule {sudoers_path(name)}")
    if _marker(f"made-home-{user}").exists():
        home = Path("/home") / user
        if home.is_dir() and not any(home.iterdir()):
            home.rmdir()
        _marker(f"made-home-{user}").unlink()
    if REGISTRY.exists() and not any(REGISTRY.iterdir()):
        REGISTRY.rmdir()
    return removed
