"""UAM gateways and territorial continuity: one-time credentials bound to a NAS and a
device, with the limits of the login; the terms a remembered device accepted; a NAS's
UAM secret.

Revision ID: 0013
Revises: 0007, 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = ("0007", "0003")
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.add_column("radius_credentials", sa.Column("nas_id", sa.String(63), nullable=True))
    op.add_column("radius_credentials", sa.Column("mac_hash", sa.String(64), nullable=True))
    for name in ("up_kbps", "down_kbps", "quota_mb"):
        op.add_column("radius_credentials", sa.Column(name, sa.Integer, nullable=True))
    op.add_column("radius_known_devices", sa.Column("terms_scope", sa.String(5), nullable=True))
    op.add_column("radius_known_devices", sa.Column("terms_version", sa.String(32), nullable=True))
    op.add_column("radius_known_devices", sa.Column("accepted_at", Time, nullable=True))
    op.add_column("nas_clients", sa.Column("uam_secret", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nas_clients") as batch:
        batch.drop_column("uam_secret")
    with op.batch_alter_table("radius_known_devices") as batch:
        for name in ("accepted_at", "terms_version", "terms_scope"):
            batch.drop_column(name)
    with op.batch_alter_table("radius_credentials") as batch:
        for name in ("quota_mb", "down_kbps", "up_kbps", "mac_hash", "nas_id"):
            batch.drop_column(name)
