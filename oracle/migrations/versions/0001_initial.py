"""The schema as `create_all` made it before migrations: tasks, jobs, logs, cursors, API nonces, agents.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WEI = sa.String(80)  # oracle.db.Wei: uint256 as decimal text


def upgrade() -> None:
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "chain_logs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("block_hash", "log_index", name="uq_log"),
    )
    op.create_index("ix_chain_logs_block_number", "chain_logs", ["block_number"])
    op.create_index("ix_chain_logs_task_id", "chain_logs", ["task_id"])
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("requester", sa.String(42), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("input_digest", sa.String(66), nullable=False),
        sa.Column("fee", WEI, nullable=False),
        sa.Column("model_fee", WEI, nullable=False),
        sa.Column("deadline", sa.BigInteger(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("posted_block", sa.BigInteger(), nullable=False),
        sa.Column("posted_at", sa.Float(), nullable=False),
        sa.Column("result_cid", sa.String(100), nullable=True),
        sa.Column("result_digest", sa.String(66), nullable=True),
        sa.Column("attribution_cid", sa.String(100), nullable=True),
        sa.Column("attribution_digest", sa.String(66), nullable=True),
        sa.Column("settle_tx", sa.String(66), nullable=True),
        sa.Column("settled_at", sa.Float(), nullable=True),
        sa.Column("agent_paid", WEI, nullable=True),
        sa.Column("refund", WEI, nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("refund_tx", sa.String(66), nullable=True),
    )
    op.create_index("ix_tasks_state", "tasks", ["state"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.BigInteger(), sa.ForeignKey("tasks.task_id"), nullable=False),
        sa.Column("agent", sa.String(42), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("leased_at", sa.Float(), nullable=False),
        sa.Column("lease_expires_at", sa.Float(), nullable=False),
        sa.Column("result_cid", sa.String(100), nullable=True),
        sa.Column("result_digest", sa.String(66), nullable=True),
        sa.Column("signature", sa.String(140), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_jobs_task_id", "jobs", ["task_id"])
    op.create_index("ix_jobs_agent", "jobs", ["agent"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "api_nonces",
        sa.Column("agent", sa.String(42), primary_key=True),
        sa.Column("nonce", sa.String(80), primary_key=True),
        sa.Column("expiry", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_api_nonces_expiry", "api_nonces", ["expiry"])
    op.create_table(
        "agents_seen",
        sa.Column("agent", sa.String(42), primary_key=True),
        sa.Column("last_poll_at", sa.Float(), nullable=False),
        sa.Column("registered", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    for table in ("agents_seen", "api_nonces", "jobs", "tasks", "chain_logs", "cursors"):
        op.drop_table(table)
