"""Gateway settings pushed to each access point (apply_config): version and state.

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "ap_configs",
        sa.Column("ap_id", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("command_id", sa.String(64), nullable=True),
        sa.Column("pushed_at", Time, nullable=True),
        sa.Column("applied_version", sa.Integer, nullable=True),
        sa.Column("result", sa.String(200), nullable=True),
        sa.Column("acked_at", Time, nullable=True),
        sa.Column("reported_version", sa.Integer, nullable=True),
        sa.Column("reported_at", Time, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("ap_configs")
