"""Proof that nothing was written since a backup, before a restore throws the difference away.

Restoring a pre-deploy backup after a failed downgrade discards everything committed since
the backup. It may only run when that is provably nothing but the migration's own work, so
the evidence here must not be able to miss a write (statistics counters can: they lag, they
are lost on a crash, they miss other roles). Three checks, made after every writer of the
app was stopped, and again just before pg_restore starts:

1. no other session has an open transaction that wrote (it could commit later);
2. every row of every table was written by a transaction the backup's snapshot saw, or by
   the migration's own transaction(s) (its row versions carry their xid in `xmin`);
3. every table the backup holds still has exactly the backup's rows on the backup's
   columns (a digest of each row, summed, computed in the backup's snapshot): this is what
   sees a deleted row, which leaves no row version behind to look at.

If any check fails, or the backup lacks the evidence (a backup made without digests),
nothing can be proven and the restore is refused. Standard library only.
"""
from __future__ import annotations

import json

from pgenv import psql

# Run in the backup's snapshot (the dump's): its txid snapshot, and per table its columns,
# row count and the sum of a 64-bit digest of each row. Lines: content, table, columns, rows, sum.
CONTENT = r"""
SELECT 'snapshot', txid_current_snapshot();
SELECT format('SELECT %L, %L, %L, count(*), coalesce(sum((''x'' || left(md5(ROW(%s)::text), 16))::bit(64)::bigint), 0) FROM %I.%I',
              'content', nspname || '.' || relname, columns, quoted, nspname, relname)
  FROM (SELECT n.nspname, c.relname, json_agg(a.attname ORDER BY a.attnum)::text AS columns,
               string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) AS quoted
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE c.relkind = 'r' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
         GROUP BY n.nspname, c.relname) tables
 ORDER BY 1
\gexec
"""


def parse_content(rows: list[list[str]]) -> dict:
    """The evidence a backup keeps in its manifest: {"snapshot": ..., "tables": {t: {...}}}."""
    found: dict = {"snapshot": None, "tables": {}}
    for row in rows:
        if row[0] == "snapshot":
            found["snapshot"] = row[1]
        elif row[0] == "content":
            found["tables"][row[1]] = {"columns": json.loads(row[2]), "rows": int(row[3]), "sum": row[4]}
    return found


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table(qualified: str) -> str:
    schema, _, name = qualified.partition(".")
    return f"{_quote(schema)}.{_quote(name)}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_writers() -> list[str]:
    """Other sessions in this database inside a transaction that has written (holds its xid)."""
    rows = psql("SELECT a.pid, a.usename, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted "
                "AND a.datname = current_database() AND a.pid <> pg_backend_pid() ORDER BY 1;")
    prepared = psql("SELECT gid, owner FROM pg_prepared_xacts WHERE database = current_database() ORDER BY 1;")
    return ([f"session {pid} ({user or '?'}, {app or 'no application name'})" for pid, user, app in rows]
            + [f"prepared transaction {gid!r} ({owner})" for gid, owner in prepared])


TABLES = ("SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
          "WHERE c.relkind = 'r' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' "
          "AND c.relname <> 'alembic_version' ORDER BY 1;")
COLUMNS = ("SELECT n.nspname || '.' || c.relname, a.attname FROM pg_class c "
           "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
           "AND a.attnum > 0 AND NOT a.attisdropped WHERE c.relkind = 'r' ORDER BY 1;")


def foreign_rows(snapshot: str, migration_xids: list[int], backup_tables: set[str]) -> dict[str, int]:
    """Per table, the rows whose version was written by a transaction that is neither seen by
    the backup's snapshot nor the migration's. A row's xmin is 32 bits: it is widened with
    the epoch of now (every such transaction is recent). In a table the backup does not have,
    every row not the migration's counts (a snapshot's xip list has no subtransactions)."""
    tables = [row[0] for row in psql(TABLES)]
    if not tables:
        return {}
    widened = ("(((txid_snapshot_xmax(txid_current_snapshot()) >> 32) << 32) + xmin::text::bigint"
               " - CASE WHEN ((txid_snapshot_xmax(txid_current_snapshot()) >> 32) << 32) + xmin::text::bigint"
               " > txid_snapshot_xmax(txid_current_snapshot()) THEN 4294967296 ELSE 0 END)")
    ours = ", ".join(str(x & 0xFFFFFFFF) for x in migration_xids) or "-1"
    seen = f"AND NOT txid_visible_in_snapshot({widened}, {_literal(snapshot)}::txid_snapshot)"
    queries = [f"SELECT {_literal(t)}, count(*) FROM {_table(t)} WHERE xmin::text::bigint NOT IN ({ours}) "
               f"{seen if t in backup_tables else ''};" for t in tables]
    return {table: int(count) for table, count in psql("\n".join(queries)) if int(count)}


def changed_tables(backup_tables: dict) -> list[str]:
    """Tables of the backup whose rows on the backup's columns are not the backup's."""
    present: dict[str, set[str]] = {}
    for table, column in psql(COLUMNS):
        present.setdefault(table, set()).add(column)
    changed, queries = [], []
    for table, kept in sorted(backup_tables.items()):
        if table.rpartition(".")[2] == "alembic_version":
            continue  # the migration's own change
        if table not in present:
            continue  # dropped since: the database holds nothing of it to lose
        if not set(kept["columns"]) <= present[table]:
            changed.append(f"{table} (a column of the backup is gone: its rows cannot be compared)")
            continue
        row = ", ".join(_quote(c) for c in kept["columns"])
        queries.append(f"SELECT {_literal(table)}, count(*), coalesce(sum(('x' || left(md5(ROW({row})::text), 16))"
                       f"::bit(64)::bigint), 0) FROM {_table(table)};")
    for table, rows, digest in psql("\n".join(queries)) if queries else []:
        kept = backup_tables[table]
        if int(rows) != kept["rows"] or digest != kept["sum"]:
            changed.append(f"{table} ({rows} row(s) now, {kept['rows']} in the backup"
                           + (", contents differ" if int(rows) == kept["rows"] else "") + ")")
    return changed


def reasons_not_to_restore(manifest: dict, migration_xids: list[int]) -> list[str]:
    """Why it cannot be proven that nothing but the migration wrote since the backup; [] if it can."""
    evidence = manifest.get("content") or {}
    if not evidence.get("snapshot") or "tables" not in evidence:
        return [f"the backup {manifest.get('id')} holds no row digests (made by an older toolkit, or not a "
                "pre-deploy backup), so no write since it can be ruled out"]
    reasons = [f"{who} has an open transaction that wrote" for who in open_writers()]
    if psql("SELECT 1 FROM pg_largeobject_metadata LIMIT 1;"):
        reasons.append("the database holds large objects, which the backup's digests do not cover")
    reasons += [f"{table}: {count} row(s) written since the backup by another transaction than the migration's"
                for table, count in foreign_rows(evidence["snapshot"], migration_xids,
                                                 set(evidence["tables"])).items()]
    reasons += [f"{table} differs from the backup" for table in changed_tables(evidence["tables"])]
    return reasons
