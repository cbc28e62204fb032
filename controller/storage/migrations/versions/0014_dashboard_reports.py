"""Dashboards: stored monthly reports, communes' contact details, and the statistics
store's indexes for reads by place and period.

Revision ID: 0014
Revises: 0007, 0005 (0005 creates stats_cells)
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = ("0007", "0005")
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_index("ix_stats_cells_place", "stats_cells", ["scope", "insee", "day"])
    op.create_index("ix_stats_cells_destination", "stats_cells", ["scope", "destination", "day"])
    op.create_table(
        "dashboard_reports",
        sa.Column("insee", sa.String(5), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("generated_at", Time, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "dashboard_commune_contacts",
        sa.Column("insee", sa.String(5), primary_key=True),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("phone", sa.String(32), nullable=False, server_default=""),
        sa.Column("email", sa.String(200), nullable=False, server_default=""),
        sa.Column("address", sa.String(500), nullable=False, server_default=""),
        sa.Column("hours", sa.String(500), nullable=False, server_default=""),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dashboard_commune_contacts")
    op.drop_table("dashboard_reports")
    op.drop_index("ix_stats_cells_destination", "stats_cells")
    op.drop_index("ix_stats_cells_place", "stats_cells")
