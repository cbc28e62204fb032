"""Captive portal: e-mail/SMS codes waiting to be typed and session extensions waiting
for their device, kept in the database so that a controller restart loses neither.

Revision ID: 0016
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "portal_pending_codes",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("identity", sa.String(254), nullable=False),
        sa.Column("device_hash", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("attempts_left", sa.Integer, nullable=False),
    )
    op.create_index("ix_portal_pending_codes_expires_at", "portal_pending_codes", ["expires_at"])
    op.create_table(
        "portal_pending_extensions",
        sa.Column("ap_id", sa.String(63), primary_key=True),
        sa.Column("mac_hash", sa.String(64), primary_key=True),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("minutes", sa.Integer, nullable=False),
        sa.Column("deadline", Time, nullable=False),
    )
    op.create_index(
        "ix_portal_pending_extensions_deadline", "portal_pending_extensions", ["deadline"]
    )


def downgrade() -> None:
    op.drop_table("portal_pending_extensions")
    op.drop_table("portal_pending_codes")
