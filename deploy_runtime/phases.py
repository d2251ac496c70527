"""Each revision's phase, as its file says, and the schemas a release can serve on.

A revision runs `pre` (the default: before the new code serves) or `post` (after every app
host serves the new code: a contract, which drops or narrows what the old code still used).
A revision file says which in a module-level line beside `revision = ...`:

    phase = "post"

So a release serves on its head, and on each revision below it from which only post
revisions lead to the head: until they have run, its code must not need them.
"""
from __future__ import annotations

PHASES = ("pre", "post")


def phase_of(script) -> str:
    """The phase of one Alembic Script (its module's `phase`, "pre" when it has none)."""
    phase = getattr(script.module, "phase", "pre")
    if phase not in PHASES:
        raise ValueError(f"{script.path}: phase = {phase!r}; a revision's phase is \"pre\" or \"post\"")
    return phase


def serving_revisions(scripts, head: str) -> tuple[str, ...]:
    """`head`, and each revision below it reached through post revisions only (an Alembic
    ScriptDirectory): the database revisions that code shipped with `head` serves on."""
    found, script = [head], scripts.get_revision(head)
    while phase_of(script) == "post" and len(script._normalized_down_revisions) == 1:
        script = scripts.get_revision(script._normalized_down_revisions[0])
        found.append(script.revision)
    return tuple(found)


def between(import_path: str, low: str, high: str) -> list[dict]:
    """The revisions above `low` up to `high` ("base" for none), highest first, with their
    phases, from the migrations of the app `import_path` names (as `flask --app`)."""
    from alembic.script import ScriptDirectory

    from .wsgi import load_app

    migrate = load_app(import_path).extensions["migrate"]
    scripts = ScriptDirectory(migrate.directory)
    return [{"id": s.revision, "phase": phase_of(s)} for s in scripts.iterate_revisions(high, low)]


def main(argv: list[str]) -> int:
    """`python -m deploy_runtime.phases APP LOW HIGH`: between()'s list as JSON."""
    import json
    import sys

    if len(argv) != 4:
        print("usage: python -m deploy_runtime.phases APP LOW HIGH", file=sys.stderr)
        return 2
    print(json.dumps(between(*argv[1:])))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
