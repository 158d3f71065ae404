"""Watching sent transactions: receipts, stuck ones, reorged-out ones, and why one reverted.

A transaction not mined `bump_after_s` seconds (or `bump_after_blocks` blocks) after its last
broadcast is stuck: the manager then has the broadcaster re-sign it with higher fees.

`reorged(fork)`, called by ingestion when it repairs a reorg, looks again at what was mined above
the fork point: a transaction the new chain lacks goes back to pending and is rebroadcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress, HexStr
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import TxParams, Wei

from oracle.db import TxAttempt, TxState, now
from oracle.tx import log
from oracle.tx.policy import TxPolicy
from oracle.tx.store import TxStore
from tributa.chain.tx import revert_reason
from tributa.errors import ChainError, ContractRevert


@dataclass(frozen=True)
class ChainView:
    """What one pass needs to know about the chain, read once."""

    head: int
    mined_nonce: int  # the key's nonce in the latest block
    pending_nonce: int  # ... counting the node's pool


class Confirmer:
    """Receipts and outcomes for the transactions of one key."""

    def __init__(self, w3: Web3, address: ChecksumAddress, store: TxStore, policy: TxPolicy) -> None:
        self.w3 = w3
        self.address = address
        self.store = store
        self.policy = policy
        # The latest block number seen (here or by the broadcaster's fee read): an accepted attempt
        # is stamped with it, for the blocks-stuck rule.
        self.head_hint: int | None = None

    def view(self) -> ChainView:
        self.head_hint = int(self.w3.eth.block_number)
        return ChainView(
            head=self.head_hint,
            mined_nonce=self.w3.eth.get_transaction_count(self.address, "latest"),
            pending_nonce=self.w3.eth.get_transaction_count(self.address, "pending"),
        )

    def resolve(self, tx_id: int, latest_nonce: int | None = None, allow_replaced: bool = True) -> tuple[bool, Any]:
        """Look for a receipt of any attempt; finalise the record if found. Returns (final, receipt).

        With no receipt but the key's mined nonce past this one, a tx some node accepted was
        replaced by a foreign transaction (REPLACED); one no node ever accepted is left for the
        broadcaster's first broadcast to re-sign."""
        unsettled = self.store.unsettled(tx_id)
        if unsettled is None:
            return True, None
        tx, attempts = unsettled
        found = self._find_receipt(attempts)
        if found is not None:
            self.store.finalise(tx_id, found[0].id, found[1])
            return True, found[1]
        if not (allow_replaced and any(a.broadcast_at is not None for a in attempts)):
            return False, None
        if latest_nonce is None:
            latest_nonce = self.w3.eth.get_transaction_count(self.address, "latest")
        if latest_nonce <= tx.nonce:
            return False, None
        # The nonce may have been read after our own attempt was mined, though the receipts were
        # asked for just before it: look once more before blaming a foreign sender.
        found = self._find_receipt(attempts)
        if found is not None:
            self.store.finalise(tx_id, found[0].id, found[1])
            return True, found[1]
        self.store.mark_nonce_taken(tx_id)
        log.error(
            "tx #%d (%s): nonce %d used by another transaction from %s", tx_id, tx.purpose, tx.nonce, self.address
        )
        return True, None

    def _find_receipt(self, attempts: list[TxAttempt]) -> tuple[TxAttempt, Any] | None:
        """The first attempt (newest first) with a mined receipt, and that receipt."""
        for attempt in attempts:
            receipt = self._receipt(attempt.tx_hash)
            if receipt is not None:
                return attempt, receipt
        return None

    def _receipt(self, tx_hash: str) -> Any:
        """The receipt of a mined tx; None while it is not in a block."""
        try:
            receipt = self.w3.eth.get_transaction_receipt(HexStr(tx_hash))
        except TransactionNotFound:
            return None
        return receipt if receipt is not None and receipt.get("blockNumber") is not None else None

    def is_stuck(self, attempt: TxAttempt, head: int) -> bool:
        """Accepted by a node, and not mined within the policy's seconds or blocks: bump it."""
        if attempt.broadcast_at is None:
            return False
        if now() - attempt.broadcast_at >= self.policy.bump_after_s:
            return True
        return bool(
            self.policy.bump_after_blocks
            and attempt.broadcast_block is not None
            and head - attempt.broadcast_block >= self.policy.bump_after_blocks
        )

    def outcome(self, tx_id: int, receipt: Any) -> Any:
        """The receipt of a final tx that succeeded; ContractRevert or ChainError otherwise."""
        current = self.store.record(tx_id)
        if current.state == TxState.MINED:
            return receipt if receipt is not None else self.w3.eth.get_transaction_receipt(HexStr(current.tx_hash))
        if current.state == TxState.FAILED and current.receipt_status == 0:
            raise ContractRevert(self._revert_reason(tx_id, current.mined_block), current.purpose)
        raise ChainError(f"{current.purpose}: tx #{tx_id} (nonce {current.nonce}) {current.state}: {current.error}")

    def _revert_reason(self, tx_id: int, block: int | None) -> str:
        tx = self.store.sent(tx_id)
        params: TxParams = {
            "from": self.address,
            "to": Web3.to_checksum_address(tx.to_address),
            "data": HexStr(tx.data),
            "value": Wei(tx.value),
        }
        try:
            # Replayed on the state of the block it was mined in, to learn why it reverted.
            self.w3.eth.call(params, block_identifier=block)
        except (ContractLogicError, ContractCustomError, Web3RPCError, ValueError) as exc:
            return revert_reason(exc)
        return "reverted (state changed between estimate and inclusion)"

    def reorged(self, fork_block: int) -> int:
        """After a reorg back to `fork_block`: every transaction recorded as mined above it is
        looked up again. One mined again elsewhere gets its new block; one the new chain does not
        hold goes back to PENDING, so check_pending() rebroadcasts it (same nonce, same signed
        bytes) or finds its nonce taken. Returns how many went back to PENDING."""
        reopened = 0
        for tx_id, tx_hash in self.store.mined_above(fork_block):
            receipt = self._receipt(tx_hash)
            if receipt is not None:
                self.store.move_to_block(tx_id, receipt["blockNumber"])
                continue
            self.store.reopen(tx_id)
            reopened += 1
        return reopened
