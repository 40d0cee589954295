"""Gateway: the ledger records which provider served a request and how many routes were tried.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03 10:05:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.drop_column('attempts')
        batch_op.drop_column('provider')
