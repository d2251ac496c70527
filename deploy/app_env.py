"""`fab env`: the app's environment on the stage, the env file on each host where the
secrets live (shared/env, 0600). Values travel only on SSH's standard streams: never in a
command line, never in output (unless asked), the deploy log or the journal.

A change is one journaled operation under the stage's lock, the same on every host that
has the file: the new file is written beside the old and the app's boot is checked with it;
then each host's file is replaced by a rename (the old one kept aside), and the app reloads
gracefully (its master reads the file again: deploy_runtime.environment) until every host
answers healthy with the new file. If any host fails, every host gets its old file back and
reloads; if the controller dies, `fab recover` does that from the journal.
"""
from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import console, env_text, pipeline
from .config import ProjectConfig
from .errors import ConfigError, DeployError
from .servertool import envfile
from .ssh import build, deploylog, guard, lock, service
from .ssh.connection import Remote, StageRemotes, connect, on_hosts
from .ssh.layout import Layout
from .stages import StageConfig, load_stage
from deploy_runtime.environment import RESERVED, digest

READ = 'test -e "$1" || exit 3; cat "$1"'
# Copies an earlier change left (its controller died after its commit): removed under the lock.
WRITE_NEW = 'umask 077 && rm -f "$1".*.before "$1".*.new && cat > "$1.$2.new"'
SWAP = 'cp -p "$1" "$1.$2.before" && mv -f "$1.$2.new" "$1"'
PUT_BACK = 'if [ -e "$1.$2.before" ]; then mv -f "$1.$2.before" "$1"; fi; rm -f "$1.$2.new"'
DROP_NEW = 'rm -f "$1.$2.new"'
FORGET = 'rm -f "$1.$2.before" "$1.$2.new"'
# The key of the digest the health answer reports (deploy_runtime.environment), made once.
DIGEST_KEY = ('umask 077; [ -s "$1.key" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n" > "$1.key"; '
              'cat "$1.key"')


def read_files(remotes: list[Remote], layout: Layout) -> dict[str, str]:
    """Host -> its env file's text, for the hosts that have one (the text stays in memory)."""
    answers = on_hosts("reading the env file", remotes, lambda r: r.run(["sh", "-c", READ, "read", layout.env_file],
                                                                        check=False))
    failed = [f"{name}: {out.stderr.strip()}" for name, out in answers.items() if out.exited not in (0, 3)]
    if failed:
        raise DeployError("could not read the env file: " + "; ".join(failed))
    return {name: out.stdout for name, out in answers.items() if out.exited == 0}


def _files_of(stage: StageConfig, remotes: dict[str, Remote]) -> dict[str, str]:
    layout = Layout(stage.deploy_to)
    texts = read_files(list(remotes.values()), layout)
    lacking = [h.name for h in stage.app_hosts if h.name not in texts]
    if lacking:
        raise DeployError(f"{', '.join(lacking)} has no env file ({layout.env_file})",
                          hint=f"fab setup --stage {stage.name} writes one")
    return texts


def _parsed_files(project: ProjectConfig, stage_name: str | None) -> tuple[StageConfig, dict[str, dict[str, str]]]:
    """The stage, and each host's env file as the app reads it."""
    stage = load_stage(project, stage_name)
    with connect(stage) as remotes:
        return stage, {name: envfile.parse(text) for name, text in _files_of(stage, remotes).items()}


def show(project: ProjectConfig, stage_name: str | None, values: bool = False) -> dict[str, dict[str, str]]:
    """The keys of the stage's env (values redacted unless `values`); says when hosts disagree."""
    stage, parsed = _parsed_files(project, stage_name)
    console.heading(f"env of {stage.name}: {Layout(stage.deploy_to).env_file} on {', '.join(sorted(parsed))}")
    keys = sorted(set().union(*parsed.values()))
    for key in keys:
        seen = {p[key] for p in parsed.values() if key in p}
        where = "" if len(seen) == 1 and all(key in p for p in parsed.values()) else "   (hosts disagree)"
        if values:
            console.say(env_text.assignment(key, next(iter(seen))).rstrip("\n") + where)
        else:
            console.say(f"{key}={'(empty)' if seen == {''} else '(set, hidden: --show prints it)'}{where}")
    if not keys:
        console.say("(no keys set)")
    if any(len({p.get(key) for p in parsed.values()}) > 1 for key in keys):
        console.warn(f"the hosts' env files disagree: fab env.diff --stage {stage.name}")
    return parsed


