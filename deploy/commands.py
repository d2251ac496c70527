"""`fab ...`: one function per verb, project config first (as Alembic's command.py)."""
from __future__ import annotations

import json
import time

from . import console, events, hooks, notify, pgbr_setup, phases, pipeline, plan, rolling, steps
from .config import GENERATED_GUNICORN_CONFIG, ProjectConfig
from .errors import DeployError
from .ssh import build, dbops, guard, lock, server_tools, service
from .ssh.connection import HostError, Remote, connect, on_hosts
from .ssh.layout import Layout
from .stages import load_stage
from .templates import app_unit, backup_units, render, sudo_rule


def deploy(project: ProjectConfig, stage_name: str | None, ref: str = "main", batch: int | None = None,
           dry_run: bool = False) -> dict:
    """Build, back up, migrate once, switch and check; on failure undo everything and exit non-zero."""
    stage = load_stage(project, stage_name)
    remotes = connect(stage)
    d = steps.Deploy(project, stage, remotes, ref, batch if batch is not None else stage.batch)
    if dry_run:
        console.heading(f"dry run: deploy {ref} to {stage.name} (nothing will change)")
        try:
            plan.print_plan(d)
        finally:
            d.remove_scratch()
            d.close()
        return {"release": d.release_id, "commit": d.commit, "dry_run": True}
    notifier = notify.Notifier(stage.notify, project.root)
    started = time.monotonic()
    console.heading(f"deploy {ref} to {stage.name} ({len(stage.app_hosts)} app host(s))")
    try:
        with guard.guarded(d.migrator, d.layout, lock.holder("deploy", ref), stage.name) as d.holder:
            notifier.send("started", events.of_deploy(d))
            try:
                outcome, post_failure = _deploy_locked(d)
            except DeployError as exc:
                failed = events.of_deploy(d, "failed", str(exc)[:2000], time.monotonic() - started)
                notifier.send("failed", failed)
                hooks.run(stage.hooks, "on_failure", failed, project.root)
                raise
        took = time.monotonic() - started
        console.ok(f"deployed {d.release_id} ({d.commit[:12]}) to {stage.name} in {took:.1f}s")
        notifier.send("succeeded", events.of_deploy(d, "ok", None, took))
        hooks.run(stage.hooks, "after_deploy", events.of_deploy(d, "ok", None, took), project.root)
        if post_failure:
            raise post_failure
        return {"release": d.release_id, "commit": d.commit, "timings": outcome.timings}
    finally:
        notifier.wait()
        d.remove_scratch()
        d.close()
        remotes.close()


def _deploy_locked(d: steps.Deploy) -> tuple[pipeline.Outcome, DeployError | None]:
    """The deploy's steps (with the stage's hooks) under its lock, the bookkeeping after its
    commit, and the post phase; (the outcome, the post phase's failure if any)."""
    hooks.run(d.stage.hooks, "before_deploy", events.of_deploy(d), d.project.root, raising=True)
    hooked = hooks.around(steps.STEPS, d.stage.hooks, lambda: events.of_deploy(d), d.project.root)
    try:
        outcome = pipeline.run(hooked, d, guard.journaling(d, "deploy"), commit=guard.committing("deploy"))
    except pipeline.DeployFailed as failure:
        _after_failure(d, failure)
        raise
    try:  # Ctrl-C is held back from the commit on: the log and the cleanup finish
        _after_success(d, outcome)
    except BaseException:
        outcome.release_interrupts()
        raise
    stopped = outcome.release_interrupts()
    if stopped:
        console.warn("Ctrl-C came after the deploy was recorded as succeeded: nothing was undone")
    return outcome, _post_phase(d, stopped)


def _after_success(d: steps.Deploy, outcome: pipeline.Outcome) -> None:
    """The bookkeeping after the commit: its failures are reported, never undone."""
    for what, work in (("write the deploy log", lambda: steps.append_log(d, steps.log_entry(d, "ok", outcome.timings))),
                       ("remove old releases", lambda: steps.clean_up(d))):
        try:
            work()
        except DeployError as exc:
            console.warn(f"deployed, but could not {what}: {exc}")


