"""Dashboard accounts: roles, the communes each account may see, login sessions;
hotspot incidents (down and back up) for uptime and the incidents timeline.

Revision ID: 0007
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0002"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "dashboard_accounts",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(24), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("totp_secret", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "dashboard_account_communes",
        sa.Column(
            "username",
            sa.String(64),
            sa.ForeignKey("dashboard_accounts.username", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("insee", sa.String(5), primary_key=True),
    )
    op.create_table(
        "dashboard_logins",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "username",
            sa.String(64),
            sa.ForeignKey("dashboard_accounts.username", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("second_factor_ok", sa.Boolean, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
    )
    op.create_table(
        "dashboard_incidents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("ap_id", sa.String(63), nullable=False, index=True),
        sa.Column("down_at", Time, nullable=False, index=True),
        sa.Column("up_at", Time, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("dashboard_incidents")
    op.drop_table("dashboard_logins")
    op.drop_table("dashboard_account_communes")
    op.drop_table("dashboard_accounts")