def diff(project: ProjectConfig, stage_name: str | None) -> dict[str, dict[str, list[str]]]:
    """Each key on which the hosts disagree, with the hosts grouped by value (never shown)."""
    stage, parsed = _parsed_files(project, stage_name)
    found = {}
    for key in sorted(set().union(*parsed.values())):
        groups: dict[str | None, list[str]] = {}
        for name in sorted(parsed):
            groups.setdefault(parsed[name].get(key), []).append(name)
        if len(groups) > 1:
            labels = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
            found[key] = {("unset" if value is None else f"value {next(labels)}"): hosts
                          for value, hosts in groups.items()}
            console.say(f"{key}: " + "; ".join(f"{label} on {', '.join(hosts)}" for label, hosts in found[key].items()))
    if found:
        raise DeployError(f"the env files of {stage.name} disagree on {len(found)} key(s)",
                          hint=f"fab env.set KEY=VALUE --stage {stage.name} sets a key alike everywhere; "
                               "fab env.push FILE replaces every host's file")
    console.ok(f"the env files of {stage.name} agree ({len(parsed)} hosts)")
    return found


@dataclass
class EnvChange(StageRemotes):
    """One change of the stage's env: what the journal keeps is `to_record()`, key names only."""
    stage: StageConfig
    remotes: dict[str, Remote]
    layout: Layout
    keys: dict[str, list[str]]
    hosts: list[str]
    gunicorn_config: str = ""
    texts: dict[str, str] = field(default_factory=dict)  # host -> its new file (never journaled)
    change_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    values: set[str] = field(default_factory=set)  # every value before and after (to keep out of messages)
    notes: list[str] = field(default_factory=list)
    holder: dict = field(default_factory=dict)
    reached: str = ""

    def to_record(self) -> dict:
        names = sorted(set().union(*self.keys.values()))
        return {"subject": f"env change of {', '.join(names)}", "keys": self.keys, "hosts": self.hosts,
                "change_id": self.change_id}

    @classmethod
    def from_record(cls, stage: StageConfig, remotes: dict[str, Remote], record: dict) -> "EnvChange":
        change_id = record.get("change_id", "")
        if not change_id.isalnum():
            raise DeployError(f"the journal's env change has no usable id ({change_id!r})")
        return cls(stage, remotes, Layout(stage.deploy_to), record.get("keys") or {}, record.get("hosts") or [],
                   change_id=change_id, **guard.progress(record))

    @property
    def holding(self) -> list[Remote]:
        return [self.remotes[name] for name in self.hosts]

    def on_each(self, what: str, script: str) -> None:
        on_hosts(what, self.holding, lambda r: r.run(["sh", "-c", script, "env", self.layout.env_file, self.change_id]))


def _check(c: EnvChange) -> None:
    """The new file beside the old on every host, and the serving release boots with it."""
    on_hosts("writing the new env file", c.holding, lambda r: r.run(
        ["sh", "-c", WRITE_NEW, "env", c.layout.env_file, c.change_id], input=c.texts[r.name]))

    def boots(r: Remote) -> None:
        release = service.current_release(r, c.layout)
        if not release:
            return
        try:
            build.check_boot(r, c.layout, release, c.gunicorn_config, env_file=f"{c.layout.env_file}.{c.change_id}.new")
        except DeployError as exc:  # the app's error may quote a value (a URL it could not parse)
            raise DeployError(env_text.scrub(exc.message, c.values), hint=exc.hint) from None
    on_hosts("checking the app boots with it", [r for r in c.apps if r.name in c.hosts], boots)


def _forget_new(c: EnvChange) -> None:
    c.on_each("removing the new env file", DROP_NEW)  # never the old one kept aside: only PUT_BACK moves it


def _swap(c: EnvChange) -> None:
    c.on_each("replacing the env file", SWAP)


def _put_back(c: EnvChange) -> None:
    """Every host's old file back, and every running app host reloaded onto it (one restarted
    meanwhile may run the new file even if the reload step never began)."""
    c.on_each("putting the old env file back", PUT_BACK)
    _reload(c, read_files(c.holding, c.layout))


def _reload_new(c: EnvChange) -> None:
    _reload(c, c.texts)


def _reload(c: EnvChange, texts: dict[str, str]) -> None:
    """A graceful reload of every running app host, until it answers healthy with `texts`' file."""
    def on_host(r: Remote) -> str:
        if service.systemctl(r, "is-active", c.stage.service, check=False).stdout.strip() != "active":
            return "not running: it reads the file when it starts"
        code, body = service.health(r, c.stage.health_url)
        if not isinstance(body, dict):
            raise DeployError(f"{r.name}: the app does not answer its health check ({code} {str(body)[:200]})")
        if not body.get("env_reload"):
            raise DeployError(f"{r.name}: the serving release does not read its env file again on a reload (it "
                              "predates fab env, or its gunicorn config does not import deploy_runtime's hooks)",
                              hint=f"fab deploy --stage {c.stage.name} once (docs/configuration.md: gunicorn_config), "
                                   "then change the env again")
        key = r.run(["sh", "-c", DIGEST_KEY, "key", c.layout.env_file]).stdout.strip().encode()
        service.reload(r, c.stage.service)
        service.wait_healthy(r, c.stage.health_url, body.get("release"), body.get("revision"), c.stage.health_timeout,
                             any_revision=code != 200, service=c.stage.service,
                             env_digest=digest(texts[r.name].encode(), key))
        return "reloaded"
    done = on_hosts("reloading the app", [r for r in c.apps if r.name in texts], on_host)
    c.notes = [f"{name}: {what}" for name, what in sorted(done.items())]


