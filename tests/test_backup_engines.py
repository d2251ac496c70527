"""Both backup engines through the same verbs and the same outputs, on the sandbox: `fab backup`,
`fab backups --json` (one list; each entry's id is what `fab restore` takes), `fab backups.check
--restore-test --json` (exit 0, OK, a real restore test, the Prometheus textfile), and `fab restore
ID`, which keeps a safety copy first that is itself restored by its id from the list."""
from __future__ import annotations

import json

import pytest
from conftest import assert_clean_failure, output
from fleet_helpers import (BOARDS, HEAD, assert_serving, backups_listed, deploy_and_seed, fab_ok, sql, ssh,
                           use_pgbackrest)

pytestmark = pytest.mark.timeout(400)
CHECK_HOST = {"pgdump": "app1", "pgbackrest": "backup"}  # the stage's backup host for each engine


@pytest.mark.parametrize("engine", ["pgdump", "pgbackrest"])
def test_both_engines_back_up_list_check_and_restore_an_id_of_the_list_after_a_safety_copy(staged, engine):
    if engine == "pgbackrest":  # archiving set up, and the base backup every restore point needs
        use_pgbackrest(staged)
        fab_ok(staged, "setup", "--restart-db")
        fab_ok(staged, "backup")
    deploy_and_seed(staged, "one", "two")

    fab_ok(staged, "backup")
    backups = [e for e in backups_listed(staged) if e["kind"] == "backup"]
    newest = backups[-1]
    assert newest["engine"] == engine and newest["size"] > 0 and newest["time"].endswith("Z")
    sql(staged, "DELETE FROM boards WHERE name = 'two'")

    proc = staged.fab("backups.check", "--restore-test", "--json", db=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["state"] == "OK", output(proc)
    checks = {c["check"]: c for c in report["checks"]}
    assert {"age", "size", "restore"} <= set(checks) and checks["restore"]["ran"] is True
    metrics = ssh(staged, CHECK_HOST[engine], "cat /srv/app/metrics/flask_deploy_backup.prom").stdout
    assert 'flask_deploy_backup_check_status{database="app",check="all"} 0' in metrics

    fab_ok(staged, "restore", newest["id"])
    assert sql(staged, BOARDS) == "one,two"
    assert_serving(staged, staged.first_release, HEAD)
    safety = [e for e in backups_listed(staged) if "before-restore" in e["id"]]
    assert len(safety) == 1 and safety[0]["engine"] == engine, safety
    fab_ok(staged, "restore", safety[0]["id"])  # the database as the restore found it
    assert sql(staged, BOARDS) == "one"
    assert_serving(staged, staged.first_release, HEAD)
    assert "there is no backup" in assert_clean_failure(staged.fab("restore", "20990101000000-nope", db=False))
