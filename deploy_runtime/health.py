"""Two questions, for two askers, answered in front of the app (WSGI middleware).

GET health_path (default /healthz), for the deploy: which release is running and whether
its schema is in place. 200 only when the database answers and is at the head revision this
code ships, or below it by post revisions only (phases.py: they run after the switch, and
`post_pending` lists them); 503 with the reason otherwise. The deploy compares `release` and `revision`
with what it deployed, so a 200 from an old process is not taken for success.

GET live_path (default /livez), for a load balancer: does this process serve, and does its
database answer? It never looks at the revision: between the migration and the switch the
database is ahead of the old release, which must stay in rotation.

The database is the app's own (Flask-Migrate's engine), the migrations its own folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .maintenance import Maintenance

RELEASE_FILE = Path(__file__).resolve().parents[2] / "RELEASE"  # <release>/.deploy/deploy_runtime/


def release() -> str:
    """RELEASE from the environment, else the file the deploy writes into the release (beside this
    runtime, else in the folder gunicorn serves from), else "dev"."""
    if os.environ.get("RELEASE"):
        return os.environ["RELEASE"]
    for folder in (lambda: RELEASE_FILE.parent, Path.cwd):
        try:
            return (folder() / "RELEASE").read_text().strip() or "dev"
        except OSError:  # no such file, or a folder that is gone
            continue
    return "dev"


class Endpoints:
    """WSGI middleware: answers the two paths itself and passes every other request to `app`."""

    def __init__(self, app, health_path: str = "/healthz", live_path: str = "/livez") -> None:
        migrate = app.extensions.get("migrate")
        if migrate is None:
            raise RuntimeError("the app has no Flask-Migrate (Migrate(app, db)): the deploy needs its "
                               "migrations and database to answer health checks")
        self.app, self.migrate = app, migrate
        self.paths = {health_path: self.healthz, live_path: self.livez}
        self.maintenance = Maintenance()
        self.release = release()
        self._engine = None
        self._heads: tuple[str, ...] | None = None
        self._serving: tuple[str, ...] = ()

    def __call__(self, environ, start_response):
        answer = self.paths.get(environ.get("PATH_INFO", ""))
        if answer is None or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            down = self.maintenance.state()
            if down is not None:
                return self.maintenance.answer(down, environ, start_response)
            return self.app(environ, start_response)
        status, body = answer()
        if self.maintenance.state() is not None:
            body["maintenance"] = True
        data = json.dumps(body).encode()
        start_response("200 OK" if status == 200 else "503 Service Unavailable",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                        ("Cache-Control", "no-store")])
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [data]

    @property
    def engine(self):
        if self._engine is None:
            with self.app.app_context():
                self._engine = self.migrate.db.engine
        return self._engine

    def expected_heads(self) -> tuple[str, ...]:
        """The head revision(s) of the migrations shipped with this code, read once, and with
        one head, the revisions it serves on (head first)."""
        if self._heads is None:
            from alembic.script import ScriptDirectory

            from .phases import serving_revisions

            scripts = ScriptDirectory(self.migrate.directory)
            self._heads = tuple(sorted(scripts.get_heads()))
            if len(self._heads) == 1:
                self._serving = serving_revisions(scripts, self._heads[0])
        return self._heads

    def database_revisions(self) -> tuple[str, ...]:
        """The revision(s) in alembic_version; empty for a database never migrated."""
        from sqlalchemy import text
        from sqlalchemy.exc import ProgrammingError

        with self.engine.connect() as connection:
            try:
                rows = connection.execute(text("SELECT version_num FROM alembic_version"))
            except ProgrammingError:  # no alembic_version table yet
                return ()
            return tuple(sorted(r[0] for r in rows))

    def livez(self) -> tuple[int, dict]:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        body = {"release": self.release, "status": "ok"}
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except DBAPIError as exc:
            return _unreachable(body, exc)
        return 200, body

    def healthz(self) -> tuple[int, dict]:
        from sqlalchemy.exc import DBAPIError

        heads = self.expected_heads()
        body = {"release": self.release, "expected_revision": heads[0] if len(heads) == 1 else list(heads),
                "revision": None, "status": "ok"}
        if os.environ.get("DEPLOY_ENV_KEYS") is not None:  # its master reads the env file at reloads
            body["env_reload"] = True
        if os.environ.get("DEPLOY_ENV_DIGEST"):  # which file it read (environment.py)
            body["env_digest"] = os.environ["DEPLOY_ENV_DIGEST"]
        try:
            current = self.database_revisions()
        except DBAPIError as exc:
            return _unreachable(body, exc)
        body["revision"] = current[0] if len(current) == 1 else (list(current) or None)
        if len(heads) != 1:
            body.update(status="unavailable", reason=f"code has {len(heads)} migration heads")
        elif len(current) != 1 or current[0] not in self._serving:
            body.update(status="unavailable",
                        reason=f"database at {body['revision'] or 'no revision'}, code expects {heads[0]}")
        elif current != heads:
            body["post_pending"] = list(reversed(self._serving[:self._serving.index(current[0])]))
        return (200 if body["status"] == "ok" else 503), body


def _unreachable(body: dict, exc) -> tuple[int, dict]:
    """503 with the database's own first line of error."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    body.update(status="unavailable", reason=f"database unreachable: {reason}")
    return 503, body
