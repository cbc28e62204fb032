"""Statistics: published aggregate cells, finalised days, opt-out hashes.

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)

FIELDS = (
    "visitors",
    "randomised_visitors",
    "sessions",
    "repeat_visitors",
    "dwell_lt_5m",
    "dwell_5_15m",
    "dwell_15_30m",
    "dwell_30_60m",
    "dwell_1_2h",
    "dwell_ge_2h",
    "bytes_up",
    "bytes_down",
)


def upgrade() -> None:
    op.create_table(
        "stats_cells",
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("scope", sa.String(10), primary_key=True),
        sa.Column("period", sa.String(4), primary_key=True),
        sa.Column("start", sa.BigInteger, primary_key=True),
        sa.Column("insee", sa.String(10), primary_key=True),
        sa.Column("ap_id", sa.String(63), primary_key=True),
        sa.Column("destination", sa.String(10), primary_key=True),
        sa.Column("day", sa.String(10), nullable=False, index=True),
        sa.Column("noised", sa.Boolean, nullable=False, server_default=sa.false()),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in FIELDS),
    )
    op.create_table(
        "stats_days",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("finalized_at", Time, nullable=False),
        sa.Column("sessions", sa.BigInteger, nullable=False),
        sa.Column("devices", sa.BigInteger, nullable=False),
        sa.Column("cells", sa.BigInteger, nullable=False),
        sa.Column("published", sa.BigInteger, nullable=False),
        sa.Column("opted_out", sa.BigInteger, nullable=False),
        sa.Column("epsilon", Time, nullable=True),
        sa.Column("k", sa.Integer, nullable=False),
    )
    op.create_table(
        "stats_optout",
        sa.Column("mac_hash", sa.String(64), primary_key=True),
        sa.Column("created_at", Time, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stats_optout")
    op.drop_table("stats_days")
    op.drop_table("stats_cells")
