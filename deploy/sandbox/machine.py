"""What the sandboxes share with this machine: the login user and its sudo rule.

Several sandboxes (the demo's and the tests') may run at once with the same
user; each registers itself, and the last one of that user to go down removes
the user and its sudo rule, the user only if a sandbox made it.
"""
from __future__ import annotations

import pwd
from pathlib import Path

from ..templates import render
from .spec import Sandbox
from .system import run, write_file

REGISTRY = Path("/var/lib/flask-deploy-sandbox")
SERVICE_VERBS = ("start", "stop", "restart", "reload", "status", "is-active", "show")


def sudoers_path(user: str) -> Path:
    return Path("/etc/sudoers.d") / f"flask-deploy-{user}"


def sudo_rule(user: str, service: str) -> str:
    """The narrow privilege: systemctl verbs on the app's unit, nothing else."""
    commands = ", ".join(f"/usr/bin/systemctl {verb} {service}.service" for verb in SERVICE_VERBS)
    return render("sudoers", file=sudoers_path(user).name, user=user,
                  alias=f"{service.upper().replace('-', '_').replace('.', '_')}_SERVICE", commands=commands)


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _marker(name: str) -> Path:
    return REGISTRY / name


def claim(sandbox: Sandbox) -> list[str]:
    """Register `sandbox`; create the user, its home mount point and sudo rule if missing."""
    user = sandbox.settings.user
    REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(_marker(f"{user}.{sandbox.prefix}.owner"), f"{sandbox.state_dir}\n", 0o600)
    made = []
    if not user_exists(user):
        # "*": no password can ever match, yet the account is not locked, so key login works.
        run(["useradd", "--no-create-home", "--home-dir", f"/home/{user}", "--shell", "/bin/bash",
             "--password", "*", "--user-group", user])
        write_file(_marker(f"made-user-{user}"), "", 0o600)
        made.append(f"user {user}")
    home = Path("/home") / user
    if not home.exists():
        home.mkdir(mode=0o755, parents=True)  # a mount point: each host mounts its own home here
        write_file(_marker(f"made-home-{user}"), "", 0o600)
    rule = sudo_rule(user, sandbox.settings.service)
    path = sudoers_path(user)
    if not path.exists() or path.read_text() != rule:
        candidate = path.with_name(f".{path.name}.new")
        write_file(candidate, rule, 0o440)
        run(["visudo", "-cf", str(candidate)])
        candidate.rename(path)
        made.append(f"sudo rule {path}")
    return made


def release(sandbox: Sandbox) -> list[str]:
    """Unregister `sandbox`; as the last sandbox, remove what a sandbox made. Returns what it removed."""
    user = sandbox.settings.user
    _marker(f"{user}.{sandbox.prefix}.owner").unlink(missing_ok=True)
    if REGISTRY.exists() and any(REGISTRY.glob(f"{user}.*.owner")):
        return []
    removed = []
    if _marker(f"made-user-{user}").exists():
        if user_exists(user):
            run(["userdel", user])
            removed.append(f"user {user}")
        _marker(f"made-user-{user}").unlink()
    if sudoers_path(user).exists():
        sudoers_path(user).unlink()
        removed.append(f"sudo rule {sudoers_path(user)}")
    if _marker(f"made-home-{user}").exists():
        home = Path("/home") / user
        if home.is_dir() and not any(home.iterdir()):
            home.rmdir()
        _marker(f"made-home-{user}").unlink()
    if REGISTRY.exists() and not any(REGISTRY.iterdir()):
        REGISTRY.rmdir()
    return removed
