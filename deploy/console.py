"""What the toolkit prints: plain lines, headings and loud warnings.

Everything goes through one Output (`output`), which writes to standard output by default;
a library caller captures it with `with capture() as text: ...` (as Alembic's
`Config(stdout=...)` does), without touching sys.stdout.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Iterator, TextIO


class Output:
    """Where the toolkit's lines go, and whether they are coloured (only on a terminal)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    @property
    def target(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    @property
    def color(self) -> bool:
        return self.target.isatty() and "NO_COLOR" not in os.environ

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def write(self, text: str, end: str = "\n") -> None:
        self.target.write(text + end)
        self.target.flush()


output = Output()


@contextlib.contextmanager
def capture() -> Iterator[io.StringIO]:
    """Everything the toolkit says inside the block, into a StringIO instead of standard output."""
    global output
    previous, text = output, io.StringIO()
    output = Output(text)
    try:
        yield text
    finally:
        output = previous


def say(text: str = "") -> None:
    """One line (or block) of ordinary output."""
    output.write(text)


def heading(text: str) -> None:
    say(output.paint(f"== {text}", "1"))


def ok(text: str) -> None:
    say(output.paint("ok: ", "32") + text)


def warn(text: str) -> None:
    say(output.paint("warning: ", "33;1") + text)


def banner(lines: list[str]) -> None:
    """A warning nobody can scroll past without seeing."""
    width = max(len(line) for line in lines) + 4
    bar = output.paint("!" * width, "31;1")
    say(bar)
    for line in lines:
        say(output.paint("! ", "31;1") + line)
    say(bar)


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())
