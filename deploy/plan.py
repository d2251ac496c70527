"""`fab deploy --dry-run`: the deploy's preflight (which changes nothing), then what it would do."""
from __future__ import annotations

from . import console, pgbr
from .lint import render_revisions
from .ssh import build
from .steps import Deploy, preflight


def print_plan(d: Deploy) -> None:
    """--dry-run: preflight (which changes nothing), then what the deploy would do."""
    preflight(d)
    console.heading(f"plan: release {d.release_id} = {d.ref} ({d.commit[:12]})")
    for r in d.build_remotes:
        env = "reuse" if build.environment_ready(r, d.layout, d.digest) else f"install {d.digest} from uploaded wheels"
        console.say(f"  {r.name:<8} {','.join(r.host.roles):<16} {d.previous.get(r.name) or '(none)'} -> "
                    f"{d.release_id}; environment: {env}")
    size = d.batch or len(d.apps)
    console.say(f"  switch {len(d.apps)} app host(s), {size} at a time; health: {d.stage.health_url}")
    if not d.pending:
        console.say("  migrations: none; no backup")
        return
    if d.stage.backups.engine == "pgbackrest":
        console.say(f"  backup first: restore point {d.release_id}-predeploy on {pgbr.db_host(d.stage).name}, "
                    f"reachable from a backup in {d.stage.backup_host.name}'s repository (no dump)")
    else:
        console.say(f"  backup first: {d.layout.backups}/{d.release_id}-predeploy.dump on {d.backup_remote.name}")
    _, chunks = render_revisions(d.target, d.graph)
    for rev in d.pending:
        atomic = " (NOT atomic: autocommit block)" if rev.non_transactional else ""
        when = (" after the switch" + (": held back for fab migrate --post" if d.stage.post_migrations == "manual"
                                       else "")) if rev.phase == "post" else ""
        console.say(f"  migration {rev.label()}{atomic}{when}:")
        console.say(console.indent(chunks.get(rev.id, "(no SQL rendered)").strip(), "      "))
