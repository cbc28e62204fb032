"""Captive portal: identity data given at login by e-mail or SMS code (keyed hashes,
kept 5 years for the legal obligation only).

Revision ID: 0012
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "portal_identities",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("identity_hash", sa.String(64), nullable=False),
        sa.Column("device_hash", sa.String(64), nullable=False),
        sa.Column("insee", sa.String(5), nullable=False),
        sa.Column("ap_id", sa.String(63), nullable=False),
        sa.Column("logged_in_at", Time, nullable=False),
        sa.Column("keep_until", Time, nullable=False),
    )
    op.create_index("ix_portal_identities_identity_hash", "portal_identities", ["identity_hash"])
    op.create_index("ix_portal_identities_keep_until", "portal_identities", ["keep_until"])


def downgrade() -> None:
    op.drop_table("portal_identities")
