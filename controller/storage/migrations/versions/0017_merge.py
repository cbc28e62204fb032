"""One head again: the branches that grew side by side from 0002 and 0007 meet here.

Nothing changes in the schema. After this revision an operator's database has a single
head (``alembic upgrade head`` and ``heads`` are the same), and the next migration
revises 0017.

Revision ID: 0017
Revises: 0004, 0006, 0008, 0009, 0010, 0012, 0013, 0014, 0016
Create Date: 2026-11-29
"""

revision = "0017"
down_revision = (
    "0004",
    "0006",
    "0008",
    "0009",
    "0010",
    "0012",
    "0013",
    "0014",
    "0016",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to do: a merge point."""


def downgrade() -> None:
    """Nothing to do: a merge point."""
