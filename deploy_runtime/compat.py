"""Does a release's code still work on the database as it is now?

The deploy runs this on the migrations host after the pre revisions and before any host
switches, in the serving release's folder with its own virtualenv and models, to check
that every table and column those models map is still there, with a type they can read
and write and a nullability their inserts satisfy:

    python -m deploy_runtime.compat APP      (APP as `flask --app` takes it)

It prints one JSON document, {"tables": N, "columns": N, "problems": [...]}, each problem
naming a table, a column and what is wrong; it exits 0 when it could check, 2 when not.
SQLAlchemy 1.4 and 2.x: the release checked may be old.
"""
from __future__ import annotations

import json
import sys

# Type families, most specific first (Enum is a String, Float a Numeric): within a family the
# code reads and writes the database's values; across families it may not.
_FAMILIES = ("Enum", "Boolean", "Integer", "Numeric", "String", "DateTime", "Date", "Time", "Interval",
             "LargeBinary", "JSON", "ARRAY", "Uuid")
_INTEGER_BYTES = {"SmallInteger": 2, "Integer": 4, "BigInteger": 8}


def problems_in(metadata, connection) -> tuple[list[dict], int]:
    """What breaks `metadata`'s tables (the code's models) on the database behind `connection`,
    and how many columns were compared."""
    from sqlalchemy import inspect

    inspector = inspect(connection)
    found, compared = [], 0
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name, schema=table.schema):
            found.append(_problem(table, None, "the table is gone (or renamed), and the code maps it"))
            continue
        columns = {c["name"]: c for c in inspector.get_columns(table.name, schema=table.schema)}
        for column in table.columns:
            compared += 1
            there = columns.get(column.name)
            if there is None:
                found.append(_problem(table, column.name, "the column is gone (or renamed), and the code maps it"))
                continue
            problem = _type_problem(column.type, there["type"]) or _null_problem(column, there)
            if problem:
                found.append(_problem(table, column.name, problem))
        for name, there in columns.items():
            if name not in table.columns and _required(there):
                found.append(_problem(table, name, "NOT NULL without a default, and the code does not map it: "
                                                   "its inserts fail"))
    return found, compared


def _problem(table, column: str | None, text: str) -> dict:
    return {"table": table.fullname, "column": column, "problem": text}


def _family(type_) -> str | None:
    names = {cls.__name__ for cls in type(type_).__mro__}
    if "UUID" in names:
        return "Uuid"
    return next((family for family in _FAMILIES if family in names), None)


def _stored(type_):
    """The type the database holds for `type_` (a TypeDecorator stores its `impl`)."""
    while any(cls.__name__ == "TypeDecorator" for cls in type(type_).__mro__):
        type_ = type_.impl
    return type_


def _type_problem(mapped, actual) -> str | None:
    """Why values of the code's type `mapped` do not fit the database's `actual`, if they do not."""
    mapped = _stored(mapped)
    family, there = _family(mapped), _family(actual)
    if family is None or there is None:
        return None  # a type this check does not know: not compared
    if family != there and {family, there} != {"Enum", "String"}:
        return f"the database's type is {actual}, the code maps {mapped}"
    if family == "Integer" and _bytes(actual) < _bytes(mapped):
        return f"the database's type is {actual}, narrower than the code's {mapped}"
    length, limit = getattr(mapped, "length", None), getattr(actual, "length", None)
    if family == "String" and limit is not None and (length is None or length > limit):
        return f"the database's type is {actual}, shorter than the code's {mapped}"
    missing = sorted(set(getattr(mapped, "enums", ()) or ()) - set(getattr(actual, "enums", ()) or ()))
    if family == "Enum" and there == "Enum" and missing:
        return f"the database's enum lacks the code's values {', '.join(missing)}"
    return None


def _bytes(type_) -> int:
    return next((size for cls in type(type_).__mro__ for name, size in _INTEGER_BYTES.items()
                 if cls.__name__ == name), 4)


def _null_problem(column, there: dict) -> str | None:
    if there["nullable"] or not column.nullable or column.primary_key:
        return None
    if column.default is not None or column.server_default is not None or there.get("default") is not None:
        return None
    return "NOT NULL in the database, and the code may write NULL (its column is nullable, with no default)"


def _required(there: dict) -> bool:
    """A column an INSERT must name: NOT NULL, with no default, not generated."""
    return (not there["nullable"] and there.get("default") is None and not there.get("identity")
            and not there.get("computed") and there.get("autoincrement") is not True)


def check(import_path: str) -> dict:
    """Load the app as `flask --app` does and compare its models with its database."""
    from .wsgi import load_app

    app = load_app(import_path)
    migrate = app.extensions.get("migrate")
    if migrate is None:
        raise RuntimeError("the app has no Flask-Migrate (Migrate(app, db))")
    db = migrate.db
    with app.app_context():
        metadata = db.metadatas[None] if hasattr(db, "metadatas") else db.metadata
        with db.engine.connect() as connection:
            problems, columns = problems_in(metadata, connection)
    return {"tables": len(metadata.tables), "columns": columns, "problems": problems}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m deploy_runtime.compat APP", file=sys.stderr)
        return 2
    try:
        print(json.dumps(check(argv[1])))
    except Exception as exc:  # noqa: BLE001 - reported to the deploy, which stops
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
