"""Signed leases (the evidence a silence slash needs) and agents' bonded stake.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_chain_expires_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("lease_signature", sa.String(140), nullable=True))
        batch.add_column(sa.Column("accepted_at", sa.Float(), nullable=True))
    with op.batch_alter_table("agents_seen") as batch:
        batch.add_column(sa.Column("bonded_stake", sa.String(80), nullable=True))
        batch.add_column(sa.Column("stake_ok", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents_seen") as batch:
        batch.drop_column("stake_ok")
        batch.drop_column("bonded_stake")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("accepted_at")
        batch.drop_column("lease_signature")
        batch.drop_column("lease_chain_expires_at")
