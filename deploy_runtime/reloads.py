"""Gunicorn hooks that make a graceful reload (HUP) overlap instead of stall.

On a reload gunicorn forks the new workers and at once tells the old ones to stop, so
requests would wait in the socket's backlog while the new workers import the app. With
these hooks an old worker told to stop keeps serving until the workers forked after it have
loaded the app (or half of graceful_timeout has passed). A stop with no newer worker forked
(a shutdown, a restart) is not delayed.

The toolkit's gunicorn config imports them; a project with its own config adds:

    from deploy_runtime.reloads import on_reload, pre_fork, post_worker_init, worker_exit

Standard library only (and the toolkit's env file parser): the master imports this module,
and importing the app there would make every worker inherit the old code.
"""
import os
import signal
import tempfile
import threading
import time

from .environment import refresh_environment

__all__ = ["on_reload", "pre_fork", "post_worker_init", "worker_exit"]

refresh_environment()  # once, when the master loads its config: which keys the env file gave


def _marks(worker) -> str:
    return os.path.join(tempfile.gettempdir(), f"gunicorn-{worker.ppid}-workers")


def _mark(worker, state: str) -> None:
    os.makedirs(_marks(worker), exist_ok=True)
    open(os.path.join(_marks(worker), f"{state}-{worker.generation}-{worker.age}"), "w").close()


def _newer(worker, state: str) -> int:
    """How many workers of later reloads are in `state` (forked, or ready: the app loaded)."""
    try:
        names = os.listdir(_marks(worker))
    except OSError:
        return 0
    return sum(1 for n in names if n.startswith(state + "-") and int(n.split("-")[1]) > worker.generation)


def _stop_once_replaced(worker) -> None:
    def wait_then_stop() -> None:
        deadline = time.monotonic() + worker.cfg.graceful_timeout / 2
        while time.monotonic() < deadline and _newer(worker, "ready") < min(_newer(worker, "forked"), worker.cfg.workers):
            time.sleep(0.02)
        worker.log.info("Worker replaced, stopping (pid: %s)", worker.pid)
        worker.alive = False
        os.write(worker.PIPE[1], b"1")  # wakes its accept loop

    if _newer(worker, "forked"):
        threading.Thread(target=wait_then_stop, daemon=True).start()
    else:
        worker.alive = False


def on_reload(server) -> None:
    server.reload_generation = getattr(server, "reload_generation", 0) + 1
    refresh_environment()  # before the new workers fork: they start with the env file as it is now


def pre_fork(server, worker) -> None:
    # Marked here, in the master: it tells the old workers to stop as soon as it has forked
    # the new ones, before any of them has run a line of its own.
    worker.generation = getattr(server, "reload_generation", 0)
    _mark(worker, "forked")


def post_fork(server, worker) -> None:
    """Nothing left to do here; kept so that a config which imports it still loads."""


def post_worker_init(worker) -> None:
    _mark(worker, "ready")
    worker.log.info("Worker ready (pid: %s)", worker.pid)
    signal.signal(signal.SIGTERM, lambda number, frame: _stop_once_replaced(worker))
    signal.siginterrupt(signal.SIGTERM, False)


def worker_exit(server, worker) -> None:
    for state in ("forked", "ready"):
        try:
            os.unlink(os.path.join(_marks(worker), f"{state}-{worker.generation}-{worker.age}"))
        except OSError:
            pass
