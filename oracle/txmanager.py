"""The oracle's transaction manager: one persisted nonce manager per key, fee bumps, recovery.

After the Chainlink node's transaction manager, in parts (oracle/tx/):
- store.py: every transaction is signed and written to the database (`sent_txs` +
  `tx_attempts`) before it is broadcast, so a crash at any point leaves a record to finish from,
  never a lost nonce; nonces come from a row-locked counter per (chain, key);
- broadcaster.py: signs, records and sends, and reads a node's refusals;
- confirmer.py: receipts; a transaction not mined `bump_after_s` seconds (or `bump_after_blocks`
  blocks) after its last broadcast is stuck, and the broadcaster re-signs it with the same nonce
  and fees raised by at least 12.5% (fees.py; EIP-1559: both maxFeePerGas and
  maxPriorityFeePerGas; legacy chains: gasPrice), and rebroadcasts it; `reorged(fork)`, called
  by ingestion when it repairs a reorg: a transaction the new chain lacks goes back to pending
  and is rebroadcast.

This module drives them: `send` → `wait` (or `transact` for both), `check_pending()` each loop
pass, and `recover()` on start, which checks the receipt of every in-flight transaction and
rebroadcasts the rest. RPC failures never leave a half-written state: before the record is written
nothing happened (`NotSent`); after it, the record is the truth and `check_pending()` finishes the job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractFunction

from oracle.db import Database, TxAttempt
from oracle.rpc import Backoff, RpcUnavailable, endpoint, is_transient
from oracle.tx import log
from oracle.tx.broadcaster import ACCEPTED, Broadcaster, NotSent
from oracle.tx.confirmer import ChainView, Confirmer
from oracle.tx.policy import TxPolicy
from oracle.tx.store import NewTx, TxRecord, TxStore
from tributa.chain.tx import TxResult
from tributa.errors import ChainError


class TxManager:
    """Sends from one key. `send` → `wait` (or `transact` for both); `check_pending` each loop pass."""

    def __init__(self, db: Database, w3: Web3, account: LocalAccount, policy: TxPolicy = TxPolicy()) -> None:
        self.db = db
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.policy = policy
        self.chain_id = int(w3.eth.chain_id)
        self._lock = threading.RLock()
        self.backoff = Backoff("txmanager", log)
        self.store = TxStore(db, self.chain_id, self.address)
        self.confirmer = Confirmer(w3, self.address, self.store, policy)
        self.broadcaster = Broadcaster(w3, account, self.chain_id, self.store, self.confirmer, policy, self.backoff)

    @classmethod
    def for_signer(cls, db: Database, signer: Any, policy: TxPolicy = TxPolicy()) -> TxManager:
        """A manager for the key of a tributa.chain.tx.Signer (same node, same account)."""
        return cls(db, signer.w3, signer.account, policy)

    # -- sending -------------------------------------------------------------------------------
    def send(
        self, call: ContractFunction, purpose: str, task_ids: Iterable[int] = (), value: int = 0, gas: int | None = None
    ) -> TxRecord:
        """Estimate, sign, record, broadcast a contract call; returns the (pending) record.

        A pending transaction with the same purpose and task ids is returned instead of sending
        a second one. A revert at estimation raises ContractRevert and records nothing.
        """
        return self._send(call.address, call._encode_transaction_data(), value, gas, purpose, task_ids, call.fn_name)

    def send_tx(
        self,
        to: str,
        data: bytes | str = b"",
        value: int = 0,
        gas: int | None = None,
        purpose: str = "transfer",
        task_ids: Iterable[int] = (),
    ) -> TxRecord:
        """The same for a raw call (or a plain transfer when `data` is empty)."""
        return self._send(
            Web3.to_checksum_address(to), HexStr(HexBytes(data).to_0x_hex()), value, gas, purpose, task_ids, purpose
        )

    def transact(
        self,
        call: ContractFunction,
        purpose: str,
        task_ids: Iterable[int] = (),
        value: int = 0,
        gas: int | None = None,
        timeout_s: float | None = None,
    ) -> TxResult:
        """send + wait, with the result shape of tributa.chain.tx.Signer.transact."""
        record = self.send(call, purpose, task_ids, value, gas)
        receipt = self.wait(record, timeout_s)
        return TxResult(
            HexBytes(receipt["transactionHash"]).to_0x_hex(), receipt["blockNumber"], receipt["gasUsed"], receipt
        )

    def _send(
        self,
        to: ChecksumAddress,
        data: HexStr,
        value: int,
        gas: int | None,
        purpose: str,
        task_ids: Iterable[int],
        label: str,
    ) -> TxRecord:
        ids = sorted({int(t) for t in task_ids})
        with self._lock:
            if ids:
                existing = self.store.pending_for(purpose, ids)
                if existing is not None:
                    log.info(
                        "%s for tasks %s is already in flight as tx #%d (nonce %d)",
                        purpose,
                        ids,
                        existing.id,
                        existing.nonce,
                    )
                    return existing
            tx_id = self.broadcaster.send(NewTx(to, data, value, gas, purpose, ids), label)
            return self.record(tx_id)

    # -- tracking ------------------------------------------------------------------------------
    def wait(self, record: TxRecord, timeout_s: float | None = None) -> Any:
        """Until `record` is mined: bumps it when stuck. Returns the receipt.

        Raises ContractRevert if it reverted, ChainError if it was not mined within the timeout
        or its nonce went to another transaction, RpcUnavailable if the node stayed unreachable
        for `outage_grace_s` (the record stays pending: `check_pending` finishes it).
        """
        timeout_s = self.policy.wait_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        delay = self.policy.poll_s
        unreachable_since: float | None = None
        first = True
        while True:
            try:
                with self._lock:
                    # First look: just the receipt (on an automining node the tx is already in a
                    # block); the full view of nonces and head is read only while it is pending.
                    final, receipt = self.confirmer.resolve(record.id) if first else (False, None)
                    if not final:
                        final, receipt = self._step(record.id, self.confirmer.view(), rebroadcast=False)
                first = False
                self.backoff.succeeded()
                unreachable_since = None
            except Exception as exc:
                if not is_transient(exc):
                    raise
                error = self.backoff.failed(exc, endpoint(self.w3))
                unreachable_since = unreachable_since or time.monotonic()
                retry_at = time.monotonic() + self.backoff.delay_s
                if retry_at - unreachable_since > self.policy.outage_grace_s or retry_at > deadline:
                    raise error from None
                time.sleep(self.backoff.delay_s)
                continue
            if final:
                return self.confirmer.outcome(record.id, receipt)
            if time.monotonic() >= deadline:
                current = self.record(record.id)
                raise ChainError(
                    f"{record.purpose}: tx #{record.id} (nonce {record.nonce}, {current.tx_hash}) not mined after "
                    f"{timeout_s:.0f}s; it stays recorded and is bumped and rebroadcast by check_pending()"
                )
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(1.0, delay * 1.5)

    def _step(self, tx_id: int, view: ChainView, rebroadcast: bool) -> tuple[bool, Any]:
        """One look at a pending tx: resolve it; else broadcast it where no node has it (never
        accepted, or the node lost it: its nonce is not below the node's pending count); else bump
        it if stuck."""
        final, receipt = self.confirmer.resolve(tx_id, view.mined_nonce)
        if final:
            return final, receipt
        newest = self.store.newest_live_attempt(tx_id)
        if newest is None:
            return False, None
        if not any(a.broadcast_at is not None for a in self.attempts(tx_id)):
            outcome = self.broadcaster.first_broadcast(tx_id)
            if outcome not in (*ACCEPTED, "mined"):
                log.error("tx #%d refused by the node and marked failed: %s", tx_id, outcome)
            return self.confirmer.resolve(tx_id) if outcome == "mined" else (outcome not in ACCEPTED, None)
        nonce = self.record(tx_id).nonce
        if rebroadcast or newest.broadcast_at is None or nonce >= view.pending_nonce:
            if nonce >= view.pending_nonce and not rebroadcast:
                log.warning("tx #%d (nonce %d) is not in the node's pool any more; rebroadcasting", tx_id, nonce)
            if self.broadcaster.broadcast(newest) == "nonce-too-low":
                return self.confirmer.resolve(tx_id)
        elif self.confirmer.is_stuck(newest, view.head):
            self.broadcaster.bump(tx_id)
        return False, None

    def reorged(self, fork_block: int) -> int:
        """After a reorg back to `fork_block`: what was mined above it is looked up again; returns
        how many went back to PENDING (see Confirmer.reorged)."""
        with self._lock:
            return self.confirmer.reorged(fork_block)

    def check_pending(self) -> list[TxRecord]:
        """One pass over every in-flight tx of this key: receipts, first broadcasts, fee bumps.

        Call it from the worker loop. Returns the records that became final in this pass.
        """
        return self._pass(rebroadcast=False)

    def recover(self) -> list[TxRecord]:
        """On start: settle what was mined while we were away, rebroadcast the rest as-is."""
        done = self._pass(rebroadcast=True)
        pending = self.pending()
        log.info(
            "txmanager %s: %d txs finished while away, %d still in flight (rebroadcast)",
            self.address,
            len(done),
            len(pending),
        )
        return done

    def _pass(self, rebroadcast: bool) -> list[TxRecord]:
        if not self.backoff.ready():
            return []
        done: list[TxRecord] = []
        try:
            with self._lock:
                pending = self.pending()
                if not pending:  # the common case: no RPC at all
                    return []
                view = self.confirmer.view()
                for record in pending:
                    if self._step(record.id, view, rebroadcast)[0]:
                        done.append(self.record(record.id))
        except Exception as exc:
            if is_transient(exc):
                raise self.backoff.failed(exc, endpoint(self.w3)) from None
            raise
        self.backoff.succeeded()
        return done

    # -- reading -------------------------------------------------------------------------------
    def record(self, tx_id: int) -> TxRecord:
        return self.store.record(tx_id)

    def pending(self) -> list[TxRecord]:
        return self.store.pending()

    def pending_task_ids(self, purpose: str | None = None) -> set[int]:
        """Tasks with a transaction in flight (e.g. so a recovery does not send a second one)."""
        return {t for r in self.pending() if purpose is None or r.purpose == purpose for t in r.task_ids}

    def attempts(self, tx_id: int) -> list[TxAttempt]:
        return self.store.attempts(tx_id)


__all__ = ["ChainView", "NotSent", "RpcUnavailable", "TxManager", "TxPolicy", "TxRecord"]