def _post_phase(d: steps.Deploy, stopped: bool) -> DeployError | None:
    """The post revisions, still under the stage's lock, now that every app host serves the
    new release; or, held back, what to run. A failure here switches nothing back."""
    if not d.post:
        return None
    if d.stage.post_migrations == "manual" or stopped:
        console.warn(f"post revisions not run: {', '.join(r.label() for r in d.post)}"
                     + (" (Ctrl-C)" if stopped else " ([stages] post_migrations = \"manual\")")
                     + f"; run them with fab migrate --post --stage {d.stage.name}")
        return None
    try:
        phases.run_post(d.stage, d.migrator, d.release_id, d.app, d.post)
    except DeployError as exc:
        return exc
    return None


def _after_failure(d: steps.Deploy, failure: pipeline.DeployFailed) -> None:
    """Say what the hosts serve now, and log the failure with what was undone."""
    try:
        d.notes += steps.verify_serving(d) if d.switched else []
    except DeployError as exc:
        failure.outcome.undo_failures.append(f"old release not healthy: {exc}")
    if (d.switched or d.migrated) and not failure.outcome.undo_failures:  # failure to old release healthy again
        failure.outcome.timings["rollback"] = time.monotonic() - failure.outcome.failed_at
        d.notes.append(f"rolled back in {failure.outcome.timings['rollback']:.1f}s")
    try:
        steps.append_log(d, steps.log_entry(d, "failed", failure.outcome.timings, failure.reason))
    except HostError as exc:
        console.warn(f"could not write the deploy log: {exc}")
    try:
        if not failure.outcome.undo_failures:
            guard.clear(d.migrator, d.layout)
    except HostError as exc:
        console.warn(f"could not remove the journal (`fab status` will report this deploy as interrupted): {exc}")
    for note in d.notes:
        console.say(f"  {note}")
    if failure.outcome.undo_failures:
        failure.hint = (f"once the hosts named above are reachable: fab recover --stage {d.stage.name} "
                        "(it finishes the undo from the journal)")
    failure.refresh()


def status(project: ProjectConfig, stage_name: str | None, as_json: bool = False) -> dict:
    """Per host: current release, service state, health; the lock holder."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        def host_state(r) -> dict:
            state = {"current": service.current_release(r, layout)}
            if "app" in r.host.roles:
                state["service"] = service.systemctl(r, "is-active", stage.service, check=False).stdout.strip()
                code, body = service.health(r, stage.health_url)
                state["health"] = {"code": code, "body": body}
            return state

        hosts = on_hosts("status", list(remotes.values()), host_state)
        holder = lock.read(remotes[stage.migrations_host.name], layout)
        stale = guard.interrupted(remotes[stage.migrations_host.name], layout)
        result = {"stage": stage.name, "hosts": hosts, "lock": holder, "interrupted": stale}
        if as_json:
            console.say(json.dumps(result, indent=2))
            return result
        console.heading(f"stage {stage.name}")
        for name, state in hosts.items():
            line = f"{name:<8} current {state['current'] or '(none)'}"
            if "health" in state:
                body = state["health"]["body"]
                detail = f"{body.get('status')} rev {body.get('revision')}" if isinstance(body, dict) else str(body)[:60]
                if isinstance(body, dict) and body.get("post_pending"):
                    detail += f" (post revisions to run: {', '.join(body['post_pending'])}; fab migrate --post)"
                if isinstance(body, dict) and body.get("reason"):  # why it is not OK: the database ahead...
                    detail += f" ({body['reason']})"
                if isinstance(body, dict) and body.get("maintenance"):
                    detail += " MAINTENANCE (fab maintenance.off ends it)"
                line += f"  service {state['service']}  health {state['health']['code']} {detail}"
            console.say(line)
        console.say("lock     " + ("free" if holder is None else lock.describe(holder)
                                   + ("" if lock.alive(holder) else " (no longer running: fab recover releases it)")))
        if stale:
            console.banner([f"INTERRUPTED: {guard.describe(stale)}",
                            f"run: fab recover --stage {stage.name}"])
        return result


def releases(project: ProjectConfig, stage_name: str | None, as_json: bool = False) -> list[dict]:
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        found = build.list_releases(remotes[stage.migrations_host.name], layout)
        current = service.current_release(remotes[stage.app_hosts[0].name], layout)
        for r in found:
            r["current"] = r["id"] == current
        if as_json:
            console.say(json.dumps(found, indent=2))
            return found
        for r in found:
            mark = "current" if r["current"] else r.get("status", "?")
            console.say(f"{r['id']:<28} {mark:<8} {r.get('time', ''):<21} {r.get('user', ''):<10} "
                        f"{r.get('ref', '')} {str(r.get('commit', ''))[:12]} rev {r.get('revision')}")
        return found


def setup(project: ProjectConfig, stage_name: str | None, restart_db: bool = False) -> None:
    """The layout on every host; an env file template only where none exists; with the stage's
    admin account, the units and the deploy user's sudo rule installed (else it says how); with
    the pgbackrest engine, its repository, WAL archiving and SSH between them (pgbr_setup)."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    template = render("env.example") + "".join(
        f"# {key}=    (the app reads it: deploy.toml [project] env)\n" for key in project.env)
    _warn_missing_gunicorn_config(project)

    def prepare(r) -> str:
        r.run(["mkdir", "-p", layout.releases, layout.shared, f"{layout.shared}/venvs", f"{layout.shared}/wheels"])
        r.run(["sh", "-c", 'mkdir -p "$1" && chmod 0700 "$1"', "backups", layout.backups])
        wrote = r.run(["test", "-e", layout.env_file], check=False).exited != 0
        if wrote:  # (stdin is only sent to a command that reads it all)
            r.run(["sh", "-c", 'umask 077 && cat > "$1"', "env", layout.env_file], input=template)
        notes = ["wrote an env file template (fill it in)" if wrote else "env file kept"]
        lacking = _env_lacks(r, layout, ("DATABASE_URL", *project.env)) if "app" in r.host.roles else []
        notes += [f"its env file does not set {', '.join(lacking)}: edit {layout.env_file}"] if lacking else []
        units = {}
        if "app" in r.host.roles:
            units[f"{stage.service}.service"] = app_unit(stage.service, stage.user, stage.deploy_to, stage.bind,
                                                         project.gunicorn_config)
        if r.host == stage.backup_host:
            server_tools.tool(r, layout, "list")  # installs the backup tool the timers run
            units.update(backup_units(stage.service, stage.user, stage.deploy_to, stage.backups))
        if units and stage.admin_user:
            notes.append(_install_units(stage, r, units))
        elif units:
            notes += [_unit_state(stage, r)] if "app" in r.host.roles else []
            backup_units_ = [name for name in units if name != f"{stage.service}.service"]
            notes += [f"without admin_user the backup units are not installed: install {', '.join(backup_units_)} "
                      "(deploy/templates, filled in) as root, or schedule their commands with cron "
                      "(docs/backups.md)"] if backup_units_ else []
        return "; ".join(notes)

    with connect(stage) as remotes:
        for name, text in on_hosts("setup", list(remotes.values()), prepare).items():
            console.ok(f"{name}: {text}")
        if stage.backups.engine == "pgbackrest":
            for note in pgbr_setup.setup(stage, remotes, restart_db, project.root):
                console.ok(note)


