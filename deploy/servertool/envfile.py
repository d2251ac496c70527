"""The server's env file read as systemd's `EnvironmentFile=` reads it, by everything the
toolkit runs on a server (migrations, the boot check, the backup tool): one reading, so a
value reaches the app, its migrations and its backups alike. The file is data: it is never
run by a shell, so `$`, `;`, `&`, quotes or `#` in a value are only characters.

The rules (systemd.exec(5), EnvironmentFile=): lines `KEY=VALUE`; lines starting with `#`
or `;` are comments; whitespace around keys and values is dropped; an unquoted value keeps
its inner whitespace and takes `\\` as an escape (a backslash-newline continues the line);
a `'...'` value is verbatim and may span lines; a `"..."` value unescapes `\\"`, `\\\\`,
`\\``, `\\$` and drops backslash-newline. Keys must be shell names; others are ignored.

Standard library only. Run as a program it is the launcher:
`python3 envfile.py ENV_FILE DIR COMMAND...` runs COMMAND in DIR with the file's variables.
"""
from __future__ import annotations

import os
import re
import sys

COMMENTS, WHITESPACE, NEWLINE, SHELL_NEED_ESCAPE = "#;", " \t\n\r", "\n\r", '"\\`$'
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse(text: str) -> dict[str, str]:
    """The variables `text` assigns, as systemd would set them (later assignments win)."""
    found: dict[str, str] = {}
    state, key, value = "pre_key", [], []
    key_ws = value_ws = None  # where trailing whitespace began in the key / the unquoted value

    def push() -> None:
        name = "".join(key[:key_ws] if key_ws is not None else key)
        text_value = "".join(value[:value_ws] if (state == "value" and value_ws is not None) else value)
        if NAME.fullmatch(name):
            found[name] = text_value

    for c in text:
        if state == "pre_key":
            if c in COMMENTS:
                state = "comment"
            elif c not in WHITESPACE:
                state, key, key_ws = "key", [c], None
        elif state == "key":
            if c in NEWLINE:
                state = "pre_key"
            elif c == "=":
                state, value, value_ws = "pre_value", [], None
            else:
                if c not in WHITESPACE:
                    key_ws = None
                elif key_ws is None:
                    key_ws = len(key)
                key.append(c)
        elif state in ("pre_value", "value") and c in NEWLINE:
            push()
            state = "pre_key"
        elif state == "pre_value":
            if c == "'":
                state = "single"
            elif c == '"':
                state = "double"
            elif c == "\\":
                state = "value_escape"
            elif c not in WHITESPACE:
                state = "value"
                value.append(c)
        elif state == "value":
            if c == "\\":
                state, value_ws = "value_escape", None
            else:
                if c not in WHITESPACE:
                    value_ws = None
                elif value_ws is None:
                    value_ws = len(value)
                value.append(c)
        elif state == "value_escape":
            state = "value"
            if c not in NEWLINE:
                value.append(c)
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value.append(c)
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value.append(c)
        elif state == "double_escape":
            state = "double"
            if c in SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value += ["\\", c]
        elif state == "comment":
            if c == "\\":
                state = "comment_escape"
            elif c in NEWLINE:
                state = "pre_key"
        elif state == "comment_escape":
            state = "pre_key" if c in NEWLINE else "comment"
    if state in ("pre_value", "value", "value_escape", "single", "double", "double_escape"):
        if state == "value_escape":
            state = "value_escape_end"  # systemd trims trailing whitespace only in plain `value`
        push()
    return found


def load(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return parse(f.read())


def exec_with(path: str, folder: str, argv: list[str]) -> None:
    """Replace this process with `argv`, in `folder`, its environment plus the file's variables."""
    env = dict(os.environ)
    env.update(load(path))
    os.chdir(folder)
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: envfile.py ENV_FILE DIR COMMAND...")
    try:
        exec_with(sys.argv[1], sys.argv[2], sys.argv[3:])
    except OSError as exc:
        sys.exit(f"envfile.py: {exc.filename or sys.argv[3]}: {exc.strerror}")
    except UnicodeDecodeError:
        sys.exit(f"envfile.py: {sys.argv[1]} is not UTF-8 text")
