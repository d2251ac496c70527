"""`[stages.NAME.backups]`: which engine takes the stage's backups, and how they are taken,
kept and checked.

Two engines: `pgdump` (logical dumps on the migrations host, the default) and `pgbackrest`
(physical backups with WAL archiving into a repository on a host of the role "backup",
for databases past pg_dump's reach; docs/backups.md says when to choose which).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import _Table

ENGINES = ("pgdump", "pgbackrest")
CALENDAR = r"[A-Za-z0-9*:./, ~-]+"
COMPRESS_TYPES = ("lz4", "zst", "gz", "bz2", "none")
# [stages.S.backups.pgbackrest.options]: extra repository settings (object storage...), as
# pgbackrest.conf names them; the ones the toolkit sets itself are not overridable.
OWN_OPTIONS = frozenset({"repo1-path", "log-path", "lock-path", "spool-path", "cmd-ssh", "pg1-host", "pg1-host-user",
                         "pg1-path", "pg1-port", "pg1-host-config", "pg1-host-cmd", "repo1-host", "repo1-host-user",
                         "repo1-host-config", "process-max", "compress-type", "archive-timeout",
                         "repo1-retention-full", "stanza", "config"})


@dataclass(frozen=True)
class PgBackRest:
    """The pgbackrest engine's own settings (`[stages.NAME.backups.pgbackrest]`)."""

    stanza: str                 # pgBackRest's name for the cluster
    cluster: str                # Debian's VERSION/NAME of the db host's cluster (postgresql@15-main)
    full_schedule: str          # systemd OnCalendar= of the full backups
    diff_schedule: str          # ...and of the differential ones in between
    retention_full: int         # full backups kept (with their differentials and the WAL they need)
    compress_type: str
    archive_timeout: int        # seconds a WAL segment may take to reach the repository before it is "broken"
    options: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.cluster.split("/")[0]

    @property
    def data_directory(self) -> str:
        return f"/var/lib/postgresql/{self.cluster}"

    @property
    def unit(self) -> str:
        return f"postgresql@{self.cluster.replace('/', '-')}.service"


@dataclass(frozen=True)
class BackupSettings:
    """How backups are taken, kept and checked."""

    format: str                 # directory (parallel dump, the default) or custom
    compress: int               # gzip level; 4 with 2 jobs was measured best (docs/backups.md)
    jobs: int                   # parallel pg_dump/pg_restore jobs (pgBackRest's process-max)
    keep: int                   # the newest N are kept...
    keep_daily_days: int        # ...and the newest of each of the last D days
    warn_age_hours: float
    crit_age_hours: float
    size_tolerance: float       # the newest may be this much (a fraction) smaller than the median of earlier ones
    restore_test_days: float    # a real restore into a scratch database at least this often (0: never by itself)
    schedule: str               # systemd OnCalendar= of the nightly backup
    check_schedule: str         # and of the check
    textfile: str               # the Prometheus textfile-collector file the check rewrites
    host: str | None            # where backups are taken and kept (default: the migrations host)
    engine: str = "pgdump"
    pgbackrest: PgBackRest | None = None

    def dump_args(self, label: str) -> list[str]:
        return ["dump", "--label", label, "--format", self.format, "--compress", str(self.compress),
                "--jobs", str(self.jobs), "--keep", str(self.keep), "--keep-daily-days", str(self.keep_daily_days)]

    def check_args(self) -> list[str]:
        if self.pgbackrest:
            return ["pgbr-check", "--stanza", self.pgbackrest.stanza, "--warn-age-hours", f"{self.warn_age_hours:g}",
                    "--crit-age-hours", f"{self.crit_age_hours:g}", "--restore-test-days",
                    f"{self.restore_test_days:g}", "--textfile", self.textfile]
        return ["check", "--warn-age-hours", f"{self.warn_age_hours:g}", "--crit-age-hours",
                f"{self.crit_age_hours:g}", "--size-tolerance", f"{self.size_tolerance:g}",
                "--restore-test-days", f"{self.restore_test_days:g}", "--jobs", str(self.jobs),
                "--textfile", self.textfile]


