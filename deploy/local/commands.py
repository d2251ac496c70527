"""`inv db.*`: the local PostgreSQL cluster's verbs."""
from __future__ import annotations

from .. import console
from ..config import ProjectConfig
from .database import LocalCluster
from . import workflow


def cluster(project: ProjectConfig) -> LocalCluster:
    return LocalCluster(project.local_database_dir, project.local_database_name)


def db_up(project: ProjectConfig) -> str:
    """Start (creating on first use) the local cluster; print the URL it serves."""
    local = cluster(project)
    was_running = local.is_running()
    url = local.up()
    console.ok(("already running: " if was_running else "started: ") + url)
    console.say("This is the default database while DATABASE_URL is not set.")
    return url


def db_down(project: ProjectConfig) -> None:
    if cluster(project).down():
        console.ok("stopped the local database")
    else:
        console.ok("the local database was not running")


def db_reset(project: ProjectConfig, empty: bool = False) -> str:
    """Drop and recreate the app database; upgrade it to head unless `empty`."""
    local = cluster(project)
    local.up()
    local.drop_database(local.database)
    url = local.create_database(local.database)
    console.ok(f"recreated {local.database} (empty)")
    if not empty:
        workflow.upgrade(project)
    return url
