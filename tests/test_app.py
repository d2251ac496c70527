"""The app on a real PostgreSQL: its JSON endpoints, and /healthz under a real gunicorn."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploy.local.database import free_port

HEAD = "e2b8f4a6c913"


@pytest.fixture
def migrated(project):
    assert project.inv("upgrade").returncode == 0
    return project


def make_app(url: str, release: str = "r1"):
    os.environ["DATABASE_URL"] = url
    os.environ["RELEASE"] = release
    try:
        from app import create_app

        return create_app()
    finally:
        del os.environ["DATABASE_URL"], os.environ["RELEASE"]


def test_boards_and_cards_are_written_and_read_back(migrated):
    client = make_app(migrated.database_url).test_client()
    board = client.post("/boards", json={"name": "ops"})
    assert board.status_code == 201
    board_id = board.get_json()["id"]
    card = client.post(f"/boards/{board_id}/cards", json={"title": "rotate keys"})
    assert card.status_code == 201 and card.get_json()["done"] is False
    done = client.patch(f"/cards/{card.get_json()['id']}", json={"done": True})
    assert done.get_json()["done"] is True
    assert client.get(f"/boards/{board_id}/cards").get_json()[0]["title"] == "rotate keys"
    assert client.get("/boards").get_json()[0]["cards"] == 1


def test_listing_boards_counts_their_cards_in_one_query_however_many_boards(migrated):
    from sqlalchemy import event

    app = make_app(migrated.database_url)
    client = app.test_client()
    for name, cards in (("empty", 0), ("one", 1), ("three", 3)):
        board_id = client.post("/boards", json={"name": name}).get_json()["id"]
        for n in range(cards):
            client.post(f"/boards/{board_id}/cards", json={"title": f"card {n}"})
    statements = []
    with app.app_context():
        from app.extensions import db

        engine = db.engine
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    listed = client.get("/boards").get_json()
    assert [(b["name"], b["cards"]) for b in listed] == [("empty", 0), ("one", 1), ("three", 3)]
    assert len(statements) == 1, statements


def test_bad_requests_get_json_errors(migrated):
    client = make_app(migrated.database_url).test_client()
    assert client.post("/boards", json={"name": ""}).status_code == 400
    assert client.post("/boards", data="not json").status_code == 400
    assert client.post("/boards", json={"name": "a"}).status_code == 201
    conflict = client.post("/boards", json={"name": "a"})
    assert conflict.status_code == 409 and "exists" in conflict.get_json()["error"]
    assert client.get("/boards/999/cards").status_code == 404


def test_healthz_is_200_at_head_with_release_and_revisions(migrated):
    resp = make_app(migrated.database_url, "20261123-1").test_client().get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"release": "20261123-1", "expected_revision": HEAD,
                               "revision": HEAD, "status": "ok"}


def test_healthz_is_503_when_the_database_is_behind(project):
    assert project.inv("upgrade", "--rev", "c7d9e1f3a562").returncode == 0
    resp = make_app(project.database_url).test_client().get("/healthz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["revision"] == "c7d9e1f3a562" and body["expected_revision"] == HEAD
    assert "code expects e2b8f4a6c913" in body["reason"]


def test_healthz_is_503_when_the_database_is_unreachable():
    closed_port = free_port()
    resp = make_app(f"postgresql://nobody@127.0.0.1:{closed_port}/none").test_client().get("/healthz")
    assert resp.status_code == 503
    assert resp.get_json()["reason"].startswith("database unreachable")


def test_livez_stays_200_while_the_database_is_ahead_of_the_code(migrated):
    """What a load balancer asks: an old release must stay in rotation after the migration ran."""
    app = make_app(migrated.database_url, "old")
    with app.app_context():
        from app.extensions import db
        from sqlalchemy import text

        db.session.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
        db.session.commit()
    client = app.test_client()
    assert client.get("/healthz").status_code == 503
    resp = client.get("/livez")
    assert resp.status_code == 200 and resp.get_json() == {"release": "old", "status": "ok"}


def test_livez_is_503_when_the_database_is_unreachable():
    closed_port = free_port()
    resp = make_app(f"postgresql://nobody@127.0.0.1:{closed_port}/none").test_client().get("/livez")
    assert resp.status_code == 503
    assert resp.get_json()["reason"].startswith("database unreachable")


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_gunicorn_serves_healthz_with_the_shipped_config(migrated):
    port = free_port()
    env = dict(os.environ, DATABASE_URL=migrated.database_url, RELEASE="gunicorn-test",
               BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1", APP_ROOT=str(migrated.root))
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--config", "app/gunicorn.conf.py"],
        cwd=migrated.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline, "gunicorn did not answer in 30s"
                time.sleep(0.2)
        assert status == 200
        assert body["release"] == "gunicorn-test" and body["revision"] == HEAD
    finally:
        server.terminate()
        server.wait(timeout=30)
