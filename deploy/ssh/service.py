"""Switching a host to a release and proving the new code serves: the atomic
`current` switch, a graceful reload through the service manager, and a health
check that wants the new release id and the expected schema revision."""
from __future__ import annotations

import json
import time

from ..errors import DeployError
from .connection import Remote
from .layout import Layout

HEALTH = """import json, sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
        code, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read().decode()
except Exception as e:
    code, body = 0, str(e)
print(json.dumps({"code": code, "body": body}))
"""


class Unhealthy(DeployError):
    """The app on a host did not report the release and revision that were deployed."""


def current_release(remote: Remote, layout: Layout) -> str | None:
    out = remote.run(["readlink", layout.current], check=False)
    target = out.stdout.strip()
    return target.rsplit("/", 1)[-1] if out.exited == 0 and target else None


def switch(remote: Remote, layout: Layout, release_id: str) -> None:
    """Point `current` at the release by renaming a new link over it (atomic)."""
    script = 'cd "$1" && ln -sfn "releases/$2" ".current-$2" && mv -T ".current-$2" current'
    remote.run(["sh", "-c", script, "switch", layout.root, release_id])


def unswitch(remote: Remote, layout: Layout) -> None:
    """Remove `current` (a first deploy being undone: there was nothing before)."""
    remote.run(["rm", "-f", layout.current])


def systemctl(remote: Remote, verb: str, service: str, check: bool = True):
    return remote.run(["sudo", "-n", "systemctl", "--no-pager", verb, f"{service}.service"], check=check)


def reload(remote: Remote, service: str) -> str:
    """Graceful reload (HUP: new workers on the new code, the socket kept) or start."""
    if systemctl(remote, "is-active", service, check=False).stdout.strip() == "active":
        systemctl(remote, "reload", service)
        return "reloaded"
    systemctl(remote, "start", service)
    return "started"


def restart(remote: Remote, service: str) -> str:
    """A full restart: a new master (new gunicorn, new unit settings); the socket closes meanwhile."""
    systemctl(remote, "restart", service)
    return "restarted"


def health(remote: Remote, url: str) -> tuple[int, dict | str]:
    out = json.loads(remote.run(["python3", "-c", HEALTH, url]).stdout)
    try:
        return out["code"], json.loads(out["body"])
    except ValueError:
        return out["code"], out["body"]


def wait_healthy(remote: Remote, url: str, release_id: str, revision: str | None, timeout: float,
                 any_revision: bool = False, service: str | None = None, env_digest: str | None = None) -> dict:
    """Until /healthz says 200 with this release and revision; Unhealthy after `timeout`.

    `any_revision`: only the release must answer (while the database is still
    being put back, the old code rightly reports 503 for the newer schema).
    `env_digest`: and its workers run with that env file (deploy_runtime.environment).
    """
    deadline = time.monotonic() + timeout
    code, body, polls = 0, "not asked yet", 0
    while time.monotonic() < deadline:
        code, body = health(remote, url)
        if code == 404:  # no app answers there: waiting will not make one
            raise Unhealthy(f"{remote.name}: {url} answers 404: nothing serves the health path there",
                            hint="set [project] health_path in deploy.toml to the path the toolkit answers "
                                 "(default /healthz), or the stage's health_url to where the app is served")
        if isinstance(body, dict) and body.get("release") == release_id and env_digest in (None, body.get("env_digest")):
            if any_revision or (code == 200 and body.get("revision") == revision):
                return body
        polls += 1
        if service and code == 0 and polls % 5 == 0:  # nothing answers: has the service died?
            state = systemctl(remote, "is-active", service, check=False).stdout.strip()
            if state in ("failed", "inactive"):
                raise Unhealthy(f"{remote.name}: the service {service} is {state} (it did not start on "
                                f"release {release_id}); last answer: {body}",
                                hint=f"read its log on {remote.name}: journalctl -u {service} (as an operator)")
        time.sleep(0.3)
    wanted = f" with env {env_digest}" if env_digest else ""
    raise Unhealthy(f"{remote.name}: {url} did not report release {release_id} at revision {revision}{wanted} within "
                    f"{timeout:.0f}s; last answer: {code} {body}",
                    hint=f"look at the service's log: fab logs --host {remote.name}" + (
                        f" (or journalctl -u {service} on it)" if service else ""))
