"""Gunicorn settings for serving the app; each can be set from the environment.

`chdir` points at the `current` symlink path, not the folder it resolves to,
so that a graceful reload (HUP) loads the newly switched release.
"""
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
keepalive = 2
preload_app = False  # workers import the app themselves, so HUP picks up new code
chdir = os.environ.get("APP_ROOT", os.getcwd())
wsgi_app = "app:create_app()"
accesslog = os.environ.get("ACCESS_LOG", "-")
errorlog = "-"
proc_name = os.environ.get("PROC_NAME", "app")
