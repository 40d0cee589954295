"""Settlements: the requests whose cost was added to their key's spend, so that a job retried
under the same request id (its process died after settling) is not billed twice.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 23:40:00

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: str | Sequence[str] | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('budget_settlements',
    sa.Column('request_id', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('request_id')
    )
    with op.batch_alter_table('budget_settlements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_budget_settlements_settled_at'), ['settled_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('budget_settlements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_budget_settlements_settled_at'))
    op.drop_table('budget_settlements')
