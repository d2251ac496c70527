"""The app's side of the contract, from the toolkit (deploy_runtime): the health and liveness
answers in front of an app that has none, and the gunicorn config a release is served with."""
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text
from werkzeug.test import Client

from deploy.local.database import free_port
from deploy.ssh.service import Unhealthy, wait_healthy
from deploy.templates import release_files
from deploy_runtime.wsgi import serve

HEAD = "e2b8f4a6c913"


@pytest.fixture
def migrated(project):
    assert project.inv("upgrade").returncode == 0
    return project


def served(url: str, release: str = "r1", health: str = "/healthz", live: str = "/livez") -> Client:
    """The demo app as a release serves it: behind the toolkit's endpoints."""
    os.environ.update(DATABASE_URL=url, RELEASE=release)
    try:
        return Client(serve("app:create_app", health, live))
    finally:
        del os.environ["DATABASE_URL"], os.environ["RELEASE"]


def test_healthz_is_200_at_head_with_release_and_revisions(migrated):
    resp = served(migrated.database_url, "20261123-1").get("/healthz")
    assert resp.status_code == 200
    assert resp.json == {"release": "20261123-1", "expected_revision": HEAD, "revision": HEAD, "status": "ok"}


def test_healthz_is_503_when_the_database_is_behind(project):
    assert project.inv("upgrade", "--rev", "c7d9e1f3a562").returncode == 0
    resp = served(project.database_url).get("/healthz")
    assert resp.status_code == 503
    assert resp.json["revision"] == "c7d9e1f3a562" and resp.json["expected_revision"] == HEAD
    assert "code expects e2b8f4a6c913" in resp.json["reason"]


def test_healthz_is_503_for_a_database_never_migrated(project):
    resp = served(project.database_url).get("/healthz")
    assert resp.status_code == 503 and resp.json["revision"] is None
    assert "database at no revision" in resp.json["reason"]


@pytest.mark.parametrize("path", ["/healthz", "/livez"])
def test_both_answers_are_503_when_the_database_is_unreachable(path):
    resp = served(f"postgresql://nobody@127.0.0.1:{free_port()}/none").get(path)
    assert resp.status_code == 503
    assert resp.json["reason"].startswith("database unreachable")


def test_livez_stays_200_while_the_database_is_ahead_of_the_code(migrated):
    """What a load balancer asks: an old release must stay in rotation after the migration ran."""
    engine = create_engine(migrated.database_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
    engine.dispose()
    client = served(migrated.database_url, "old")
    assert client.get("/healthz").status_code == 503
    resp = client.get("/livez")
    assert resp.status_code == 200 and resp.json == {"release": "old", "status": "ok"}


def test_the_paths_are_configurable_and_every_other_request_reaches_the_app(migrated):
    client = served(migrated.database_url, health="/-/deploy/health", live="/-/deploy/live")
    assert client.get("/-/deploy/health").json["revision"] == HEAD
    assert client.get("/-/deploy/live").status_code == 200
    assert client.get("/healthz").status_code == 404  # the app's own path space, untouched
    assert client.get("/boards").status_code == 200 and client.get("/boards").json == []
    assert client.post("/-/deploy/health").status_code == 404  # only GET and HEAD are answered there


def test_an_app_without_flask_migrate_is_refused_when_it_loads(tmp_path, monkeypatch):
    (tmp_path / "bare.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="no Flask-Migrate"):
        serve("bare:app")


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_gunicorn_serves_the_app_with_the_config_and_runtime_the_deploy_writes_into_a_release(migrated):
    """The release as the deploy lays it out: the project's files, RELEASE, and .deploy/."""
    for name, text_ in release_files("app:create_app", "/healthz", "/livez", "app").items():
        (migrated.root / name).parent.mkdir(parents=True, exist_ok=True)
        (migrated.root / name).write_text(text_)
    (migrated.root / "RELEASE").write_text("gunicorn-test\n")
    # A project folder of the same name in the release (this repository has one) never shadows .deploy/'s.
    (migrated.root / "deploy_runtime").mkdir()
    (migrated.root / "deploy_runtime" / "__init__.py").write_text("raise ImportError('the project copy was used')\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RELEASE", "PYTHONPATH")}
    env.update(DATABASE_URL=migrated.database_url, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1",
               APP_ROOT=str(migrated.root), PYTHONPATH=str(migrated.root / ".deploy"))  # as the unit sets it
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--config", ".deploy/gunicorn.conf.py"],
        cwd=migrated.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
        assert get(f"http://127.0.0.1:{port}/boards")[0] == 200
    finally:
        server.terminate()
        out = server.communicate(timeout=30)[0].decode()
    assert "Worker ready" in out  # the toolkit's reload hooks are installed


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"<h1>Not Found</h1>")

    def log_message(self, *args):
        pass


class LocalRemote:
    """The one faked seam: the host's command runs here instead of over SSH."""
    name = "here"

    def run(self, argv, check=True, **kw):
        proc = subprocess.run(argv, capture_output=True, text=True)
        return SimpleNamespace(stdout=proc.stdout, stderr=proc.stderr, exited=proc.returncode)


def test_a_health_path_that_answers_404_fails_the_deploy_at_once_naming_it():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/healthz"
    started = time.monotonic()
    try:
        with pytest.raises(Unhealthy, match="answers 404: nothing serves the health path") as raised:
            wait_healthy(LocalRemote(), url, "r1", "abc", timeout=60)
    finally:
        server.shutdown()
    assert time.monotonic() - started < 10  # not the 60 s timeout
    assert url in str(raised.value) and "health_path" in str(raised.value)


def test_maintenance_answers_every_request_with_the_page_and_retry_after_until_its_flag_goes(migrated, tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setenv("DEPLOY_SHARED", str(tmp_path))
    client = served(migrated.database_url)
    assert client.get("/boards").status_code == 200
    (tmp_path / "maintenance.html").write_text("<h1>Back at noon</h1>")
    (tmp_path / "maintenance.json").write_text(json.dumps({"retry_after": 120}))
    down = client.post("/boards", json={"name": "x"})
    assert down.status_code == 503 and down.headers["Retry-After"] == "120"
    assert down.get_data(as_text=True) == "<h1>Back at noon</h1>"
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json["maintenance"] is True, "deploys go on during maintenance"
    assert client.get("/livez").json["maintenance"] is True
    (tmp_path / "maintenance.json").unlink()
    assert client.get("/boards").status_code == 200 and "maintenance" not in client.get("/healthz").json
