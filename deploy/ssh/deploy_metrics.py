"""The last deploy's metrics in node_exporter's textfile format, beside the backup check's
(the same folder as `[stages.S.backups] textfile`), on every app host: when the last deploy,
rollback or recovery on the stage ended, whether it succeeded, how long it took, and the
release this host serves (an `_info` metric). Written by a temporary file and a rename, so
node_exporter never reads half a file. A failure to write them is said, never raised."""
from __future__ import annotations

import calendar
import json
import posixpath
import time

from .. import console
from ..errors import DeployError
from .connection import Remote, on_hosts
from .layout import Layout

FILE_NAME = "flask_deploy_deploy.prom"
WRITE = 'mkdir -p "$(dirname "$1")" && cat > "$1.$$.tmp" && chmod 0644 "$1.$$.tmp" && mv -f "$1.$$.tmp" "$1"'
SERVING = 'cat "$1/current/.release.json" 2>/dev/null || echo "{}"'


def label(value: object) -> str:
    """A label value in the exposition format (backslash, quote and newline escaped)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(stage: str, entry: dict, serving: dict) -> str:
    """The textfile for one host, from the deploy log's entry and the host's `.release.json`."""
    s = f'stage="{label(stage)}"'
    ended = calendar.timegm(time.strptime(entry["time"], "%Y-%m-%dT%H:%M:%SZ"))
    duration = entry.get("duration")
    if duration is None:
        duration = sum((entry.get("timings") or {}).values())
    lines = [
        "# HELP flask_deploy_last_deploy_timestamp_seconds When the stage's last deploy, rollback or recovery ended.",
        "# TYPE flask_deploy_last_deploy_timestamp_seconds gauge",
        f"flask_deploy_last_deploy_timestamp_seconds{{{s}}} {ended}",
        "# HELP flask_deploy_last_deploy_success Whether it succeeded: 1, or 0 (failed and undone, or recovered).",
        "# TYPE flask_deploy_last_deploy_success gauge",
        f"flask_deploy_last_deploy_success{{{s}}} {1 if entry.get('outcome') == 'ok' else 0}",
        "# HELP flask_deploy_last_deploy_duration_seconds How long it took.",
        "# TYPE flask_deploy_last_deploy_duration_seconds gauge",
        f"flask_deploy_last_deploy_duration_seconds{{{s}}} {round(float(duration), 3)}",
        "# HELP flask_deploy_last_deploy_info What it was (always 1).",
        "# TYPE flask_deploy_last_deploy_info gauge",
        f'flask_deploy_last_deploy_info{{{s},action="{label(entry.get("action", "deploy"))}",'
        f'outcome="{label(entry.get("outcome", ""))}"}} 1',
    ]
    if serving.get("release"):
        lines += ["# HELP flask_deploy_release_info The release this host serves, with its commit and head revision "
                  "(always 1).",
                  "# TYPE flask_deploy_release_info gauge",
                  f'flask_deploy_release_info{{{s},release="{label(serving["release"])}",'
                  f'commit="{label(serving.get("commit", ""))}",revision="{label(serving.get("revision") or "")}"}} 1']
    return "\n".join(lines) + "\n"


def path_of(stage) -> str:
    return posixpath.join(posixpath.dirname(stage.backups.textfile), FILE_NAME)


def record(stage, apps: list[Remote], entry: dict) -> None:
    """The metrics of `entry` (a deploy log line) written on every app host it can reach."""
    layout, path = Layout(stage.deploy_to), path_of(stage)

    def on_host(r: Remote) -> None:
        try:
            serving = json.loads(r.run(["sh", "-c", SERVING, "serving", layout.root]).stdout or "{}")
        except ValueError:
            serving = {}
        r.run(["sh", "-c", WRITE, "metrics", path], input=render(stage.name, entry, serving))
    try:
        on_hosts("writing the deploy metrics", apps, on_host)
    except DeployError as exc:
        console.warn(f"could not write the deploy metrics ({path}): {exc}")
