"""MQTT logins of the access points (mosquitto password hashes, never the password).

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "ap_mqtt_logins",
        sa.Column("ap_id", sa.String(63), primary_key=True),
        sa.Column("username", sa.String(63), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ap_mqtt_logins")
