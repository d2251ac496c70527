"""How each app host is switched to a release: a graceful reload (HUP: the socket kept,
new workers on the new code) wherever that loads the release, and a restart where it
cannot: the app's unit file changed (`fab setup` leaves a marker), or gunicorn itself
changed (a HUP re-runs the old master's gunicorn). With a load balancer named in the
stage, a host is drained before a restart, and in batches (`--batch N`) before any
switch, and put back once HAProxy's own check passes; the last host in rotation is
never drained.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from . import console
from .ssh import balancer, service
from .ssh.connection import HostsFailed, Remote, StageRemotes, on_hosts
from .ssh.layout import Layout

if TYPE_CHECKING:
    from .stages import StageConfig

RESTART_MARKER = "restart-needed"  # in shared/: written by `fab setup` when the app's unit changed
GUNICORN_VERSIONS = """cd "$1"
if [ -e "shared/$2" ]; then echo marker; else echo none; fi
serving=$(readlink current 2>/dev/null || true)
[ -n "$serving" ] || echo nothing-serving
for release in "${serving#releases/}" "$3"; do
  python="releases/$release/.venv/bin/python"
  if [ -z "$release" ]; then
    continue
  elif [ -x "$python" ]; then
    "$python" -c 'import importlib.metadata as m; print(m.version("gunicorn"))' 2>/dev/null || echo none
  else
    echo none
  fi
done"""
_lb_lock = threading.Lock()  # one runtime API exchange at a time over the LB host's connection


class Switching(StageRemotes):
    """What switches app hosts (a deploy, a rollback): its stage, hosts, batch size, the hosts it
    switched, notes for the operator, and its connection to the stage's load balancer."""

    stage: StageConfig
    layout: Layout
    batch: int
    switched: list[str]
    notes: list[str]
    _lb: Remote | None = None

    @property
    def lb_remote(self) -> Remote:
        """The load balancer's host, connected on first use."""
        if self._lb is None:
            self._lb = Remote(self.stage, self.stage.lb.host)
        return self._lb

    def close(self) -> None:
        """The connections opened beyond the stage's hosts."""
        if self._lb is not None:
            self._lb.close()


def restart_reason(remote: Remote, layout: Layout, release: str) -> str | None:
    """Why a reload cannot load `release` on this host, where `current` serves (None: it can)."""
    out = remote.run(["sh", "-c", GUNICORN_VERSIONS, "how-to-switch", layout.root, RESTART_MARKER,
                      release]).stdout.split()
    marker, old, new = (out + ["none"] * 3)[:3]
    if marker == "marker":
        return "the app's unit file changed (fab setup)"
    if old != "nothing-serving" and old != new:
        return f"gunicorn {old} -> {new}"
    return None


def mark_restart_needed(remote: Remote, layout: Layout) -> None:
    remote.run(["touch", f"{layout.shared}/{RESTART_MARKER}"])


def _clear_marker(remote: Remote, layout: Layout) -> None:
    remote.run(["rm", "-f", f"{layout.shared}/{RESTART_MARKER}"])


def batches(d: Switching, hosts: list[Remote], restarts: bool) -> list[list[Remote]]:
    """`hosts` in the order and groups they switch: restarts one host at a time unless a batch
    size is given, and never every app host at once."""
    if not hosts:
        return []
    size = d.batch or (1 if restarts else len(hosts))
    if (restarts or (d.stage.lb and d.batch)) and len(d.apps) > 1:
        size = min(size, len(d.apps) - 1)
    return [hosts[i:i + size] for i in range(0, len(hosts), size)]


def switch_all(d: Switching, to: Callable[[Remote], str | None], revision: str | None, *, undo: bool = False,
               report: Callable[[str, str], None] = lambda name, how: None, what: str = "switching back") -> None:
    """Switch every app host `to` gives a release for, batch by batch; `report` hears how each went.
    A switch stops at the first batch that failed; an undo goes on with the others (a host that
    cannot be reached must not keep the rest on the new release) and then reports every failure,
    as `what` failed. An undo checks only that the release answers, at any revision."""
    targets = {r.name: to(r) for r in d.apps}
    hosts = [r for r in d.apps if targets[r.name]]
    reasons = _restart_reasons(d, hosts, targets)
    outcomes: dict[str, object] = {}
    for number, batch in enumerate(batches(d, hosts, any(isinstance(v, str) for v in reasons.values())), 1):
        drained = bool(d.stage.lb) and (bool(d.batch) or any(isinstance(reasons[r.name], str) for r in batch))

        def on_host(r: Remote) -> str:
            reason = reasons[r.name]
            if isinstance(reason, BaseException):
                raise reason
            return switch_host(d, r, targets[r.name], revision, reason, drained, undo)

        try:
            results = on_hosts(what if undo else f"switch (batch {number})", batch, on_host)
        except HostsFailed as failed:
            if not undo:
                raise
            results = failed.results
        for name, how in results.items():
            outcomes[name] = how
            if isinstance(how, str):
                report(name, how)
    if any(isinstance(v, BaseException) for v in outcomes.values()):
        raise HostsFailed(what, outcomes)


def _restart_reasons(d: Switching, hosts: list[Remote], targets: dict[str, str | None]) -> dict[str, object]:
    """Per host: why it must restart (a string), None, or the error that kept it from being asked."""
    def reason(r: Remote) -> str | None:
        return restart_reason(r, d.layout, targets[r.name])
    try:
        return on_hosts("checking how to switch", hosts, reason)
    except HostsFailed as failed:
        return failed.results


def switch_host(d: Switching, r: Remote, release: str, revision: str | None, reason: str | None,
                drained: bool, undo: bool) -> str:
    """One host: out of rotation if `drained`, switched, reloaded or restarted, healthy, back in."""
    if not undo:
        d.switched.append(r.name)
    if drained:
        drained = _at_lb(d, lambda lb: balancer.drain(lb, d.stage.lb, r.name))
        if not drained:
            console.warn(f"{r.name}: not drained: no other app host is in the load balancer's rotation")
    service.switch(r, d.layout, release)
    how = service.restart(r, d.stage.service) if reason else service.reload(r, d.stage.service)
    service.wait_healthy(r, d.stage.health_url, release, revision, d.stage.health_timeout,
                         any_revision=undo, service=d.stage.service)
    if drained:
        _at_lb(d, lambda lb: balancer.put_back(lb, d.stage.lb, r.name, d.stage.health_timeout))
    if reason:
        _clear_marker(r, d.layout)
    return how + (f" ({reason})" if reason else "") + (", drained at the load balancer" if drained else "")


def undrain(d: Switching) -> None:
    """After an undo: no app host stays out of rotation because the switch stopped half-way."""
    if d.stage.lb:
        back = _at_lb(d, lambda lb: balancer.undrain_all(lb, d.stage.lb, [h.name for h in d.stage.app_hosts]))
        if back:
            d.notes.append(f"put {', '.join(back)} back in the load balancer's rotation")


def check_balancer(d: Switching) -> None:
    """Preflight: the load balancer answers and knows every app host."""
    if d.stage.lb:
        summary = _at_lb(d, lambda lb: balancer.check_servers(lb, d.stage.lb, [h.name for h in d.stage.app_hosts]))
        console.say(f"  [{d.stage.lb.host.name}] load balancer: {summary}")


def _at_lb(d: Switching, work: Callable[[Remote], object]):
    with _lb_lock:
        return work(d.lb_remote)
