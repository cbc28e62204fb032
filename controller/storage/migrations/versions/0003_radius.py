"""RADIUS: NAS clients, accounting session keys, one-time credentials, known devices,
Disconnect/CoA requests.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "nas_clients",
        sa.Column("nas_id", sa.String(63), primary_key=True),
        sa.Column("address", sa.String(45), nullable=False, index=True),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("coa_port", sa.Integer, nullable=False, server_default="3799"),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "radius_sessions",
        sa.Column("nas_id", sa.String(63), primary_key=True),
        sa.Column("acct_session_id", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("user_name", sa.String(64), nullable=True),
    )
    op.create_table(
        "radius_credentials",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("password_sha256", sa.String(64), nullable=False),
        sa.Column("session_minutes", sa.Integer, nullable=True),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("used_at", Time, nullable=True),
    )
    op.create_table(
        "radius_known_devices",
        sa.Column("mac_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", Time, nullable=False),
    )
    op.create_table(
        "radius_dynauth",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("nas_id", sa.String(63), nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("acct_session_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("answered_at", Time, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ok", sa.Boolean, nullable=True),
        sa.Column("error_cause", sa.Integer, nullable=True),
    )


def downgrade() -> None:
    for name in (
        "radius_dynauth",
        "radius_known_devices",
        "radius_credentials",
        "radius_sessions",
        "nas_clients",
    ):
        op.drop_table(name)
