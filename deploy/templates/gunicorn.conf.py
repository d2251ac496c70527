"""Gunicorn settings, written into this release by flask-pg-deploy (.deploy/gunicorn.conf.py).

The app is served behind the deploy's health and liveness answers (deploy_runtime.wsgi),
with the hooks that keep a reload from stalling a request (deploy_runtime.reloads). Each
setting below can be set from the environment (the server's env file).

`chdir` is the `current` symlink path, not the folder it resolves to, so that a graceful
reload (HUP) loads the newly switched release.
"""
import os
import sys

# This folder first, through `current` (a reload finds the new release's copy), and ahead of the
# release's own folder: the package is imported here, once, and its workers use this copy.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [_HERE] + [entry for entry in sys.path if entry != _HERE]

from deploy_runtime.environment import refresh_environment  # noqa: E402
from deploy_runtime.reloads import on_reload, pre_fork, post_worker_init, worker_exit  # noqa: E402,F401

refresh_environment()  # read again at each reload: the settings below see `fab env.set`'s values

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
keepalive = 2
preload_app = False  # workers import the app themselves, so a reload picks up new code
chdir = os.environ.get("APP_ROOT", os.path.dirname(_HERE))
wsgi_app = {wsgi_app!r}
accesslog = os.environ.get("ACCESS_LOG", "-")
errorlog = "-"
proc_name = os.environ.get("PROC_NAME", {proc_name!r})
