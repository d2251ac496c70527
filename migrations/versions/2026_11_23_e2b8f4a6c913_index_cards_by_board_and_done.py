"""index cards by board and done

Revision ID: e2b8f4a6c913
Revises: c7d9e1f3a562
Create Date: 2026-11-23 10:15:00

CREATE INDEX CONCURRENTLY cannot run inside a transaction: the autocommit
block commits what came before it, so this revision is not atomic.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e2b8f4a6c913'
down_revision = 'c7d9e1f3a562'
branch_labels = None
depends_on = None


def upgrade():
    with op.get_context().autocommit_block():
        op.create_index(
            'ix_cards_board_id_done', 'cards', ['board_id', 'done'],
            postgresql_concurrently=True, if_not_exists=True,
        )


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index(
            'ix_cards_board_id_done', table_name='cards',
            postgresql_concurrently=True, if_exists=True,
        )
