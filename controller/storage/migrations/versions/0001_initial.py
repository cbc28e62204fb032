"""Initial state schema: communes, access points, sessions, processed messages, commands.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "communes",
        sa.Column("insee", sa.String(5), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("lon", Time, nullable=True),
        sa.Column("lat", Time, nullable=True),
    )
    op.create_table(
        "access_points",
        sa.Column("ap_id", sa.String(63), primary_key=True),
        sa.Column("insee", sa.String(5), nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("lon", Time, nullable=True),
        sa.Column("lat", Time, nullable=True),
        sa.Column("command_key", sa.String(200), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("boot", sa.String(32), nullable=True),
        sa.Column("last_seen", Time, nullable=True),
        sa.Column("state_since", Time, nullable=True),
        sa.Column("agent_version", sa.String(32), nullable=True),
        sa.Column("clock_skew_s", Time, nullable=True),
        sa.Column("health", sa.Text, nullable=True),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("ap_id", sa.String(63), nullable=False),
        sa.Column("insee", sa.String(5), nullable=False),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=True),
        sa.Column("auth_ref", sa.String(64), nullable=True),
        sa.Column("boot", sa.String(32), nullable=True),
        sa.Column("gw_session_start", Time, nullable=True),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("stopped_at", Time, nullable=True),
        sa.Column("up_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("down_bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("terminate_cause", sa.String(32), nullable=True),
        sa.Column("backfilled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_sessions_open", "sessions", ["ap_id", "mac", "stopped_at"])
    op.create_index("ix_sessions_started", "sessions", ["started_at"])
    op.create_table(
        "processed_messages",
        sa.Column("ap_id", sa.String(63), primary_key=True),
        sa.Column("boot", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("received_at", Time, nullable=False, index=True),
    )
    op.create_table(
        "commands",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("ap_id", sa.String(63), nullable=False, index=True),
        sa.Column("cmd", sa.String(32), nullable=False),
        sa.Column("mac", sa.String(17), nullable=True),
        sa.Column("purpose", sa.String(32), nullable=True),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("acked_at", Time, nullable=True),
        sa.Column("ok", sa.Boolean, nullable=True),
        sa.Column("error", sa.String(200), nullable=True),
    )


def downgrade() -> None:
    for name in ("commands", "processed_messages", "sessions", "access_points", "communes"):
        op.drop_table(name)
