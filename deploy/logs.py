"""`fab logs`: the app's journal (or the backup units') from the stage's hosts, each line
prefixed by its host. Read by journalctl on each host, merged by time; or followed live
until Ctrl-C, which stops every host's journalctl and ends quietly."""
from __future__ import annotations

import threading

from . import console
from .config import ProjectConfig
from .errors import ConfigError, DeployError
from .ssh.connection import HostsFailed, Remote, connect, on_hosts
from .stages import StageConfig, load_stage
from .templates import backup_units

# What journalctl says when the user may not read the system journal (no lines of the app's unit).
NO_ACCESS = ("insufficient permissions", "not seeing messages from other users and the system")


def units_and_hosts(stage: StageConfig, unit: str, host: str | None) -> tuple[list[str], list]:
    """The systemd units of `unit` (app or backup) and the hosts that run them (or `host` alone)."""
    if unit == "app":
        units, running = [f"{stage.service}.service"], list(stage.app_hosts)
    elif unit == "backup":
        units = [name for name in backup_units(stage.service, stage.user, stage.deploy_to, stage.backups)
                 if name.endswith(".service")]
        running = [stage.backup_host]
    else:
        raise ConfigError(f"--unit must be app or backup, got {unit!r}")
    hosts = [h for h in running if host is None or h.name == host]
    if not hosts:
        raise ConfigError(f"no host {host!r} runs the {unit} units on {stage.name}",
                          hint="hosts: " + ", ".join(h.name for h in running))
    return units, hosts


def journal_argv(units: list[str], since: str | None, lines: int | None, follow: bool) -> list[str]:
    # UTC on every host: the lines of hosts in other time zones merge in order.
    argv = ["journalctl", "--no-pager", "--utc", "--output=short-iso-precise"]
    for unit in units:
        argv += ["--unit", unit]
    argv += ["--since", since] if since else []
    argv += ["--lines", str(lines if lines is not None else (10 if follow else 200))]
    # With --since, --lines alone counts from the oldest line; newest first, it counts the last ones
    # (the merge puts them back in order).
    return argv + (["--follow"] if follow else ["--reverse"])


def logs(project: ProjectConfig, stage_name: str | None, host: str | None = None, since: str | None = None,
         lines: int | None = None, follow: bool = False, unit: str = "app") -> None:
    """Print the journal of `unit` on its hosts; with `follow`, until Ctrl-C."""
    stage = load_stage(project, stage_name)
    units, hosts = units_and_hosts(stage, unit, host)
    argv = journal_argv(units, since, lines, follow)
    width = max(len(h.name) for h in hosts)
    with connect(stage) as remotes:
        chosen = [remotes[h.name] for h in hosts]
        try:
            if follow:
                _follow(chosen, argv, width)
            else:
                _print_merged(chosen, argv, width)
        except KeyboardInterrupt:
            console.say("")
        except HostsFailed as failed:
            if any(words in str(failed) for words in NO_ACCESS):
                raise DeployError(f"the deploy user may not read the system journal on {stage.name}",
                                  hint="fab setup with the stage's admin_user adds it to the group systemd-journal "
                                       "(or: sudo usermod -aG systemd-journal USER on each host)") from None
            raise


def _entries(text: str) -> list[str]:
    """journalctl's lines, a message's continuation lines (indented) kept with its first."""
    found: list[str] = []
    for line in text.splitlines():
        if line[:1].isspace() and found:
            found[-1] += "\n" + line
        else:
            found.append(line)
    return found


def _checked(remote: Remote, argv: list[str], **kw) -> str:
    out = remote.run(argv, check=False, **kw)
    if out.exited != 0 or any(words in out.stderr for words in NO_ACCESS):
        raise DeployError(f"{remote.name}: journalctl exited {out.exited}: {out.stderr.strip()[:300]}")
    return out.stdout


def _print_merged(remotes: list[Remote], argv: list[str], width: int) -> None:
    texts = on_hosts("reading the journal", remotes, lambda r: _checked(r, argv))
    merged = sorted((entry, name) for name, text in texts.items() for entry in _entries(text))
    for entry, name in merged:  # short-iso-precise: each entry starts with its time
        console.say(f"{name:<{width}} | " + entry.replace("\n", f"\n{'':<{width}} | "))


def _follow(remotes: list[Remote], argv: list[str], width: int) -> None:
    printing = threading.Lock()

    def follow(r: Remote) -> str:
        pending = bytearray()

        def on_stdout(chunk: bytes) -> None:
            pending.extend(chunk)
            *complete, rest = pending.split(b"\n")
            pending[:] = rest
            with printing:
                for line in complete:
                    console.say(f"{r.name:<{width}} | {line.decode(errors='replace')}")
        return _checked(r, argv, on_stdout=on_stdout)
    on_hosts("following the journal", remotes, follow)
