"""A deploy toolkit for Flask + PostgreSQL apps whose schema Alembic manages.

The toolkit never imports the app it deploys: the app is an artifact named in
`deploy.toml`, run in subprocesses (`flask db ...`) with its own environment.
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("flask-pg-deploy")
except _metadata.PackageNotFoundError:  # run from a checkout that pip never installed
    __version__ = "0.2.0"
