"""Requests from contracts through AIOracle (oracle/callbacks.py): each request's posted
result, challenge and committee; and tasks.replicas, the agents a task is run by when that is
fewer than its on-chain k (AIOracle posts k = 5 to leave room for a committee).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_requests",
        sa.Column("request_id", sa.BigInteger(), primary_key=True),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("callback", sa.String(42), nullable=False),
        sa.Column("gas_limit", sa.BigInteger(), nullable=False),
        sa.Column("callback_data", sa.Text(), nullable=False),
        sa.Column("input_cid", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("fulfil_by", sa.BigInteger(), nullable=True),
        sa.Column("challenge_window", sa.BigInteger(), nullable=True),
        sa.Column("escrow_deadline", sa.BigInteger(), nullable=True),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("output_is_cid", sa.Boolean(), nullable=True),
        sa.Column("settlement", sa.Text(), nullable=True),
        sa.Column("final_at", sa.BigInteger(), nullable=True),
        sa.Column("candidates", sa.Text(), nullable=True),
        sa.Column("resolve_by", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_table(
        "committee_duties",
        sa.Column("task_id", sa.BigInteger(), primary_key=True),
        sa.Column("agent", sa.String(42), primary_key=True),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("replicas", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("replicas")
    op.drop_table("committee_duties")
    op.drop_table("callback_requests")
