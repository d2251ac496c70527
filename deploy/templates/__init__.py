"""Files the toolkit ships to servers (systemd units, sudoers), filled in with str.format."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import deploy_runtime

from ..servertool import envfile

if TYPE_CHECKING:
    from ..backup_settings import BackupSettings

FOLDER = Path(__file__).resolve().parent
RUNTIME = Path(deploy_runtime.__file__).resolve().parent  # shipped into each release


def render(name: str, **values: str) -> str:
    """The template `name` with its {placeholders} filled in."""
    return (FOLDER / name).read_text().format(**values)


SERVICE_VERBS = ("start", "stop", "restart", "reload", "status", "is-active", "show")
PAGING_VERBS = ("status", "show")


def sudo_rule(user: str, service: str) -> str:
    """The deploy user's narrow privilege: systemctl verbs on the app's unit, nothing else; the
    verbs that page (`status`, `show`) only with --no-pager: on a terminal they would run `less`
    as root, a root shell away."""
    commands = ", ".join(f"/usr/bin/systemctl --no-pager {verb} {service}.service" for verb in SERVICE_VERBS)
    commands += "".join(f", /usr/bin/systemctl {verb} {service}.service"
                        for verb in SERVICE_VERBS if verb not in PAGING_VERBS)
    alias = f"{service.upper().replace('-', '_').replace('.', '_').replace('@', '_')}_SERVICE"
    return render("sudoers", file=f"flask-deploy-{user}", user=user, alias=alias, commands=commands)


def app_unit(service: str, user: str, deploy_to: str, bind: str, gunicorn_config: str) -> str:
    return render("app.service", service=service, user=user, deploy_to=deploy_to, bind=bind,
                  gunicorn_config=gunicorn_config)


def release_files(app: str, health_path: str, live_path: str, service: str) -> dict[str, str]:
    """Path in the release -> text of what the toolkit adds to every release (under .deploy/): the
    app's side of the contract (deploy_runtime) and the gunicorn config that serves the app with it."""
    wsgi_app = f"deploy_runtime.wsgi:serve({app!r}, {health_path!r}, {live_path!r})"
    files = {f".deploy/deploy_runtime/{p.name}": p.read_text() for p in sorted(RUNTIME.glob("*.py"))}
    files[".deploy/deploy_runtime/envfile.py"] = Path(envfile.__file__).read_text()  # the one parser
    files[".deploy/gunicorn.conf.py"] = render("gunicorn.conf.py", wsgi_app=wsgi_app, proc_name=service)
    return files


def tool_command(deploy_to: str, args: list[str]) -> list[str]:
    """The backup tool as the timers run it: the copy fab keeps in deploy_to/tools."""
    return ["/usr/bin/python3", f"{deploy_to}/tools/backup_tool.py", "--deploy-to", deploy_to, *args]


def backup_units(service: str, user: str, deploy_to: str, backups: BackupSettings) -> dict[str, str]:
    """File name -> text of the scheduled backups' and the backup check's service and timer units:
    a nightly dump (pgdump), or full and differential backups (pgbackrest)."""
    values = {"service": service, "user": user, "deploy_to": deploy_to}
    if backups.pgbackrest:
        pb = backups.pgbackrest
        runs = {"full": pb.full_schedule, "diff": pb.diff_schedule}
        units = {}
        for kind, schedule in runs.items():
            args = ["pgbr-backup", "--stanza", pb.stanza, "--type", kind]  # physical: no table locks to wait for
            units[f"{service}-backup-{kind}.service"] = render("backup.service", **values, command=shlex.join(
                tool_command(deploy_to, args)))
            units[f"{service}-backup-{kind}.timer"] = render("backup.timer", **values, schedule=schedule)
    else:
        units = {
            f"{service}-backup.service": render("backup.service", **values, command=shlex.join(
                tool_command(deploy_to, [*backups.dump_args("nightly"), "--wait-for-stage"]))),
            f"{service}-backup.timer": render("backup.timer", **values, schedule=backups.schedule),
        }
    return {
        **units,
        f"{service}-backup-check.service": render("backup-check.service", **values, command=shlex.join(
            tool_command(deploy_to, backups.check_args()))),
        f"{service}-backup-check.timer": render("backup-check.timer", **values, schedule=backups.check_schedule),
    }
