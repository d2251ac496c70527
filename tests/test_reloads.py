"""The reload hooks, driven in gunicorn's own order (Arbiter.reload): the master forks every
new worker, then at once tells the old ones to stop, before any new worker has run a line."""
import os
import tempfile
import time
from types import SimpleNamespace

import pytest

from deploy_runtime import reloads


@pytest.fixture(autouse=True)
def marks_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def worker(age: int, workers: int = 2) -> SimpleNamespace:
    read, write = os.pipe()
    cfg = SimpleNamespace(graceful_timeout=30, workers=workers)
    return SimpleNamespace(ppid=1000, age=age, pid=2000 + age, alive=True, PIPE=(read, write), cfg=cfg,
                           log=SimpleNamespace(info=lambda *args: None))


def boot(server, age: int) -> SimpleNamespace:
    """What one spawn_worker does: pre_fork in the master; the child's hooks come later."""
    new = worker(age)
    reloads.pre_fork(server, new)
    return new


def load(new) -> None:
    """What the child's post_worker_init marks once the app is imported."""
    reloads._mark(new, "ready")


def stays_alive(old, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not old.alive:
            return False
        time.sleep(0.02)
    return True


def test_an_old_worker_serves_on_until_every_new_worker_forked_in_the_reload_has_loaded_the_app():
    server = SimpleNamespace()
    old = [boot(server, age) for age in (1, 2)]
    for w in old:
        load(w)
    reloads.on_reload(server)
    new = [boot(server, age) for age in (3, 4)]
    reloads._stop_once_replaced(old[0])  # the master's SIGTERM, before either child has run
    assert stays_alive(old[0], 0.3)
    load(new[0])
    assert stays_alive(old[0], 0.3), "stopped with one new worker of two still loading"
    load(new[1])
    assert not stays_alive(old[0], 1.0)
    assert os.read(old[0].PIPE[0], 1) == b"1"


def test_a_stop_with_no_newer_worker_forked_is_not_delayed():
    server = SimpleNamespace()
    w = boot(server, 1)
    load(w)
    reloads._stop_once_replaced(w)
    assert w.alive is False


def test_a_worker_that_exits_takes_its_marks_with_it():
    server = SimpleNamespace()
    w = boot(server, 1)
    load(w)
    reloads.worker_exit(server, w)
    assert os.listdir(reloads._marks(w)) == []
