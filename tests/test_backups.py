"""fab backup / backups / restore against the sandbox's real PostgreSQL host."""
from __future__ import annotations

import hashlib
import json

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import GOOD_MIGRATION, HEAD, add_migration, deploy, deploy_and_seed, health, sql, ssh

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def deployed(staged):
    return deploy_and_seed(staged, "one", "two", "three")


def backups(project) -> list[dict]:
    return json.loads(project.fab("backups", "--json", db=False).stdout)


def test_a_backup_is_0600_in_a_0700_folder_with_a_manifest_and_downloads_with_its_sha256_checked(deployed, tmp_path):
    proc = deployed.fab("backup", "--label", "nightly", "--download", str(tmp_path), db=False)
    assert proc.returncode == 0, output(proc)
    manifest = next(m for m in backups(deployed) if m["id"].endswith("-nightly"))
    assert manifest["revision"] == HEAD and manifest["release"] == deployed.first_release
    assert manifest["row_counts"]["public.boards"] == 3 and manifest["format"] == "directory"
    assert manifest["options"] == ["--format=directory", "--compress=4", "--jobs=2"]
    assert manifest["server_version"].startswith("15") and "pg_dump" in manifest["pg_dump_version"]
    dump = f"/srv/app/backups/{manifest['id']}.dump"
    modes = ssh(deployed, "app1", f"stat -c '%a' /srv/app/backups {dump} {dump}/* "
                                  f"/srv/app/backups/{manifest['id']}.json").stdout.split()
    assert modes == ["700", "700"] + ["600"] * len(manifest["files"]) + ["600"]
    local = tmp_path / f"{manifest['id']}.dump"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(local.iterdir())}
    assert files == manifest["files"] and "toc.dat" in files
    listing = "".join(f"{name} {digest}\n" for name, digest in files.items())
    assert hashlib.sha256(listing.encode()).hexdigest() == manifest["sha256"]
    password = ssh(deployed, "app1", "sed -n 's/.*:\\(.*\\)@.*/\\1/p' /srv/app/shared/env").stdout.strip()
    assert password not in json.dumps(manifest) and password not in output(proc)
    assert "--label must be" in assert_clean_failure(deployed.fab("backup", "--label", "../x", db=False))


def test_restore_brings_the_data_back_after_taking_a_safety_backup(deployed):
    assert deployed.fab("backup", "--label", "good", db=False).returncode == 0
    backup_id = next(m["id"] for m in backups(deployed) if m["id"].endswith("-good"))
    sql(deployed, "DELETE FROM boards WHERE name <> 'one'")
    proc = deployed.fab("restore", backup_id, db=False)
    assert proc.returncode == 0, output(proc)
    assert sql(deployed, "SELECT string_agg(name, ',' ORDER BY id) FROM boards") == "one,two,three"
    assert any(m["id"].endswith("-before-restore") and m["row_counts"]["public.boards"] == 1 for m in backups(deployed))
    verified = next(m for m in backups(deployed) if m["id"] == backup_id)["verified"]
    assert verified["ok"] is True
    for host in ("app1", "app2"):
        assert health(deployed, host)["release"] == deployed.first_release


def test_restore_refuses_a_corrupted_backup_and_ids_that_are_not_backups(deployed):
    assert deployed.fab("backup", "--label", "bad", db=False).returncode == 0
    backup_id = next(m["id"] for m in backups(deployed) if m["id"].endswith("-bad"))
    path = f"/srv/app/backups/{backup_id}.dump/toc.dat"
    ssh(deployed, "app1", f"printf 'X' | dd of={path} bs=1 seek=100 conv=notrunc status=none")
    sql(deployed, "DELETE FROM boards WHERE name = 'three'")
    text = assert_clean_failure(deployed.fab("restore", backup_id, db=False))
    assert "fails verification" in text and "refusing to restore" in text
    assert sql(deployed, "SELECT count(*) FROM boards") == "2"  # nothing was restored, nothing stopped
    assert health(deployed, "app2")["release"] == deployed.first_release
    for bad, message in (("../../../etc/passwd", "is not a backup id"), ("20990101000000-nope", "there is no backup")):
        assert message in assert_clean_failure(deployed.fab("restore", bad, db=False))


def test_restoring_an_older_revision_names_the_release_to_roll_back_to(deployed):
    assert deployed.fab("backup", "--label", "old", db=False).returncode == 0
    backup_id = next(m["id"] for m in backups(deployed) if m["id"].endswith("-old"))
    add_migration(deployed, GOOD_MIGRATION, "a0d0a0d0beef_add_a_note.py")
    assert deploy(deployed).returncode == 0
    proc = deployed.fab("restore", backup_id, db=False)
    assert proc.returncode == 0, output(proc)
    assert sql(deployed, "SELECT version_num FROM alembic_version") == HEAD
    assert f"fab rollback --stage sandbox --to {deployed.first_release}" in proc.stdout
    assert deployed.fab("rollback", "--to", deployed.first_release, db=False).returncode == 0
    assert health(deployed, "app1")["revision"] == HEAD and health(deployed, "app1")["release"] == deployed.first_release
