"""Ctrl-C held back while a piece of work must not be cut in half: an undo, the record
that an operation succeeded and everything after it, a call into paramiko (cut between
taking a lock and its `try`, it keeps the lock, and the connection hangs). The interrupt
is remembered and raised (as KeyboardInterrupt) at a point the work chooses, or once it
is done, or reported.

Only the main thread receives signals; elsewhere holding does nothing, which is harmless
because KeyboardInterrupt is only raised in the main thread.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class Held:
    """Ctrl-C remembered, not raised, from now until `release()` (which says whether one came).
    Held inside another hold, it leaves its interrupts to the outer one."""

    def __init__(self, notice: Callable[[], None] = lambda: None) -> None:
        self.count = 0
        self._previous = None
        self._active = not _outer and threading.current_thread() is threading.main_thread()
        if not self._active:
            self._shared = _outer[-1] if _outer else None
            return

        def remember(signum, frame) -> None:
            self.count += 1
            if self.count == 1:
                notice()

        self._previous = signal.signal(signal.SIGINT, remember)
        _outer.append(self)

    @property
    def interrupted(self) -> bool:
        if not self._active and self._shared is not None:
            return self._shared.interrupted
        return self.count > 0

    def check(self) -> None:
        """Raise the Ctrl-C that came, here, at a point the caller chose. A hold inside another
        leaves it to the outer one, which decided that its work is not to be cut."""
        if self._active and self.count:
            raise KeyboardInterrupt

    def release(self) -> bool:
        """Ctrl-C acts again; True if one came meanwhile."""
        if self._active:
            self._active = False
            _outer.remove(self)
            signal.signal(signal.SIGINT, self._previous)
        return self.count > 0


_outer: list[Held] = []


def hold(notice: Callable[[], None] = lambda: None) -> Held:
    return Held(notice)


@contextmanager
def deferred(notice: Callable[[], None] = lambda: None, *, reraise: bool = True) -> Iterator[Held]:
    """Run the block with Ctrl-C held back; afterwards raise it (`reraise`) or leave it to the
    caller, who reads `interrupted`. `notice` is called on the first Ctrl-C."""
    held = hold(notice)
    try:
        yield held
    finally:
        came = held.release()
    if came and reraise:
        raise KeyboardInterrupt
