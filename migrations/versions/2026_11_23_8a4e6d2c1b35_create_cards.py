"""create cards

Revision ID: 8a4e6d2c1b35
Revises: 3f1c2a9b7d10
Create Date: 2026-11-23 10:05:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8a4e6d2c1b35'
down_revision = '3f1c2a9b7d10'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'cards',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('board_id', sa.BigInteger(), nullable=False),
        sa.Column('title', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['board_id'], ['boards.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade():
    op.drop_table('cards')
