"""Files the toolkit ships to servers (systemd units, sudoers), filled in with str.format."""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def render(name: str, **values: str) -> str:
    """The template `name` with its {placeholders} filled in."""
    return (FOLDER / name).read_text().format(**values)


SERVICE_VERBS = ("start", "stop", "restart", "reload", "status", "is-active", "show")


def sudo_rule(user: str, service: str) -> str:
    """The deploy user's narrow privilege: systemctl verbs on the app's unit, nothing else."""
    commands = ", ".join(f"/usr/bin/systemctl {verb} {service}.service" for verb in SERVICE_VERBS)
    alias = f"{service.upper().replace('-', '_').replace('.', '_').replace('@', '_')}_SERVICE"
    return render("sudoers", file=f"flask-deploy-{user}", user=user, alias=alias, commands=commands)


def app_unit(service: str, user: str, deploy_to: str, bind: str, gunicorn_config: str) -> str:
    return render("app.service", service=service, user=user, deploy_to=deploy_to, bind=bind,
                  gunicorn_config=gunicorn_config)
