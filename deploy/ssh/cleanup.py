"""Keeping the last K good releases on a host: never `current`, never the release
a rollback would go to; failed releases do not count toward K. Environments
that no kept release uses are removed with them."""
from __future__ import annotations


from .build import list_releases
from .connection import Remote
from .layout import Layout
from .service import current_release


def plan(releases: list[dict], current: str | None, keep: int) -> list[str]:
    """The release ids to remove (oldest first), from the list with statuses, oldest first."""
    good = [r["id"] for r in releases if r.get("status") == "good"]
    kept = set(good[-keep:])
    if current:
        kept.add(current)
        before = [g for g in good if g < current]
        if before:
            kept.add(before[-1])  # what `fab rollback` goes back to
    newest = releases[-1]["id"] if releases else None
    return [r["id"] for r in releases if r["id"] not in kept and r["id"] != newest and r["id"] != current
            and r.get("status") in ("good", "failed", "unknown")]


def keep_releases(remote: Remote, layout: Layout, keep: int) -> list[str]:
    releases = list_releases(remote, layout)
    doomed = plan(releases, current_release(remote, layout), keep)
    if doomed:
        remote.run(["rm", "-rf", "--", *(layout.release(i) for i in doomed)])
    script = """set -eu
root=$1
cd "$root/shared/venvs" 2>/dev/null || exit 0
used=$(for l in "$root"/releases/*/.venv; do [ -L "$l" ] && basename "$(readlink "$l")"; done | sort -u)
for v in *; do
  [ -e "$v" ] || continue
  echo "$used" | grep -qx "$v" || rm -rf "$v" "../wheels/$v"
done
"""
    remote.run(["sh", "-c", script, "prune-venvs", layout.root])
    return doomed


