"""The schema check a deploy runs with the serving release's models (deploy_runtime.compat),
against a real PostgreSQL: each table and column the code maps that a migration broke is named."""
import sqlalchemy as sa
from sqlalchemy import create_engine, text

from deploy_runtime.compat import problems_in


def models() -> sa.MetaData:
    """What an old release maps."""
    metadata = sa.MetaData()
    sa.Table("boards", metadata, sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("name", sa.Text))
    sa.Table("cards", metadata,
             sa.Column("id", sa.BigInteger, primary_key=True),
             sa.Column("title", sa.String(200), nullable=False),
             sa.Column("rank", sa.BigInteger),
             sa.Column("note", sa.Text, nullable=True),
             sa.Column("state", sa.Enum("open", "done", name="card_state")),
             sa.Column("done", sa.Boolean, server_default=sa.false(), nullable=False))
    return metadata


def check(database_url: str, ddl: str, compared: int = 8) -> list[tuple[str, str | None, str]]:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:
        connection.execute(text("CREATE TYPE card_state AS ENUM ('open', 'done')"))
        models().create_all(connection)
        connection.execute(text(ddl))
    with engine.connect() as connection:
        found, columns = problems_in(models(), connection)
    engine.dispose()
    assert columns == compared  # every column of every table still there
    return [(p["table"], p["column"], p["problem"]) for p in found]


def test_an_expanded_schema_passes(database_url):
    assert check(database_url, "ALTER TABLE cards ADD COLUMN name text; ALTER TABLE cards ADD COLUMN n int DEFAULT 0;"
                               "ALTER TABLE cards ALTER COLUMN title TYPE text; ALTER TABLE boards ADD COLUMN x bigint "
                               "GENERATED ALWAYS AS IDENTITY; ALTER TYPE card_state ADD VALUE 'archived'") == []


def test_each_breaking_change_is_named_by_table_and_column(database_url):
    found = check(database_url, "ALTER TABLE cards RENAME COLUMN title TO name; ALTER TABLE boards RENAME TO decks;"
                                "ALTER TABLE cards ALTER COLUMN rank TYPE integer; ALTER TABLE cards ALTER COLUMN note "
                                "SET NOT NULL; ALTER TABLE cards ADD COLUMN owner text NOT NULL;"
                                "ALTER TABLE cards ALTER COLUMN done TYPE text", compared=6)
    assert {(table, column) for table, column, _ in found} == {
        ("boards", None), ("cards", "title"), ("cards", "rank"), ("cards", "note"), ("cards", "owner"),
        ("cards", "name"), ("cards", "done")}, found
    why = {column: problem for _, column, problem in found}
    assert "gone" in why["title"] and "narrower" in why["rank"] and "may write NULL" in why["note"]
    assert "inserts fail" in why["owner"] and "the code maps BOOLEAN" in why["done"]


def test_a_shorter_varchar_and_a_missing_enum_value_are_named(database_url):
    found = check(database_url, "ALTER TABLE cards ALTER COLUMN title TYPE varchar(20);"
                                "ALTER TYPE card_state RENAME VALUE 'done' TO 'closed'")
    assert [(column, problem) for _, column, problem in found] == [
        ("title", "the database's type is VARCHAR(20), shorter than the code's VARCHAR(200)"),
        ("state", "the database's enum lacks the code's values done")]
