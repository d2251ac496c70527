"""add cards.done

Revision ID: c7d9e1f3a562
Revises: 8a4e6d2c1b35
Create Date: 2026-11-23 10:10:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c7d9e1f3a562'
down_revision = '8a4e6d2c1b35'
branch_labels = None
depends_on = None


def upgrade():
    # A constant default: PostgreSQL 11+ adds the column without rewriting the table.
    op.add_column('cards', sa.Column('done', sa.Boolean(), server_default=sa.text('false'), nullable=False))


def downgrade():
    op.drop_column('cards', 'done')
