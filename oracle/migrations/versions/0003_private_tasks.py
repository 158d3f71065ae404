"""Private tasks: the requester's output key, and ciphertext-only results.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("output_pubkey", sa.String(132), nullable=True))
        batch.add_column(sa.Column("result_ciphertext_cid", sa.String(100), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("requester_cid", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("requester_cid")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("result_ciphertext_cid")
        batch.drop_column("output_pubkey")
