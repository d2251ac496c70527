"""The server's env file, read again by the gunicorn master at each graceful reload, so that
`fab env.set` takes effect without a restart. systemd reads the file only when it starts the
service; a HUP alone would keep the old values in every new worker.

The master keeps the keys it last loaded (DEPLOY_ENV_KEYS): a key removed from the file is
removed from the environment too, except the ones the unit itself sets (RESERVED), which
`fab env` does not remove. DEPLOY_ENV_DIGEST names the file it loaded without revealing it
(an HMAC under a random key kept beside the file, 0600): the health answer reports it, and
`fab env` waits for the new one.

The file is read with the toolkit's one parser (systemd's EnvironmentFile= rules): the
deploy writes a copy of deploy/servertool/envfile.py beside this module.
"""
from __future__ import annotations

import hashlib
import hmac
import os

try:
    from . import envfile  # the release's copy, written by the deploy
except ImportError:  # the toolkit's own checkout
    from deploy.servertool import envfile

KEYS, DIGEST = "DEPLOY_ENV_KEYS", "DEPLOY_ENV_DIGEST"
# Set by the app's unit or by systemd: never removed by a reload, and never unset by fab env.
RESERVED = frozenset({"APP_ROOT", "BIND", "PWD", "PYTHONPATH", "DEPLOY_ENV_FILE", "DEPLOY_SHARED", "PATH",
                      "HOME", "USER", "LOGNAME", "SHELL", "LANG", "INVOCATION_ID", "JOURNAL_STREAM", KEYS, DIGEST})


def shared_folder() -> str | None:
    """The stage's shared folder (the env file, the maintenance flag): DEPLOY_SHARED, else beside
    `current` (the unit's APP_ROOT)."""
    if os.environ.get("DEPLOY_SHARED"):
        return os.environ["DEPLOY_SHARED"]
    root = os.environ.get("APP_ROOT")
    return os.path.join(os.path.dirname(root.rstrip("/")), "shared") if root else None


def env_file() -> str | None:
    """The unit names it (DEPLOY_ENV_FILE); units installed before that have it in the shared folder."""
    if os.environ.get("DEPLOY_ENV_FILE"):
        return os.environ["DEPLOY_ENV_FILE"]
    shared = shared_folder()
    return os.path.join(shared, "env") if shared else None


def digest(data: bytes, key: bytes) -> str:
    """What identifies an env file's content, and reveals nothing of it without the key."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:16]


def refresh_environment() -> None:
    """This process's environment set from the env file as it is now (a missing or unreadable
    file changes nothing: the values systemd gave stay)."""
    path = env_file()
    if not path:
        return
    try:
        with open(path, "rb") as f:
            data = f.read()
        values = envfile.parse(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError):
        return
    for key in set(filter(None, os.environ.get(KEYS, "").split(","))) - values.keys() - RESERVED:
        os.environ.pop(key, None)
    os.environ.update(values)
    os.environ[KEYS] = ",".join(sorted(values))
    try:
        with open(path + ".key", "rb") as f:
            os.environ[DIGEST] = digest(data, f.read().strip())
    except OSError:  # no fab env change yet: nothing waits for a digest
        os.environ.pop(DIGEST, None)
