"""`inv db.up/down/reset`: a project-owned cluster that is the default database."""
import shutil
import uuid

import pytest

from conftest import SCRATCH, assert_clean_failure, output


@pytest.fixture
def own_cluster(project):
    folder = SCRATCH / f"cluster-{uuid.uuid4().hex[:8]}"
    project.edit("deploy.toml", 'database_dir = ".local/postgres"', f'database_dir = "{folder}"')
    yield project
    project.inv("db.down", db=False)
    shutil.rmtree(folder, ignore_errors=True)


def test_db_up_prints_its_url_and_is_the_default_without_database_url(own_cluster):
    up = own_cluster.inv("db.up", db=False)
    assert up.returncode == 0, output(up)
    url = next(w for w in up.stdout.split() if w.startswith("postgresql://"))
    assert url.startswith("postgresql://postgres@127.0.0.1:") and url.endswith("/app")
    assert own_cluster.inv("upgrade", db=False).returncode == 0
    current = own_cluster.inv("current", db=False)
    assert url in current.stdout and "at head" in current.stdout
    again = own_cluster.inv("db.up", db=False)
    assert "already running: " + url in again.stdout


def test_without_a_running_database_tasks_say_to_run_db_up(own_cluster):
    text = assert_clean_failure(own_cluster.inv("current", db=False))
    assert "inv db.up" in text
    assert own_cluster.inv("db.up", db=False).returncode == 0
    assert own_cluster.inv("db.down", db=False).returncode == 0
    assert "inv db.up" in assert_clean_failure(own_cluster.inv("upgrade", db=False))


def test_db_reset_recreates_the_database_at_head(own_cluster):
    import psycopg2

    assert own_cluster.inv("db.up", db=False).returncode == 0
    assert own_cluster.inv("upgrade", db=False).returncode == 0
    url = next(w for w in own_cluster.inv("db.up", db=False).stdout.split() if w.startswith("postgresql://"))
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO boards (name) VALUES ('scratch')")
    conn.close()
    reset = own_cluster.inv("db.reset", db=False)
    assert reset.returncode == 0, output(reset)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM boards")
        assert cur.fetchone()[0] == 0
    conn.close()
    assert "at head" in own_cluster.inv("current", db=False).stdout


def test_a_malformed_config_is_a_clear_error_naming_the_file_and_key(project):
    project.edit("deploy.toml", 'app = "app:create_app"', "app = 42")
    text = assert_clean_failure(project.inv("current"))
    assert "deploy.toml: [project] app: expected a non-empty string" in text
