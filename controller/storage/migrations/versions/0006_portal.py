"""Captive portal: voucher batches and vouchers, their uses, per-commune legal texts and
the proofs of their acceptance.

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "voucher_batches",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("insee", sa.String(5), nullable=True),
        sa.Column("note", sa.String(200), nullable=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("minutes", sa.Integer, nullable=False),
        sa.Column("quota_mb", sa.Integer, nullable=False, server_default="0"),
        sa.Column("up_kbps", sa.Integer, nullable=False, server_default="0"),
        sa.Column("down_kbps", sa.Integer, nullable=False, server_default="0"),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("max_devices", sa.Integer, nullable=False, server_default="1"),
    )
    op.create_table(
        "vouchers",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("batch_id", sa.String(16), nullable=False, index=True),
        sa.Column("first_used_at", Time, nullable=True),
        sa.Column("devices", sa.Integer, nullable=False, server_default="0"),
        sa.Column("revoked_at", Time, nullable=True),
    )
    op.create_table(
        "voucher_uses",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("device_hash", sa.String(64), primary_key=True),
        sa.Column("ap_id", sa.String(63), nullable=False),
        sa.Column("used_at", Time, nullable=False),
    )
    op.create_table(
        "portal_legal_texts",
        sa.Column("insee", sa.String(5), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("published_at", Time, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
    )
    op.create_table(
        "portal_consents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("device_hash", sa.String(64), nullable=False),
        sa.Column("insee", sa.String(5), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("accepted_at", Time, nullable=False),
        sa.Column("ap_id", sa.String(63), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Index("ix_portal_consents_device", "device_hash", "insee", "version"),
    )


def downgrade() -> None:
    for name in (
        "portal_consents",
        "portal_legal_texts",
        "voucher_uses",
        "vouchers",
        "voucher_batches",
    ):
        op.drop_table(name)