MISSING_KEYS = "import os, sys; print(' '.join(k for k in sys.argv[1:] if not os.environ.get(k)))"


def _env_lacks(remote: Remote, layout: Layout, keys: tuple[str, ...]) -> list[str]:
    """Which of `keys` the host's env file leaves unset or empty (read as systemd reads it; no value
    leaves the host)."""
    out = remote.run(["env", "-i", "python3", "-c", dbops.LAUNCHER, layout.env_file, layout.root,
                      "python3", "-c", MISSING_KEYS, *keys], check=False)
    return out.stdout.split() if out.exited == 0 else []


def _warn_missing_gunicorn_config(project: ProjectConfig) -> None:
    if project.gunicorn_config != GENERATED_GUNICORN_CONFIG and not (project.root / project.gunicorn_config).is_file():
        console.warn(f"[project] gunicorn_config names {project.gunicorn_config}, which this checkout does not have: "
                     "the unit would not start. Add it, or remove the key to use the toolkit's own config")


def _install_units(stage, remote: Remote, units: dict[str, str]) -> str:
    """As the admin account: the rendered units, the deploy user's sudo rule (checked by visudo),
    and the timers enabled."""
    admin = Remote(stage, remote.host, user=stage.admin_user, key=stage.admin_key)
    rule = sudo_rule(stage.user, stage.service)
    sudoers = f"/etc/sudoers.d/flask-deploy-{stage.user}"
    app = f"{stage.service}.service"
    try:
        before = admin.run(["sudo", "-n", "cat", f"/etc/systemd/system/{app}"], check=False) if app in units else None
        for name, text in units.items():
            admin.run(["sudo", "-n", "install", "-m", "0644", "-o", "root", "-g", "root", "/dev/stdin",
                       f"/etc/systemd/system/{name}"], input=text)
        admin.run(["sudo", "-n", "sh", "-c", 'umask 337 && t="$1.new.$$" && cat > "$t" && visudo -cqf "$t" && mv "$t" "$1"',
                   "sudoers", sudoers], input=rule)
        admin.run(["sudo", "-n", "systemctl", "daemon-reload"])
        # fab logs: the deploy user reads the system journal (its units' lines among them), no more.
        journal = admin.run(["sudo", "-n", "usermod", "--append", "--groups", "systemd-journal", stage.user],
                            check=False)
        timers = [name for name in units if name.endswith(".timer")]
        notes = [f"installed {', '.join(units)} and {sudoers} (as {stage.admin_user}); "
                 + (f"{stage.user} reads the journal (group systemd-journal)" if journal.exited == 0 else
                    f"{stage.user} could not join the group systemd-journal ({_last_line(journal)}): "
                    "fab logs will not read the journal")]
        if before is not None and before.exited == 0 and before.stdout != units[app]:
            # The running service keeps its old settings until a restart, which a reload is not.
            rolling.mark_restart_needed(remote, Layout(stage.deploy_to))
            notes.append(f"{app} changed: the next deploy restarts the app on this host"
                         + (" (drained at the load balancer first)" if stage.lb else ""))
        if app in units:  # after a reboot the server serves its `current` release again by itself
            enabled = admin.run(["sudo", "-n", "systemctl", "enable", app], check=False)
            notes.append(f"{app} starts at boot" if enabled.exited == 0 else
                         f"{app} could not be enabled ({_last_line(enabled)}): it will not start after a reboot")
        if timers:
            enabled = admin.run(["sudo", "-n", "systemctl", "enable", "--now", *timers], check=False)
            notes.append("timers enabled" if enabled.exited == 0 else
                         f"the timers could not be enabled ({_last_line(enabled)}): without systemd, schedule "
                         f"the units' commands with cron (docs/backups.md)")
    finally:
        admin.close()
    return "; ".join(notes)