def read(table: _Table, deploy_to: str, hosts: tuple) -> BackupSettings:
    """The stage's backup settings, validated against its hosts (`StageHost`s)."""
    engine = table.choice("engine", "pgdump", ENGINES)
    host = table.data.get("host")
    if engine == "pgbackrest":
        for role in ("db", "backup"):
            if sum(role in h.roles for h in hosts) != 1:
                raise table.fail("engine", f"\"pgbackrest\" needs exactly one host with the role \"{role}\" in the "
                                           "stage (the database's host, and the repository's)")
        host = next(h.name for h in hosts if "backup" in h.roles)
    elif host is not None and not any(h.name == host and {"db", "migrations"} & set(h.roles) for h in hosts):
        raise table.fail("host", f"the name of a host with the role \"db\" or \"migrations\", got {host!r}")
    fmt = table.text("format", "directory")
    if fmt not in ("directory", "custom"):
        raise table.fail("format", f"directory or custom, got {fmt!r}")
    warn = table.number("warn_age_hours", 26, 0.01, 24 * 366)
    return BackupSettings(
        format=fmt,
        compress=table.integer("compress", 4, 0, 9),
        jobs=table.integer("jobs", 2, 1, 64),
        keep=table.integer("keep", 7, 1, 1000),
        keep_daily_days=table.integer("keep_daily_days", 14, 0, 3660),
        warn_age_hours=warn,
        crit_age_hours=table.number("crit_age_hours", max(50, warn), warn, 24 * 366),
        size_tolerance=table.number("size_tolerance", 0.5, 0.01, 0.99),
        restore_test_days=table.number("restore_test_days", 7, 0, 366),
        schedule=table.matching("schedule", "*-*-* 03:00:00", CALENDAR, "a systemd calendar spec like *-*-* 03:00:00"),
        check_schedule=table.matching("check_schedule", "*-*-* 04:30:00", CALENDAR,
                                      "a systemd calendar spec like *-*-* 04:30:00"),
        textfile=table.matching("textfile", f"{deploy_to}/metrics/flask_deploy_backup.prom", r"(/[A-Za-z0-9_.-]+)+\.prom",
                                "an absolute path ending in .prom"),
        host=host,
        engine=engine,
        pgbackrest=_pgbackrest(table.table("pgbackrest")) if engine == "pgbackrest" else None,
    )


def _pgbackrest(table: _Table) -> PgBackRest:
    options = table.table("options").data
    for name, value in options.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,60}", name) or name in OWN_OPTIONS:
            raise table.fail("options", f"pgBackRest option names it does not set itself, got {name!r}")
        if not isinstance(value, (str, int)) or isinstance(value, bool) or not re.fullmatch(r"[^\n\r\x00]{1,500}", str(value)):
            raise table.fail(f"options.{name}", f"a one-line value, got {value!r}")
    return PgBackRest(
        stanza=table.matching("stanza", "app", r"[A-Za-z0-9][A-Za-z0-9_-]{0,40}", "a name of letters, digits, - and _"),
        cluster=table.matching("cluster", "15/main", r"(1[5-9]|[2-9][0-9])/[A-Za-z0-9_-]{1,40}",
                               "Debian's VERSION/NAME of the db host's cluster, PostgreSQL 15 or later (the "
                               "restore-point proof reads the WAL with pg_walinspect), like 15/main"),
        full_schedule=table.matching("full_schedule", "Sun *-*-* 01:00:00", CALENDAR,
                                     "a systemd calendar spec like Sun *-*-* 01:00:00"),
        diff_schedule=table.matching("diff_schedule", "Mon..Sat *-*-* 01:00:00", CALENDAR,
                                     "a systemd calendar spec like Mon..Sat *-*-* 01:00:00"),
        retention_full=table.integer("retention_full", 2, 1, 100),
        compress_type=table.choice("compress_type", "lz4", COMPRESS_TYPES),
        archive_timeout=table.integer("archive_timeout", 30, 5, 3600),
        options={name: str(value) for name, value in options.items()},
    )
