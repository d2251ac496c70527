"""What the toolkit prints: plain lines, headings and loud warnings."""
from __future__ import annotations

import os
import sys

_COLOR = sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _paint(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if _COLOR else text


def say(text: str = "") -> None:
    """One line (or block) of ordinary output."""
    print(text, flush=True)


def heading(text: str) -> None:
    say(_paint(f"== {text}", "1"))


def ok(text: str) -> None:
    say(_paint("ok: ", "32") + text)


def warn(text: str) -> None:
    say(_paint("warning: ", "33;1") + text)


def banner(lines: list[str]) -> None:
    """A warning nobody can scroll past without seeing."""
    width = max(len(line) for line in lines) + 4
    bar = _paint("!" * width, "31;1")
    say(bar)
    for line in lines:
        say(_paint("! ", "31;1") + line)
    say(bar)


def indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())
