"""Ctrl-C held back while a piece of work must not be cut in half: an undo, the record
that a deploy succeeded, the bookkeeping after it. The interrupt is remembered and
raised (as KeyboardInterrupt) when the block ends, unless the block says it consumed it.

Only the main thread receives signals; elsewhere the block runs unprotected, which
is harmless because KeyboardInterrupt is only raised in the main thread.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class Deferred:
    """What a deferring block saw: how many Ctrl-Cs arrived while it ran."""

    def __init__(self) -> None:
        self.count = 0

    @property
    def interrupted(self) -> bool:
        return self.count > 0


_outer: list[Deferred] = []


@contextmanager
def deferred(notice: Callable[[], None] = lambda: None, *, reraise: bool = True) -> Iterator[Deferred]:
    """Run the block with SIGINT remembered instead of raised; afterwards raise it
    (`reraise`) or leave it to the caller, who reads `interrupted`.

    `notice` is called on the first Ctrl-C (to say why nothing stops). A block inside
    another one leaves its interrupts to the outer block.
    """
    if _outer or threading.current_thread() is not threading.main_thread():
        yield _outer[-1] if _outer else Deferred()
        return
    seen = Deferred()

    def remember(signum, frame) -> None:
        seen.count += 1
        if seen.count == 1:
            notice()

    previous = signal.signal(signal.SIGINT, remember)
    _outer.append(seen)
    try:
        yield seen
    finally:
        _outer.pop()
        signal.signal(signal.SIGINT, previous)
    if seen.interrupted and reraise:
        raise KeyboardInterrupt
