"""Credential rotation: command keys being rotated and MQTT logins kept for a grace period.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "ap_key_rotations",
        sa.Column("ap_id", sa.String(63), primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("new_key", sa.String(200), nullable=True),
        sa.Column("old_key", sa.String(200), nullable=True),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("grace_until", Time, nullable=False),
        sa.Column("confirmed_at", Time, nullable=True),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("command_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "ap_mqtt_logins_retired",
        sa.Column("username", sa.String(80), primary_key=True),
        sa.Column("ap_id", sa.String(63), nullable=False, index=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("valid_until", Time, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ap_mqtt_logins_retired")
    op.drop_table("ap_key_rotations")
