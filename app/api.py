"""JSON endpoints that read and write boards and cards."""
from flask import Blueprint, abort, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .extensions import db
from .models import Board, Card

api = Blueprint("api", __name__)


def _json_field(name: str, kind: type) -> object:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or not isinstance(payload.get(name), kind):
        abort(400, description=f"expected a JSON object with {kind.__name__} field {name!r}")
    value = payload[name]
    if isinstance(value, str):
        value = value.strip()
        if not value:
            abort(400, description=f"field {name!r} must not be empty")
    return value


@api.errorhandler(400)
@api.errorhandler(404)
@api.errorhandler(409)
def _error(err):
    return jsonify(error=err.description), err.code


@api.get("/boards")
def list_boards():
    """Every board with its number of cards, in one query (not one per board)."""
    counts = select(Card.board_id, func.count().label("cards")).group_by(Card.board_id).subquery()
    rows = db.session.execute(
        select(Board, func.coalesce(counts.c.cards, 0))
        .outerjoin(counts, counts.c.board_id == Board.id)
        .order_by(Board.id)
    ).all()
    return jsonify([board.to_dict(cards=cards) for board, cards in rows])


@api.post("/boards")
def create_board():
    board = Board(name=_json_field("name", str))
    db.session.add(board)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        abort(409, description=f"a board named {board.name!r} exists")
    return jsonify(board.to_dict()), 201


@api.get("/boards/<int:board_id>/cards")
def list_cards(board_id: int):
    board = db.get_or_404(Board, board_id, description="no such board")
    return jsonify([c.to_dict() for c in board.cards])


@api.post("/boards/<int:board_id>/cards")
def create_card(board_id: int):
    board = db.get_or_404(Board, board_id, description="no such board")
    card = Card(board=board, title=_json_field("title", str))
    db.session.add(card)
    db.session.commit()
    return jsonify(card.to_dict()), 201


@api.patch("/cards/<int:card_id>")
def update_card(card_id: int):
    card = db.get_or_404(Card, card_id, description="no such card")
    card.done = _json_field("done", bool)
    db.session.commit()
    return jsonify(card.to_dict())
