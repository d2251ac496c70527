"""Stages shaped otherwise than the sandbox's default: here a migrations host that serves
no app (no `current` link), on which deploy, rollback and restore must still work."""
from __future__ import annotations

import json

import pytest
from conftest import output
from fleet_helpers import GOOD_MIGRATION, HEAD, add_migration, assert_serving, current, sql, ssh

pytestmark = pytest.mark.timeout(300)


def use_split_stage(project) -> None:
    """A stage `split` on the same fleet whose migrations (and backup) host is the db host."""
    text = project.sandbox.stage_file.read_text()
    assert 'roles = ["app", "migrations"]' in text and 'roles = ["db"]' in text, text
    text = text.replace('roles = ["app", "migrations"]', 'roles = ["app"]').replace(
        'roles = ["db"]', 'roles = ["db", "migrations"]')
    (project.root / "split-stage.toml").write_text(text)
    with open(project.root / "deploy.toml", "a") as config:
        # "downgrade": the rollback below moves the database from the host that serves no app
        config.write('\n[stages.split]\ninclude = "split-stage.toml"\nhealth_timeout = 10\nundo_expand = "downgrade"\n')
    project.commit_all("a stage whose migrations host serves no app")
    project.push()


def fab(project, *args: str):
    proc = project.fab(*args, "--stage", "split", db=False)
    assert proc.returncode == 0, output(proc)
    return proc


def test_a_migrations_host_without_the_app_deploys_rolls_back_and_restores(deployed):
    use_split_stage(deployed)
    fab(deployed, "deploy")
    first = current(deployed, "app1")
    assert ssh(deployed, "db", "test -e /srv/app/current").returncode != 0  # it serves nothing
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    fab(deployed, "deploy")
    second = current(deployed, "app1")
    assert sql(deployed, "SELECT version_num FROM alembic_version") == "a0d0a0d0beef"
    listed = json.loads(fab(deployed, "releases", "--json").stdout)
    assert [r["id"] for r in listed if r["current"]] == [second]

    rolled = fab(deployed, "rollback")
    assert f"rolled back split to {first}" in rolled.stdout
    assert_serving(deployed, first, HEAD)

    backup = f"{second}-predeploy"
    restored = fab(deployed, "restore", backup)
    assert f"restored {backup}" in restored.stdout and "the app is healthy" in restored.stdout, output(restored)
    assert sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards") == "kept,also kept"
    assert_serving(deployed, first, HEAD)
