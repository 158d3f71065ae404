"""Reorg handling (log arguments, recent block hashes) and the transaction manager's tables.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WEI = sa.String(80)


def upgrade() -> None:
    with op.batch_alter_table("chain_logs") as batch:
        batch.add_column(sa.Column("args", sa.Text(), nullable=True))
    op.create_table(
        "ingested_blocks",
        sa.Column("cursor", sa.String(64), primary_key=True),
        sa.Column("block_number", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
    )
    op.create_table(
        "tx_keys",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("address", sa.String(42), primary_key=True),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "sent_txs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("task_ids", sa.Text(), nullable=False),
        sa.Column("to_address", sa.String(42), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("value", WEI, nullable=False),
        sa.Column("gas", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("mined_tx_hash", sa.String(66), nullable=True),
        sa.Column("mined_block", sa.BigInteger(), nullable=True),
        sa.Column("receipt_status", sa.Integer(), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_sent_txs_state", "sent_txs", ["state"])
    op.create_index("ix_sent_txs_sender_nonce", "sent_txs", ["chain_id", "sender", "nonce"])
    op.create_table(
        "tx_attempts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tx_id", sa.Integer(), sa.ForeignKey("sent_txs.id"), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=False, unique=True),
        sa.Column("raw_tx", sa.Text(), nullable=False),
        sa.Column("max_fee_per_gas", WEI, nullable=True),
        sa.Column("max_priority_fee_per_gas", WEI, nullable=True),
        sa.Column("gas_price", WEI, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("broadcast_at", sa.Float(), nullable=True),
        sa.Column("broadcast_block", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_tx_attempts_tx_id", "tx_attempts", ["tx_id"])


def downgrade() -> None:
    for table in ("tx_attempts", "sent_txs", "tx_keys", "ingested_blocks"):
        op.drop_table(table)
    with op.batch_alter_table("chain_logs") as batch:
        batch.drop_column("args")
