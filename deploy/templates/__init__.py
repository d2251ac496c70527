"""Files the toolkit ships to servers (systemd units, sudoers), filled in with str.format."""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def render(name: str, **values: str) -> str:
    """The template `name` with its {placeholders} filled in."""
    return (FOLDER / name).read_text().format(**values)