STEPS = [
    pipeline.Step("check", _check, _forget_new),
    pipeline.Step("write", _swap, _put_back),
    pipeline.Step("reload", _reload_new),  # its undo is the write's: the old file back, then reloaded
]


def change(project: ProjectConfig, stage_name: str | None, sets: dict[str, str] | None = None,
           unsets: set[str] | None = None, replacement: str | None = None) -> dict[str, list[str]]:
    """Set and unset keys (or replace the whole file) on every host that has the env file."""
    stage = load_stage(project, stage_name)
    sets, unsets = sets or {}, unsets or set()
    for key in [*sets, *unsets]:
        env_text.check_key(key)
    with connect(stage) as remotes:
        layout = Layout(stage.deploy_to)
        c = EnvChange(stage, remotes, layout, {}, [], project.gunicorn_config)
        with guard.guarded(c.migrator, layout, lock.holder("env", None), stage.name) as c.holder:
            if not _plan(c, _files_of(stage, remotes), sets, unsets, replacement):
                console.ok(f"the env of {stage.name} already reads so on every host: nothing changed")
                return c.keys
            guard.run_journaled(c, "env", STEPS, lambda outcome, error: _log(c, outcome, error))
        _forget_kept(c)
    for note in c.notes:
        console.say(f"  {note}")
    console.ok(f"env of {stage.name} changed on {', '.join(c.hosts)}")
    return c.keys


def _plan(c: EnvChange, before: dict[str, str], sets: dict[str, str], unsets: set[str],
          replacement: str | None) -> bool:
    """Each host's new file, the keys it changes, the hosts it changes; False if none."""
    c.texts = {name: replacement if replacement is not None else env_text.edited(text, sets, unsets)
               for name, text in before.items()}
    per_host = {name: env_text.changes(before[name], c.texts[name]) for name in before}
    c.keys = {kind: sorted(set().union(*(p[kind] for p in per_host.values()))) for kind in ("added", "changed", "removed")}
    reserved = sorted(set(c.keys["removed"]) & RESERVED)
    if reserved:
        raise ConfigError(f"{', '.join(reserved)} would be removed, but the app's unit sets it as well: a reload "
                          "would keep the value the file gave", hint="set it to the value you want instead")
    c.hosts = sorted(name for name in before if c.texts[name] != before[name])
    c.values = {v for text in (*before.values(), *c.texts.values()) for v in envfile.parse(text).values()}
    for name in c.hosts:
        if c.texts[name].startswith(env_text.REWRITTEN) and not before[name].startswith(env_text.REWRITTEN):
            console.warn(f"{name}: a value in its env file spans lines, so the file is written out anew: "
                         "its comments are not kept")
    if c.hosts:
        console.heading(f"env change on {c.stage.name}: " + "; ".join(
            f"{kind} {', '.join(keys)}" for kind, keys in c.keys.items() if keys))
    return bool(c.hosts)


def _forget_kept(c: EnvChange) -> None:
    try:
        c.on_each("removing the old env files kept aside", FORGET)
    except DeployError as exc:  # a copy as private as the file itself; the next change removes it
        console.warn(f"could not remove the old env file kept aside ({c.layout.env_file}.{c.change_id}.before): {exc}")


def _log(c: EnvChange, outcome: str, error: str | None = None) -> None:
    """deploy.log: which keys changed, who changed them (never a value)."""
    deploylog.append_or_warn(c.migrator, c.layout, {
        "time": deploylog.now(), "action": "env", "user": getpass.getuser(), "stage": c.stage.name,
        "keys": c.keys, "hosts": c.hosts, "outcome": outcome, "error": error})


def recover(stage: StageConfig, remotes: dict[str, Remote], record: dict) -> list[str]:
    """Undo an env change whose controller died: each host's old file back, the app reloaded."""
    c = EnvChange.from_record(stage, remotes, record)
    pipeline.undo_from(STEPS, c, c.reached, stage.name)
    _log(c, "recovered", f"the controller stopped during '{record.get('step')}'")
    return [f"every host has its env file as before the change of {', '.join(sorted(set().union(*c.keys.values())))}"]


def pairs_from(argument: str, stdin_text=None) -> dict[str, str]:
    """`KEY=VALUE`; `KEY` alone: its value asked for (hidden) or read from standard input;
    `-`: several assignments read from standard input, in env file syntax."""
    if argument == "-":
        return env_text.parse_pairs(stdin_text())
    key, sep, value = argument.partition("=")
    env_text.check_key(key)
    if not sep:
        value = stdin_text()
        value = value[:-1] if value.endswith("\n") else value
    return {key: value}


def push_text(path: str) -> str:
    """The local file `env.push` sends, checked to be text the parser reads."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not envfile.parse(text):
        raise ConfigError(f"{path} assigns no variable", hint="KEY=VALUE lines, as systemd's EnvironmentFile= reads them")
    return text
