"""The worked example of docs/expand-contract.md, on the demo app: `cards.title` renamed to
`cards.name` in three deploys, each safe while the previous release still serves.

1. expand: add `name` (nullable); the code writes both, reads `title`.
2. backfill: copy `title` into `name` where it is missing, let `title` be NULL; the code
   reads `name` and still writes both (the release of step 1 serves until the switch).
3. contract: the code forgets `title`; a post revision drops it once no host serves code
   that maps it.

Also the unsafe way, one step, for the tests that show it refused. Each step is the
revision file's name and text, and the edits of the app's code (path, old, new).
"""
from __future__ import annotations

from dataclasses import dataclass

HEAD = "e2b8f4a6c913"  # the demo's head before the example


@dataclass(frozen=True)
class Step:
    title: str
    filename: str
    migration: str
    edits: tuple[tuple[str, str, str], ...]


def revision_file(revision: str, down: str, message: str, upgrade: str, downgrade: str, header: str = "") -> str:
    """An Alembic revision file; `header` goes beside `revision = ...` (e.g. `phase = "post"`)."""
    return (f'"""{message}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
            f'revision = "{revision}"\ndown_revision = "{down}"\nbranch_labels = None\ndepends_on = None\n{header}\n\n'
            f"def upgrade():\n{upgrade}\n\ndef downgrade():\n{downgrade}")


EXPAND = Step(
    "expand: add cards.name, written beside title",
    "2026_11_25_ec0000000001_add_cards_name.py",
    revision_file("ec0000000001", HEAD, "add cards.name",
                  '    op.add_column("cards", sa.Column("name", sa.Text(), nullable=True))\n',
                  '    op.drop_column("cards", "name")\n'),
    (("app/models.py", "    title: Mapped[str] = mapped_column(Text)\n",
      "    title: Mapped[str] = mapped_column(Text)\n    name: Mapped[str | None] = mapped_column(Text)\n"),
     ("app/api.py", '    card = Card(board=board, title=_json_field("title", str))\n',
      '    title = _json_field("title", str)\n    card = Card(board=board, title=title, name=title)\n')),
)

BACKFILL = Step(
    "backfill: name from title; read name; title may be NULL",
    "2026_11_25_ec0000000002_backfill_cards_name.py",
    "# lint: waive ban-drop-not-null because every release that reads title writes it, and the release that\n"
    "# stops writing it (step 3) reads name\n" +
    revision_file("ec0000000002", "ec0000000001", "backfill cards.name, title nullable",
                  '    op.execute("UPDATE cards SET name = title WHERE name IS NULL")\n'
                  '    op.alter_column("cards", "title", nullable=True)\n',
                  '    op.execute("UPDATE cards SET title = name WHERE title IS NULL")\n'
                  '    op.alter_column("cards", "title", nullable=False)\n'),
    (("app/models.py", "    title: Mapped[str] = mapped_column(Text)\n",
      "    title: Mapped[str | None] = mapped_column(Text)\n"),
     ("app/models.py", '            "title": self.title,\n', '            "title": self.name,\n')),
)

CONTRACT = Step(
    "contract: drop cards.title after the switch (post)",
    "2026_11_25_ec0000000003_drop_cards_title.py",
    revision_file("ec0000000003", "ec0000000002", "drop cards.title",
                  '    op.drop_column("cards", "title")\n',
                  '    op.add_column("cards", sa.Column("title", sa.Text(), nullable=True))\n'
                  '    op.execute("UPDATE cards SET title = name")\n', header='phase = "post"\n'),
    (("app/models.py", "    title: Mapped[str | None] = mapped_column(Text)\n", ""),
     ("app/api.py", "    card = Card(board=board, title=title, name=title)\n",
      "    card = Card(board=board, name=title)\n")),
)

SAFE_RENAME = (EXPAND, BACKFILL, CONTRACT)

# The unsafe way: rename in place, in one pre revision, with the code renamed too.
ONE_STEP_RENAME = Step(
    "rename cards.title to name in one step",
    "2026_11_25_ec00000000ff_rename_cards_title.py",
    revision_file("ec00000000ff", HEAD, "rename cards.title to name",
                  '    op.alter_column("cards", "title", new_column_name="name")\n',
                  '    op.alter_column("cards", "name", new_column_name="title")\n'),
    (("app/models.py", "    title: Mapped[str] = mapped_column(Text)\n", "    name: Mapped[str] = mapped_column(Text)\n"),
     ("app/models.py", '            "title": self.title,\n', '            "title": self.name,\n'),
     ("app/api.py", '    card = Card(board=board, title=_json_field("title", str))\n',
      '    card = Card(board=board, name=_json_field("title", str))\n')),
)
