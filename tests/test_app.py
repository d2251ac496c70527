"""The demo app on a real PostgreSQL: its JSON endpoints."""
import os

import pytest


@pytest.fixture
def migrated(project):
    assert project.inv("upgrade").returncode == 0
    return project


def make_app(url: str):
    os.environ["DATABASE_URL"] = url
    try:
        from app import create_app

        return create_app()
    finally:
        del os.environ["DATABASE_URL"]


def test_boards_and_cards_are_written_and_read_back(migrated):
    client = make_app(migrated.database_url).test_client()
    board = client.post("/boards", json={"name": "ops"})
    assert board.status_code == 201
    board_id = board.get_json()["id"]
    card = client.post(f"/boards/{board_id}/cards", json={"title": "rotate keys"})
    assert card.status_code == 201 and card.get_json()["done"] is False
    done = client.patch(f"/cards/{card.get_json()['id']}", json={"done": True})
    assert done.get_json()["done"] is True
    assert client.get(f"/boards/{board_id}/cards").get_json()[0]["title"] == "rotate keys"
    assert client.get("/boards").get_json()[0]["cards"] == 1


def test_listing_boards_counts_their_cards_in_one_query_however_many_boards(migrated):
    from sqlalchemy import event

    app = make_app(migrated.database_url)
    client = app.test_client()
    for name, cards in (("empty", 0), ("one", 1), ("three", 3)):
        board_id = client.post("/boards", json={"name": name}).get_json()["id"]
        for n in range(cards):
            client.post(f"/boards/{board_id}/cards", json={"title": f"card {n}"})
    statements = []
    with app.app_context():
        from app.extensions import db

        engine = db.engine
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    listed = client.get("/boards").get_json()
    assert [(b["name"], b["cards"]) for b in listed] == [("empty", 0), ("one", 1), ("three", 3)]
    assert len(statements) == 1, statements


def test_bad_requests_get_json_errors(migrated):
    client = make_app(migrated.database_url).test_client()
    assert client.post("/boards", json={"name": ""}).status_code == 400
    assert client.post("/boards", data="not json").status_code == 400
    assert client.post("/boards", json={"name": "a"}).status_code == 201
    conflict = client.post("/boards", json={"name": "a"})
    assert conflict.status_code == 409 and "exists" in conflict.get_json()["error"]
    assert client.get("/boards/999/cards").status_code == 404
