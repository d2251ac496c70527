"""Before the switch, the release still serving is checked against the migrated schema.

Between `migrate` and `switch` (and through a rolling --batch switch) the old release
serves on the new schema. After the pre revisions, its own code and models, on the
migrations host, say whether every table and column they map is still there and usable
(deploy_runtime.compat), and every app host must still answer its liveness path. A
failure stops the deploy before any host switches; the undo puts the database back.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .console import indent
from .errors import DeployError
from .lint import EXPAND_CONTRACT_FIX as FIX
from .ssh import build, dbops, service
from .ssh.connection import Remote, on_hosts
from .stages import StageConfig

if TYPE_CHECKING:
    from .steps import Deploy


def check_serving(d: Deploy) -> None:
    """The deploy's step: the old release(s) on the migrated schema, then every app host's liveness."""
    serving_hosts = [r for r in d.apps if d.previous.get(r.name)]
    if not d.pre or not serving_hosts:  # no schema change, or nothing serves yet
        return
    serving = sorted({d.previous[r.name] for r in serving_hosts})
    metas = {m["id"]: m for m in build.list_releases(d.migrator, d.layout)}
    for release in serving:
        if release not in metas:
            d.say(d.migrator.name, f"cannot check {release} against the new schema: it is not on this host")
            continue
        report = schema_report(d.migrator, d.layout, release, metas[release].get("app") or d.app, d.release_id)
        if report["problems"]:
            lines = [f"{p['table']}.{p['column']}: {p['problem']}" if p["column"] else f"{p['table']}: {p['problem']}"
                     for p in report["problems"]]
            raise DeployError(f"the release {release}, serving now, would break on the migrated schema:\n"
                              + indent("\n".join(lines)), hint=FIX)
        d.say(d.migrator.name, f"{release} works on the new schema ({report['tables']} table(s), "
                               f"{report['columns']} column(s) checked)")
    live = live_url(d.stage.health_url, d.target.live_path)
    def answers(r: Remote) -> str:
        require_live(r, live, "after the migration: the serving release no longer works", FIX)
        return f"still serving {d.previous[r.name]} ({live} 200)"
    for name, text in on_hosts("checking the serving release answers", serving_hosts, answers).items():
        d.say(name, text)
    d.compatible = True


def schema_report(migrator: Remote, layout, release: str, app: str, runtime_release: str) -> dict:
    """deploy_runtime.compat in `release`'s folder and virtualenv, from `runtime_release`'s runtime
    (the serving release's own copy may predate it)."""
    env = {"PYTHONPATH": f"{layout.release(runtime_release)}/.deploy"}
    out = dbops.in_release(migrator, layout, release, [".venv/bin/python", "-m", "deploy_runtime.compat", app],
                           env=env, check=False, timeout=300)
    try:
        report = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {"error": (out.stdout + out.stderr).strip()[-500:] or f"exit status {out.exited}"}
    if "error" in report:
        raise DeployError(f"could not check the release {release} against the migrated schema: {report['error']}",
                          hint="fix what keeps its app from loading on the migrations host, then deploy again")
    return report


def live_url(health_url: str, live_path: str) -> str:
    """The liveness path on the host and port the stage's health URL asks."""
    return urlsplit(health_url)._replace(path=live_path, query="").geturl()


def require_live(remote: Remote, url: str, when: str, hint: str | None = None) -> None:
    """The liveness path answers 200 on `remote`; else DeployError saying `when`."""
    code, body = service.health(remote, url)
    if code != 200:
        raise DeployError(f"{remote.name}: {url} answers {code} {body} {when}", hint=hint)


def serving_on_kept_schema(remote: Remote, stage: StageConfig, release: str, live_path: str,
                           hint: str | None = None) -> str:
    """After a switch back that kept a newer schema: `release` answers (its health path rightly
    says 503, the database being ahead of it) and its liveness path says 200."""
    service.wait_healthy(remote, stage.health_url, release, None, stage.health_timeout, any_revision=True)
    live = live_url(stage.health_url, live_path)
    require_live(remote, live, "on the kept schema", hint)
    return f"serving {release} on the kept schema ({live} 200)"
