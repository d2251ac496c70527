"""An env file's text changed key by key, so that systemd's EnvironmentFile= (and the
toolkit's one parser, servertool/envfile.py) reads back exactly the values asked for.

A value is written double-quoted, with `"`, `\\`, `` ` `` and `$` escaped: any text round-trips,
newlines and leading or trailing spaces included. The operator's comments and layout are kept
when every assignment is on a line of its own; otherwise the file is written out anew.
"""
from __future__ import annotations

import re

from .errors import ConfigError
from .servertool import envfile

ESCAPED = '"\\`$'
REWRITTEN = "# written by fab env: a value spanned lines, so the file was written out anew\n"


def check_key(key: str) -> str:
    if not envfile.NAME.fullmatch(key):
        raise ConfigError(f"{key!r} is not an environment variable name (letters, digits and _, not first a digit)")
    return key


def assignment(key: str, value: str) -> str:
    """One line (or more, for a value with newlines) that sets `key` to exactly `value`."""
    if "\0" in value:
        raise ConfigError(f"the value of {key} has a NUL character, which no environment can hold")
    return f'{check_key(key)}="' + "".join("\\" + c if c in ESCAPED else c for c in value) + '"\n'


def edited(text: str, sets: dict[str, str], unsets: set[str]) -> str:
    """`text` with `sets` assigned and `unsets` removed; every other assignment read as before
    (and `text` itself when that changes nothing)."""
    current = envfile.parse(text)
    expected = {k: v for k, v in current.items() if k not in unsets} | sets
    if expected == current and list(expected) == list(current):
        return text
    changed = sets.keys() | unsets
    lines, placed = [], set()
    for line in filter(None, re.split(r"(?<=\n)", text)):  # "\n" ends a line (a "\r" stays in its line)
        keys = list(envfile.parse(line))
        if len(keys) == 1 and keys[0] in changed:
            if keys[0] in sets and keys[0] not in placed:
                lines.append(assignment(keys[0], sets[keys[0]]))
                placed.add(keys[0])
            continue
        lines.append(line)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines += [assignment(k, v) for k, v in sets.items() if k not in placed]
    result = "".join(lines)
    if envfile.parse(result) == expected:
        return result
    return REWRITTEN + "".join(assignment(k, v) for k, v in expected.items())  # a value spanned lines


def scrub(message: str, values: set[str]) -> str:
    """`message` with each of `values` (4 characters or more: shorter ones are not secrets, and
    would blank out common words) replaced by ***."""
    for value in sorted((v for v in values if len(v) >= 4), key=len, reverse=True):
        message = message.replace(value, "***")
    return message


def changes(before: str, after: str) -> dict[str, list[str]]:
    """Which keys `after` adds, changes and removes, compared with `before` (names only)."""
    old, new = envfile.parse(before), envfile.parse(after)
    return {"added": sorted(new.keys() - old.keys()), "changed": sorted(k for k in old.keys() & new.keys()
                                                                          if old[k] != new[k]),
            "removed": sorted(old.keys() - new.keys())}


def parse_pairs(text: str) -> dict[str, str]:
    """Assignments given on standard input (`fab env.set -`), in env file syntax."""
    found = envfile.parse(text)
    if not found:
        raise ConfigError("no KEY=VALUE assignment on standard input", hint="one per line, as in the env file")
    return found
