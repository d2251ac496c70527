"""The schema: boards, each holding cards."""
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, Index, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db


class Board(db.Model):
    __tablename__ = "boards"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    cards: Mapped[list["Card"]] = relationship(
        back_populates="board", cascade="all, delete-orphan", order_by="Card.id"
    )

    def to_dict(self, cards: int | None = None) -> dict:
        """`cards`: the count when the caller already has it (else the cards are loaded)."""
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "cards": len(self.cards) if cards is None else cards,
        }


class Card(db.Model):
    __tablename__ = "cards"
    __table_args__ = (Index("ix_cards_board_id_done", "board_id", "done"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    board_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("boards.id", ondelete="CASCADE")
    )
    title: Mapped[str] = mapped_column(Text)
    done: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    board: Mapped[Board] = relationship(back_populates="cards")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "board_id": self.board_id,
            "title": self.title,
            "done": self.done,
            "created_at": self.created_at.isoformat(),
        }