def _last_line(out) -> str:
    lines = (out.stderr or out.stdout).strip().splitlines()
    return lines[-1][:160] if lines else f"exit {out.exited}"


def _unit_state(stage, r) -> str:
    unit = service.systemctl(r, "status", stage.service, check=False)
    if unit.exited == 4 or "not found" in unit.stderr:
        return (f"the unit {stage.service}.service is not installed: set admin_user in the stage "
                f"(an account with sudo) and run fab setup again, or install deploy/templates/app.service "
                f"(filled in) into /etc/systemd/system/ as root")
    return "unit installed"


def lock_stage(project: ProjectConfig, stage_name: str | None) -> None:
    stage = load_stage(project, stage_name)
    with connect(stage) as remotes:
        remote = remotes[stage.migrations_host.name]
        lock.acquire(remote, Layout(stage.deploy_to), lock.holder(lock.MANUAL, None), stage.name)
        console.ok(f"locked {stage.name}; `fab unlock --stage {stage.name}` releases it")


def unlock_stage(project: ProjectConfig, stage_name: str | None, force: bool = False) -> None:
    """Release a manual lock; with --force, a dead operation's lock (and its journal, undoing nothing)."""
    stage = load_stage(project, stage_name)
    layout = Layout(stage.deploy_to)
    with connect(stage) as remotes:
        remote = remotes[stage.migrations_host.name]
        holder = lock.read(remote, layout)
        stale = guard.load(remote, layout)
        stale = stale if guard.unfinished(stale) else None
        if holder is None and not (stale and force):
            console.ok(f"{stage.name} was not locked")
            return
        if holder is not None and holder.get("action") != lock.MANUAL:
            if not force:
                raise DeployError(f"{stage.name} is locked by {lock.describe(holder)}",
                                  hint=f"if it is dead: fab recover --stage {stage.name} (undoes it), "
                                       f"or fab unlock --stage {stage.name} --force (leaves things as they are)")
            if lock.alive(holder):
                raise DeployError(f"{stage.name} is locked by {lock.describe(holder)}, which is still running "
                                  "(its process, or a heartbeat seconds old): --force never removes a live lock",
                                  hint="wait for it to finish")
        if force and stale:
            guard.clear(remote, layout)  # the operator takes over what that deploy left
            console.warn(f"dropped the journal of {guard.describe(stale)}; nothing was undone")
        if holder is not None:
            lock.release(remote, layout, holder)
        console.ok(f"unlocked {stage.name}" + (f" (was: {lock.describe(holder)})" if holder else ""))
