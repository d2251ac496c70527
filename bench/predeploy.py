"""The deploy's pre-migration safety step by database size, for each backup engine: pgdump's
pre-deploy backup (a whole pg_dump with the row digests that a later no-data-loss restore
needs) against pgbackrest's restore point (a named point in the WAL, archived, with the
repository checked); and the restore each one makes possible. The same code the deploy runs
(backups.take, pgbr.safety_point), in-process, on a sandbox of its own with a pgbackrest stage."""
from __future__ import annotations

import dataclasses
import subprocess
import time

from deploy import backups, pgbr
from deploy.config import ProjectConfig, load_project
from deploy.pgbr_restore import Target
from deploy.sandbox import dbhost
from deploy.ssh import server_tools
from deploy.ssh.connection import connect
from deploy.ssh.layout import Layout
from deploy.stages import load_stage

from .backups import GENERATE
from .project import BenchProject
from .results import Measure, section, timed

TITLE = "Pre-deploy safety by database size: a pg_dump backup against a pgBackRest restore point"
PGBACKREST = '\n[stages.sandbox.backups]\nengine = "pgbackrest"\n\n[stages.sandbox.backups.pgbackrest]\narchive_timeout = 30\n'
SRV_SIZE = "24g"  # the repository and the dumps live on the hosts' /srv (tmpfs: only what is written counts)


def fill(db, size_mb: int) -> int:
    """The app's database grown to about `size_mb` with three generated tables; its size."""
    scale = size_mb / 816
    sql = GENERATE.format(users=max(100, int(400_000 * scale)), orders=max(300, int(1_500_000 * scale)),
                          events=max(400, int(2_000_000 * scale)))
    return int(dbhost.psql(db, sql, "app", timeout=3 * 3600).split()[-1])


def archived(db) -> None:
    """Until the archive has caught up with the generated data's WAL: the file a switch completes is in."""
    last = dbhost.psql(db, "SELECT pg_walfile_name(pg_current_wal_lsn());").strip()
    dbhost.psql(db, "SELECT pg_switch_wal();")
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline and dbhost.psql(
            db, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver;").strip() < last:
        time.sleep(1)


def at_size(bp: BenchProject, project: ProjectConfig, size_mb: int, runs: int) -> dict[str, list[float]]:
    actual = fill(bp.sandbox.db, size_mb)
    archived(bp.sandbox.db)
    stage = load_stage(project, "sandbox")
    dump_stage = dataclasses.replace(stage, backups=dataclasses.replace(stage.backups, engine="pgdump",
                                                                        pgbackrest=None, host=None))
    got: dict[str, list[float]] = {"size": [actual]}
    with connect(stage) as remotes:
        app1 = remotes[stage.migrations_host.name]
        got["full"] = [timed(lambda: pgbr.repo_tool(stage, remotes, "backup", "--type", "full"))]
        for run in range(runs):
            release = f"bench{size_mb}-{run}"
            taken: dict = {}
            got.setdefault("dump", []).append(timed(lambda: taken.update(backups.take(
                dump_stage, remotes, "predeploy", backup_id=f"20260101{run:06d}-predeploy", release=release,
                prune=False, content=True))))
            point: dict = {}
            got.setdefault("point", []).append(timed(lambda: point.update(pgbr.safety_point(
                stage, remotes, f"{release}-predeploy", release))))
            got.setdefault("dump_restore", []).append(timed(lambda: server_tools.restore(
                app1, Layout(stage.deploy_to), dump_stage, taken["id"])))
            target = Target.point(point, point["name"])
            got.setdefault("point_restore", []).append(timed(lambda: pgbr.helper(
                stage, remotes, "restore", *target.helper_args())))
            app1.run(["rm", "-rf", f"{stage.deploy_to}/backups/{taken['id']}.dump",
                      f"{stage.deploy_to}/backups/{taken['id']}.json"])
    return got


def bench_predeploy(project: ProjectConfig, runs: int, size: int = 4000) -> str:
    """`runs` rounds at about 1000 MB and at `size` MB (the largest: this machine's 2 cores and the
    time a run may take set it); return the section."""
    sizes = sorted({min(1000, size), size})
    with BenchProject(project.root, hosts=1) as bp:
        for host in (bp.sandbox.apps[0], bp.sandbox.backup):
            subprocess.run(["mount", "-o", f"remount,size={SRV_SIZE}", str(host.srv)], check=True)
        with open(bp.root / "deploy.toml", "a") as f:
            f.write(PGBACKREST)
        bp.commit("back up with pgBackRest")
        bp.fab("setup", "--restart-db")
        bp.fab("backup", "--type", "full")
        local = load_project(bp.root)
        results = {s: at_size(bp, local, s, runs) for s in sizes}
    measures = []
    for s, got in results.items():
        mb = f"{got['size'][0] / 2**20:.0f} MB"
        measures += [
            Measure(f"{mb}: pgdump pre-deploy backup (pg_dump -Fd -j2 -Z4, row digests, manifest)", got["dump"]),
            Measure(f"{mb}: pgbackrest pre-deploy restore point (point, archive check, backup age)", got["point"]),
            Measure(f"{mb}: pgdump restore of that backup (pg_restore -j2 in place)", got["dump_restore"]),
            Measure(f"{mb}: pgbackrest restore to that point (whole cluster, --delta, replay, promote)",
                    got["point_restore"]),
            Measure(f"{mb}: pgbackrest full backup (lz4, 2 processes; once)", got["full"]),
        ]
    small, large = results[sizes[0]], results[sizes[-1]]
    ratio = lambda key: sorted(large[key])[len(large[key]) // 2] / sorted(small[key])[len(small[key]) // 2]  # noqa: E731
    notes = (f"Growth from the small to the large database ({large['size'][0] / small['size'][0]:.1f}× the data): "
             f"the pg_dump pre-deploy backup took {ratio('dump'):.1f}× as long, the restore point "
             f"{ratio('point'):.1f}× (it writes one WAL record, switches to the next WAL file and waits for it to "
             "reach the repository: the same work at any size). One db host (PostgreSQL 15), the repository on "
             "the backup host, the dumps on app1, all on this machine's 2 cores; the restore to a point replays "
             "the WAL written since its backup (here: the generated data's, then little), so it grows with the "
             "changed data more than with the database.")
    return section(TITLE, f"about {' and '.join(f'{s} MB' for s in sizes)}, {runs} runs", measures, notes)
