"""Deploy events posted to webhooks (`[stages.S.notify]`): a Slack-compatible incoming
webhook, a generic JSON event, and Grafana's annotation API.

Posting never blocks or fails the operation: each post runs in a thread of its own, and
the command waits for them at its end for at most `timeout` seconds; what failed or timed
out is reported as a warning. Webhook URLs carry tokens, so they are secrets: deploy.toml
names where they are (`env:NAME` or `file:PATH`, read on the controller when sending),
never the URL itself, and no message shows one.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import console
from .config import _Table

EVENTS = ("started", "succeeded", "failed", "rolled_back", "recovered", "backup_check")
TARGETS = ("slack", "webhook", "grafana")


@dataclass(frozen=True)
class NotifySettings:
    """`[stages.S.notify]`: where each target's URL (or token) is kept, and what is sent."""

    slack: str | None = None          # env:NAME or file:PATH
    webhook: str | None = None
    grafana: str | None = None        # the Grafana base URL, e.g. https://grafana.example.com
    grafana_token: str | None = None  # a service account token, env:NAME or file:PATH
    events: tuple[str, ...] = EVENTS
    timeout: float = 5.0

    @property
    def targets(self) -> list[str]:
        return [t for t in TARGETS if getattr(self, t)]


def settings(table: _Table) -> NotifySettings:
    """The stage's notify table, validated: every URL and token is a reference, never a value."""
    refs = {}
    for key in (*TARGETS, "grafana_token"):
        if key in table.data:
            value = table.text(key)
            kind, _, name = value.partition(":")
            if kind not in ("env", "file") or (kind == "env" and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)):
                raise table.fail(key, "env:NAME or file:PATH (where the URL is kept: it carries a token, so "
                                      "it stays out of deploy.toml)")
            refs[key] = value
    if "grafana" in refs and "grafana_token" not in refs:
        raise table.fail("grafana_token", "env:NAME or file:PATH of a Grafana service account token")
    events = table.texts("events", list(EVENTS))
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise table.fail("events", f"events among {', '.join(EVENTS)}, got {unknown[0]!r}")
    return NotifySettings(**refs, events=events, timeout=table.number("timeout", 5, 0.1, 60))


def resolve(reference: str, root: Path | None = None) -> str:
    """The secret a reference names (an env variable, or the first line of a file)."""
    kind, _, name = reference.partition(":")
    if kind == "env":
        value = os.environ.get(name, "")
    else:
        path = Path(name).expanduser()
        path = path if path.is_absolute() or root is None else root / path
        try:
            value = path.read_text().strip().splitlines()[0] if path.is_file() else ""
        except (OSError, IndexError):
            value = ""
    if not value:
        raise LookupError(f"{reference} is empty or missing")
    return value


def slack_message(event: dict) -> dict:
    """Slack's incoming webhook format: `text`, with blocks for clients that show them."""
    icon = {"succeeded": ":white_check_mark:", "failed": ":x:", "rolled_back": ":leftwards_arrow_with_hook:",
            "recovered": ":adhesive_bandage:", "backup_check": ":warning:"}.get(event["event"], ":rocket:")
    what = event.get("release") or event.get("backup") or ""
    text = (f"{icon} {event['event'].replace('_', ' ')}: {event['action']} {what} on {event['stage']} "
            f"by {event['user']}" + (f" ({event['duration_seconds']:.1f}s)" if event.get("duration_seconds") else ""))
    fields = [f"*{k}*: {event[k]}" for k in ("commit", "ref", "revisions", "outcome") if event.get(k)]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if fields:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "  ".join(fields)[:2900]}]})
    if event.get("error"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{event['error'][:2800]}```"}})
    return {"text": text, "blocks": blocks}


def grafana_annotation(event: dict) -> dict:
    now_ms = int(event["time_epoch"] * 1000)
    started = now_ms - int((event.get("duration_seconds") or 0) * 1000)
    return {"time": started, "timeEnd": now_ms, "tags": ["flask-deploy", event["stage"], event["event"]],
            "text": slack_message(event)["text"]}


def post(settings_: NotifySettings | None, root: Path, name: str, event: dict) -> list[str]:
    """One event posted now, for a command that has nothing else to do meanwhile (its problems)."""
    notifier = Notifier(settings_, root)
    notifier.send(name, event)
    return notifier.wait()


class Notifier:
    """Posts events in the background; `wait()` at the command's end reports what failed."""

    def __init__(self, settings_: NotifySettings | None, root: Path | None = None) -> None:
        self.settings, self.root = settings_, root
        self.threads: list[threading.Thread] = []
        self.problems: list[str] = []

    def send(self, name: str, event: dict) -> None:
        s = self.settings
        if s is None or name not in s.events:
            return
        event = {**event, "event": name, "time_epoch": round(time.time(), 3)}
        for target in s.targets:
            thread = threading.Thread(target=self._post, args=(target, event), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _post(self, target: str, event: dict) -> None:
        s = self.settings
        try:
            url = resolve(getattr(s, target), self.root)
            headers = {"Content-Type": "application/json"}
            body = {"slack": slack_message, "webhook": lambda e: e, "grafana": grafana_annotation}[target](event)
            if target == "grafana":
                url = url.rstrip("/") + "/api/annotations"
                headers["Authorization"] = "Bearer " + resolve(s.grafana_token, self.root)
            request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=s.timeout) as answer:
                answer.read(65536)
        except LookupError as exc:
            self.problems.append(f"{target}: {exc}")
        except urllib.error.HTTPError as exc:
            self.problems.append(f"{target}: the webhook answered HTTP {exc.code} to the {event['event']} event")
        except (socket.timeout, TimeoutError):
            self.problems.append(f"{target}: no answer within {s.timeout:g}s to the {event['event']} event")
        except Exception as exc:  # noqa: BLE001 - never the message: it may quote the URL and its token
            reason = getattr(exc, "reason", exc)
            kind = "no answer in time" if isinstance(reason, (socket.timeout, TimeoutError)) else type(reason).__name__
            self.problems.append(f"{target}: could not post the {event['event']} event ({kind})")

    def wait(self) -> list[str]:
        """Join the posts (at most `timeout` seconds in all); warn about each that failed."""
        deadline = time.monotonic() + (self.settings.timeout + 1 if self.settings else 0)  # a post times out first
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        late = sum(t.is_alive() for t in self.threads)
        problems = self.problems + ([f"{late} post(s) still unanswered; given up"] if late else [])
        for problem in problems:
            console.warn(f"notify: {problem} (the operation itself is not affected)")
        self.threads, self.problems = [], []
        return problems
