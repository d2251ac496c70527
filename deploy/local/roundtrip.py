"""Round trip of every revision, run as `python -m deploy.local.roundtrip` in the app's process.

For each revision, base first, on an empty scratch database: upgrade to it,
downgrade back, and upgrade again; the schema after the downgrade must equal
the schema before the upgrade, and the second upgrade must rebuild the first's.
Prints one JSON line per revision; exit 0 when every revision passed.

This module imports the app (through `flask_migrate`), so the toolkit runs it
in a subprocess, never in its own process.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys

from sqlalchemy import inspect


def snapshot(engine) -> dict:
    """Tables, columns, keys and indexes, enough to see what a downgrade left behind."""
    insp = inspect(engine)
    tables = {}
    for name in sorted(insp.get_table_names()):
        if name == "alembic_version":
            continue
        tables[name] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                        for c in insp.get_columns(name)],
            "pk": insp.get_pk_constraint(name).get("constrained_columns"),
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"]) for f in insp.get_foreign_keys(name)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(name)),
            "uniques": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(name)),
        }
    return tables


def describe_difference(before: dict, after: dict) -> str:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(t for t in set(before) & set(after) if before[t] != after[t])
    parts = []
    if added:
        parts.append("tables left behind: " + ", ".join(added))
    if removed:
        parts.append("tables missing: " + ", ".join(removed))
    for table in changed:
        keys = [k for k in before[table] if before[table][k] != after[table][k]]
        parts.append(f"{table}: {', '.join(keys)} differ")
    return "; ".join(parts)


def _quietly(fn, *args, **kwargs) -> None:
    """Run a Flask-Migrate command, turning its exit-on-error into an exception with its output."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            fn(*args, **kwargs)
    except SystemExit as exc:
        raise RuntimeError(f"exited with {exc.code}: {buf.getvalue().strip()[-800:]}") from None


def run(app_import: str, directory: str) -> int:
    """Round-trip every revision of `directory` for the app `app_import` names."""
    import flask_migrate
    from alembic.script import ScriptDirectory
    from flask.cli import ScriptInfo, load_dotenv

    load_dotenv()  # .env and .flaskenv, as `flask --app` reads them for the other tasks
    app = ScriptInfo(app_import_path=app_import).load_app()
    script = ScriptDirectory(directory)
    revisions = list(reversed(list(script.walk_revisions("base", "heads"))))
    failures = 0
    with app.app_context():
        engine = app.extensions["migrate"].db.engine
        for rev in revisions:
            parent = rev._normalized_down_revisions[0] if rev._normalized_down_revisions else "base"
            result = {"revision": rev.revision, "message": (rev.doc or "").strip(), "ok": True}
            step = "upgrade"
            try:
                before = snapshot(engine)
                _quietly(flask_migrate.upgrade, directory, rev.revision)
                after = snapshot(engine)
                step = "downgrade"
                _quietly(flask_migrate.downgrade, directory, parent)
                reverted = snapshot(engine)
                if reverted != before:
                    raise RuntimeError("the schema differs from before the upgrade: "
                                       + describe_difference(before, reverted))
                step = "upgrade again"
                _quietly(flask_migrate.upgrade, directory, rev.revision)
                again = snapshot(engine)
                if again != after:
                    raise RuntimeError("the schema differs from the first upgrade: "
                                       + describe_difference(after, again))
            except Exception as exc:  # report every kind of failure, then stop: later ones depend on it
                result.update(ok=False, step=step, error=str(exc).strip())
                failures += 1
            engine.dispose()
            print(json.dumps(result), flush=True)
            if failures:
                break
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", required=True)
    parser.add_argument("--directory", required=True)
    args = parser.parse_args()
    sys.exit(run(args.app, args.directory))


if __name__ == "__main__":
    main()
