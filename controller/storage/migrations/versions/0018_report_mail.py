"""Dashboards: monthly reports by e-mail, the accounts' subscriptions and the reports sent.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def _account() -> sa.Column[str]:
    return sa.Column(
        "username",
        sa.String(64),
        sa.ForeignKey("dashboard_accounts.username", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    op.create_table(
        "dashboard_report_subscriptions",
        _account(),
        sa.Column("insee", sa.String(5), primary_key=True),
        sa.Column("email", sa.String(200), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "dashboard_report_mails",
        _account(),
        sa.Column("insee", sa.String(5), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("sent_at", Time, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dashboard_report_mails")
    op.drop_table("dashboard_report_subscriptions")
