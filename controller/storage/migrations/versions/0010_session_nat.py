"""NAT port blocks of sessions: the public address and source ports (agents/_nat.py),
so that the legal log can answer "public IP, port, time -> session".

Revision ID: 0010
Revises: 0007
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("public_ip", sa.String(45), nullable=True))
    op.add_column("sessions", sa.Column("port_start", sa.Integer, nullable=True))
    op.add_column("sessions", sa.Column("port_end", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("port_end")
        batch.drop_column("port_start")
        batch.drop_column("public_ip")
