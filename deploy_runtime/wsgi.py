"""The WSGI entry the toolkit's gunicorn config names: the app, loaded as `flask --app`
loads it, behind the deploy's two endpoints."""
from __future__ import annotations

from .health import Endpoints


def load_app(import_path: str):
    """The Flask app `import_path` names (`module`, `module:app`, `module:create_app()`,
    a file path): Flask's own loader, so gunicorn serves what `flask --app` runs."""
    from flask.cli import ScriptInfo

    return ScriptInfo(app_import_path=import_path, set_debug_flag=False).load_app()


def serve(import_path: str, health_path: str = "/healthz", live_path: str = "/livez") -> Endpoints:
    """The app behind the health (`health_path`) and liveness (`live_path`) answers."""
    return Endpoints(load_app(import_path), health_path, live_path)
