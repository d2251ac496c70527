"""Two questions, for two askers.

GET /healthz, for the deploy: which release is running and whether its schema is
in place. 200 only when the database answers and is at the head revision this
code expects; 503 with the reason otherwise. The deploy compares `release` and
`revision` with what it deployed, so a 200 from an old process is not taken for
success.

GET /livez, for a load balancer: does this process serve, and does its database
answer? It never looks at the revision: between the migration and the switch the
database is ahead of the old release, which must stay in rotation.
"""
from alembic.script import ScriptDirectory
from flask import Blueprint, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError

from .extensions import db

health = Blueprint("health", __name__)


def expected_heads() -> tuple[str, ...]:
    """The head revision(s) of the migrations shipped with this code, read once."""
    heads = current_app.extensions.get("expected_heads")
    if heads is None:
        script = ScriptDirectory(current_app.config["MIGRATIONS_DIR"])
        heads = tuple(sorted(script.get_heads()))
        current_app.extensions["expected_heads"] = heads
    return heads


def database_revisions() -> tuple[str, ...]:
    """The revision(s) recorded in alembic_version; empty for a new database."""
    try:
        rows = db.session.execute(text("SELECT version_num FROM alembic_version"))
        return tuple(sorted(r[0] for r in rows))
    except ProgrammingError:  # no alembic_version table yet
        db.session.rollback()
        return ()


def _unreachable(body: dict, exc: DBAPIError):
    """503 with the database's own first line of error; the session is left clean."""
    db.session.rollback()
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    body.update(status="unavailable", reason=f"database unreachable: {reason}")
    return jsonify(body), 503


@health.get("/livez")
def livez():
    body = {"release": current_app.config["RELEASE"], "status": "ok"}
    try:
        db.session.execute(text("SELECT 1"))
    except DBAPIError as exc:
        return _unreachable(body, exc)
    finally:
        db.session.remove()
    return jsonify(body), 200


@health.get("/healthz")
def healthz():
    heads = expected_heads()
    body = {
        "release": current_app.config["RELEASE"],
        "expected_revision": heads[0] if len(heads) == 1 else list(heads),
        "revision": None,
        "status": "ok",
    }
    try:
        current = database_revisions()
    except DBAPIError as exc:
        return _unreachable(body, exc)
    finally:
        db.session.remove()
    body["revision"] = current[0] if len(current) == 1 else (list(current) or None)
    if len(heads) != 1:
        body.update(status="unavailable", reason=f"code has {len(heads)} migration heads")
    elif current != heads:
        body.update(
            status="unavailable",
            reason=f"database at {body['revision'] or 'no revision'}, code expects {heads[0]}",
        )
    return jsonify(body), (200 if body["status"] == "ok" else 503)
