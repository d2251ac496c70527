"""A small Flask app (boards and their cards) that the toolkit deploys.

Configured from the environment: DATABASE_URL (PostgreSQL through psycopg2).
It has no code for the deploy: the toolkit answers /healthz and /livez in front
of it and makes its reloads stall-free (deploy_runtime).
"""
import os
from pathlib import Path

from flask import Flask

from .extensions import db, migrate

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def psycopg2_url(url: str) -> str:
    """Pin the driver: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def create_app(config: dict | None = None) -> Flask:
    """Build the app; `config` overrides what the environment says."""
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=psycopg2_url(os.environ.get("DATABASE_URL", "")),
        MIGRATIONS_DIR=os.environ.get("MIGRATIONS_DIR", str(MIGRATIONS_DIR)),
        SQLALCHEMY_ENGINE_OPTIONS={
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": 3},
        },
        JSON_SORT_KEYS=False,
    )
    app.config.update(config or {})
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        raise RuntimeError(
            "DATABASE_URL is not set: point it at the PostgreSQL database "
            "(for local work, `inv db.up` prints one)"
        )

    db.init_app(app)
    # Batch mode exists for SQLite; on PostgreSQL plain op.* calls say what runs.
    migrate.init_app(app, db, directory=app.config["MIGRATIONS_DIR"], render_as_batch=False)

    from . import models  # noqa: F401  (autogenerate must see every model)
    from .api import api

    app.register_blueprint(api)
    return app
