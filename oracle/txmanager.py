"""The oracle's transaction manager: one persisted nonce manager per key, fee bumps, recovery.

After the Chainlink node's transaction manager:
- every transaction is signed and written to the database (`sent_txs` + `tx_attempts`) before
  it is broadcast, so a crash at any point leaves a record to finish from, never a lost nonce;
- nonces come from a row-locked counter per (chain, key): the next nonce is the highest of the
  chain's pending count and one past the highest nonce still in flight here (so a node that lost
  its mempool, or a restart, never re-uses an in-flight nonce, and a chain reset never leaves a gap);
- a transaction not mined `bump_after_s` seconds (or `bump_after_blocks` blocks) after its last
  broadcast is re-signed with the same nonce and fees raised by at least 12.5% (EIP-1559: both
  maxFeePerGas and maxPriorityFeePerGas; legacy chains: gasPrice), and rebroadcast;
- `recover()` on start checks the receipt of every in-flight transaction and rebroadcasts the rest;
- `reorged(fork)`, called by ingestion when it repairs a reorg, looks again at what was mined
  above the fork point: a transaction the new chain lacks goes back to pending and is rebroadcast.

RPC failures never leave a half-written state: before the record is written nothing happened
(`NotSent`); after it, the record is the truth and `check_pending()` finishes the job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, TransactionNotFound, Web3RPCError

from oracle.db import Database, SentTx, TxAttempt, TxKey, TxState, now
from oracle.rpc import Backoff, RpcUnavailable, endpoint, is_transient
from tributa.chain.tx import TxResult, is_insufficient_funds, revert_reason
from tributa.errors import ChainError, ContractRevert, InsufficientFunds

log = logging.getLogger("tributa.oracle.txmanager")

_ALREADY_KNOWN = ("already known", "already imported", "known transaction", "alreadyknown")
_NONCE_TOO_LOW = ("nonce too low", "nonce is too low", "oldnonce")
_UNDERPRICED = ("underpriced", "fee too low", "replacement fee too low")


class NotSent(ChainError):
    """Nothing was signed or recorded: the call can simply be made again later."""


@dataclass(frozen=True)
class TxPolicy:
    """When to bump, by how much, and how long to wait."""

    bump_after_s: float = 30.0
    bump_after_blocks: int = 3  # 0: bump on time only
    bump_bps: int = 1250  # +12.5%: above geth's 10% replacement rule
    max_fee_per_gas: int | None = None  # a cap in wei; bumping stops there
    wait_timeout_s: float = 120.0
    poll_s: float = 0.05  # first receipt poll; grows to 1 s
    outage_grace_s: float = 5.0  # how long wait() rides out an unreachable node before giving up
    gas_margin_pct: int = 20  # estimate * 1.2 + gas_extra
    gas_extra: int = 10_000
    legacy: bool = False  # force gasPrice transactions (chosen anyway when blocks have no base fee)


@dataclass(frozen=True)
class TxRecord:
    """A snapshot of one logical transaction (one nonce) and its latest attempt."""

    id: int
    nonce: int
    purpose: str
    task_ids: tuple[int, ...]
    state: str
    tx_hash: str  # the mined attempt's hash, else the newest attempt's
    attempts: int
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    gas_price: int | None
    mined_block: int | None
    receipt_status: int | None
    gas_used: int | None
    error: str | None

    @property
    def final(self) -> bool:
        return self.state != TxState.PENDING


@dataclass(frozen=True)
class ChainView:
    """What one pass needs to know about the chain, read once."""

    head: int
    mined_nonce: int  # the key's nonce in the latest block
    pending_nonce: int  # ... counting the node's pool


def _lower(exc: Exception) -> str:
    return revert_reason(exc).lower()


def _bump(value: int, bps: int) -> int:
    return value + max(1, -(-value * bps // 10_000))  # ceil, and always at least +1 wei


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
        self._head_hint: int | None = None  # latest block number seen (for the blocks-stuck rule)

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
            Web3.to_checksum_address(to), HexBytes(data).to_0x_hex(), value, gas, purpose, task_ids, purpose
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
        self, to: str, data: str, value: int, gas: int | None, purpose: str, task_ids: Iterable[int], label: str
    ) -> TxRecord:
        ids = sorted({int(t) for t in task_ids})
        with self._lock:
            if ids:
                existing = self._pending_for(purpose, ids)
                if existing is not None:
                    log.info(
                        "%s for tasks %s is already in flight as tx #%d (nonce %d)",
                        purpose,
                        ids,
                        existing.id,
                        existing.nonce,
                    )
                    return existing
            try:
                gas = gas if gas is not None else self._estimate(to, data, value, label)
                tx_id = self._record_new(to, data, value, gas, purpose, ids)
            except (ContractRevert, InsufficientFunds):
                raise
            except Exception as exc:
                if is_transient(exc):
                    raise NotSent(str(self.backoff.failed(exc, endpoint(self.w3)))) from None
                if isinstance(exc, (Web3RPCError, ValueError)):
                    raise NotSent(
                        f"{label}: the node refused to prepare the transaction: {revert_reason(exc)}"
                    ) from None
                raise
            self._broadcast_new(tx_id, label, value)
            return self.record(tx_id)

    def _estimate(self, to: str, data: str, value: int, label: str) -> int:
        params = {"from": self.address, "to": to, "data": data, "value": value}
        try:
            # eth_estimateGas runs the call: a revert surfaces here, before anything is signed.
            estimate = self.w3.eth.estimate_gas(params)
        except (ContractLogicError, ContractCustomError) as exc:
            raise ContractRevert(revert_reason(exc), label) from None
        except (Web3RPCError, ValueError) as exc:
            if is_insufficient_funds(exc):
                raise self._insufficient(label, value) from None
            if "revert" in _lower(exc):
                raise ContractRevert(revert_reason(exc), label) from None
            raise
        return estimate * (100 + self.policy.gas_margin_pct) // 100 + self.policy.gas_extra

    def _insufficient(self, label: str, value: int) -> InsufficientFunds:
        balance = self.w3.eth.get_balance(self.address)
        return InsufficientFunds(
            f"{label}: account {self.address} cannot pay {Web3.from_wei(value, 'ether')} ETH plus gas "
            f"(balance {Web3.from_wei(balance, 'ether')} ETH); fund it first"
        )

    def _record_new(self, to: str, data: str, value: int, gas: int, purpose: str, task_ids: list[int]) -> int:
        """Take a nonce under the key's row lock, sign, and write tx + attempt in one transaction."""
        fees = self._fees()
        # Read before the lock (no RPC while holding it): transactions recorded by another process
        # in between are covered by the in-flight maximum read under the lock.
        chain_pending = self.w3.eth.get_transaction_count(self.address, "pending")
        with self.db.session() as s:
            key = self._key(s)
            in_flight = s.execute(
                select(func.max(SentTx.nonce)).where(
                    SentTx.chain_id == self.chain_id, SentTx.sender == self.address, SentTx.state == TxState.PENDING
                )
            ).scalar()
            nonce = max(chain_pending, -1 if in_flight is None else in_flight + 1)
            if key.next_nonce > nonce:
                log.warning(
                    "nonce counter for %s says %d but the chain and in-flight txs say %d (chain reset, or txs "
                    "dropped); continuing from %d",
                    self.address,
                    key.next_nonce,
                    nonce,
                    nonce,
                )
            tx = SentTx(
                chain_id=self.chain_id,
                sender=self.address,
                nonce=nonce,
                purpose=purpose,
                task_ids=json.dumps(task_ids),
                to_address=to,
                data=data,
                value=value,
                gas=gas,
                state=TxState.PENDING,
                created_at=now(),
                updated_at=now(),
            )
            s.add(tx)
            s.flush()
            s.add(self._sign(tx, fees))
            key.next_nonce = nonce + 1
            key.updated_at = now()
            return tx.id

    def _key(self, s: Session) -> TxKey:
        """The key's nonce row, locked until the transaction ends.

        Insert-or-ignore comes first: it creates the row once, and on SQLite it is the write
        that takes the database's write lock before anything is read (so two processes queue
        instead of racing); on PostgreSQL the row is then locked FOR UPDATE.
        """
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        s.execute(
            dialect.insert(TxKey)
            .values(chain_id=self.chain_id, address=self.address, next_nonce=0, updated_at=now())
            .on_conflict_do_nothing()
        )
        return s.get(TxKey, (self.chain_id, self.address), with_for_update=True, populate_existing=True)

    def _fees(self, floor: TxAttempt | None = None) -> dict[str, int]:
        """Fees for a new attempt: the market's, and at least +bump over `floor` when bumping."""
        block = self.w3.eth.get_block("latest")
        self._head_hint = int(block["number"])
        base = None if self.policy.legacy else block.get("baseFeePerGas")
        if base is None:
            price = int(self.w3.eth.gas_price)
            if floor is not None and floor.gas_price is not None:
                price = max(price, _bump(floor.gas_price, self.policy.bump_bps))
            if self.policy.max_fee_per_gas is not None:
                price = min(price, self.policy.max_fee_per_gas)
            return {"gasPrice": price}
        priority = int(self.w3.eth.max_priority_fee)
        max_fee = 2 * int(base) + priority
        if floor is not None and floor.max_fee_per_gas is not None:
            priority = max(priority, _bump(floor.max_priority_fee_per_gas or 0, self.policy.bump_bps))
            max_fee = max(max_fee, _bump(floor.max_fee_per_gas, self.policy.bump_bps))
        if self.policy.max_fee_per_gas is not None:
            max_fee = min(max_fee, self.policy.max_fee_per_gas)
        return {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(priority, max_fee)}

    def _sign(self, tx: SentTx, fees: dict[str, int]) -> TxAttempt:
        body = {
            "chainId": self.chain_id,
            "nonce": tx.nonce,
            "to": tx.to_address,
            "value": tx.value,
            "gas": tx.gas,
            "data": tx.data,
            **fees,
        }
        signed = self.account.sign_transaction(body)
        return TxAttempt(
            tx_id=tx.id,
            tx_hash=HexBytes(signed.hash).to_0x_hex(),
            raw_tx=HexBytes(signed.raw_transaction).to_0x_hex(),
            max_fee_per_gas=fees.get("maxFeePerGas"),
            max_priority_fee_per_gas=fees.get("maxPriorityFeePerGas"),
            gas_price=fees.get("gasPrice"),
            state=TxState.PENDING,
            created_at=now(),
        )

    # -- broadcasting --------------------------------------------------------------------------
    def _broadcast_new(self, tx_id: int, label: str, value: int) -> None:
        """First broadcast of a freshly recorded tx: raises if the node refused it outright."""
        try:
            outcome = self._first_broadcast(tx_id)
        except Exception as exc:
            if is_transient(exc):
                self.backoff.failed(exc, endpoint(self.w3))
                log.warning("%s: tx #%d is recorded and will be broadcast when the node answers", label, tx_id)
                return
            raise
        if outcome in ("sent", "known", "mined"):
            return
        if "insufficient funds" in outcome:
            raise self._insufficient(label, value)
        raise ChainError(f"{label}: the node rejected the transaction: {outcome}")

    def _first_broadcast(self, tx_id: int) -> str:
        """Broadcast a tx no node has accepted yet. 'nonce too low' then means another sender used
        the nonce (unless one of our attempts was mined): re-sign with a fresh one. Any other
        refusal marks it failed and frees the nonce."""
        outcome = self._broadcast(self._newest_attempt(tx_id))
        if outcome == "nonce-too-low":
            if self._resolve(tx_id, allow_replaced=False)[0]:
                return "mined"
            self._renonce(tx_id)
            outcome = self._broadcast(self._newest_attempt(tx_id))
        if outcome not in ("sent", "known"):
            self._fail_unsent(tx_id, outcome)
        return outcome

    def _broadcast(self, attempt: TxAttempt) -> str:
        """Send one attempt's raw bytes; 'sent', 'known', 'nonce-too-low', 'underpriced' or the error."""
        try:
            self.w3.eth.send_raw_transaction(attempt.raw_tx)
            outcome = "sent"
        except (Web3RPCError, ValueError) as exc:
            if is_transient(exc):
                raise
            message = _lower(exc)
            if any(m in message for m in _ALREADY_KNOWN):
                outcome = "known"
            elif any(m in message for m in _NONCE_TOO_LOW):
                outcome = "nonce-too-low"
            elif any(m in message for m in _UNDERPRICED):
                outcome = "underpriced"
            else:
                outcome = revert_reason(exc)
        with self.db.session() as s:
            row = s.get(TxAttempt, attempt.id)
            if outcome in ("sent", "known"):
                row.broadcast_at = now()
                row.broadcast_block = self._head_hint
                row.error = None
            else:
                row.error = outcome
        return outcome

    def _renonce(self, tx_id: int) -> None:
        fees = self._fees()
        chain_pending = self.w3.eth.get_transaction_count(self.address, "pending")
        with self.db.session() as s:
            key = self._key(s)
            tx = s.get(SentTx, tx_id)
            for old in s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).scalars():
                old.state, old.error = TxState.FAILED, f"nonce {tx.nonce} was already used by another transaction"
            tx.nonce = max(chain_pending, key.next_nonce)
            tx.updated_at = now()
            s.add(self._sign(tx, fees))
            key.next_nonce = tx.nonce + 1
            log.warning(
                "tx #%d: nonce taken by another sender of %s; re-signed with nonce %d", tx_id, self.address, tx.nonce
            )

    def _fail_unsent(self, tx_id: int, reason: str) -> None:
        """The node refused a tx that never reached a mempool: mark it failed and free its nonce."""
        with self.db.session() as s:
            key = self._key(s)
            tx = s.get(SentTx, tx_id)
            tx.state, tx.error, tx.updated_at = TxState.FAILED, f"rejected by the node: {reason}", now()
            for attempt in s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).scalars():
                attempt.state = TxState.FAILED
            if key.next_nonce == tx.nonce + 1:
                key.next_nonce = tx.nonce

    # -- tracking ------------------------------------------------------------------------------
    def _resolve(self, tx_id: int, latest_nonce: int | None = None, allow_replaced: bool = True) -> tuple[bool, Any]:
        """Look for a receipt of any attempt; finalise the record if found. Returns (final, receipt).

        With no receipt but the key's mined nonce past this one, a tx some node accepted was
        replaced by a foreign transaction (REPLACED); one no node ever accepted is left for
        `_first_broadcast` to re-sign."""
        with self.db.session() as s:
            tx = s.get(SentTx, tx_id)
            if tx.state != TxState.PENDING:
                return True, None
            attempts = list(
                s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id).order_by(TxAttempt.id.desc())).scalars()
            )
        found = self._find_receipt(attempts)
        if found is not None:
            self._finalise(tx_id, found[0].id, found[1])
            return True, found[1]
        ever_broadcast = any(a.broadcast_at is not None for a in attempts)
        if allow_replaced and ever_broadcast and latest_nonce is None:
            latest_nonce = self.w3.eth.get_transaction_count(self.address, "latest")
        if allow_replaced and ever_broadcast and latest_nonce > tx.nonce:
            # The nonce may have been read after our own attempt was mined, though the receipts
            # were asked for just before it: look once more before blaming a foreign sender.
            found = self._find_receipt(attempts)
            if found is not None:
                self._finalise(tx_id, found[0].id, found[1])
                return True, found[1]
            with self.db.session() as s:
                row = s.get(SentTx, tx_id)
                row.state, row.updated_at = TxState.REPLACED, now()
                row.error = f"nonce {row.nonce} was used by a transaction this manager did not send"
            log.error(
                "tx #%d (%s): nonce %d used by another transaction from %s", tx_id, tx.purpose, tx.nonce, self.address
            )
            return True, None
        return False, None

    def _find_receipt(self, attempts: list[TxAttempt]) -> tuple[TxAttempt, Any] | None:
        """The first attempt (newest first) with a mined receipt, and that receipt."""
        for attempt in attempts:
            try:
                receipt = self.w3.eth.get_transaction_receipt(attempt.tx_hash)
            except TransactionNotFound:
                continue
            if receipt is not None and receipt.get("blockNumber") is not None:
                return attempt, receipt
        return None

    def _finalise(self, tx_id: int, attempt_id: int, receipt: Any) -> None:
        with self.db.session() as s:
            tx = s.get(SentTx, tx_id)
            ok = receipt["status"] == 1
            tx.state = TxState.MINED if ok else TxState.FAILED
            tx.mined_tx_hash = HexBytes(receipt["transactionHash"]).to_0x_hex()
            tx.mined_block = receipt["blockNumber"]
            tx.receipt_status = receipt["status"]
            tx.gas_used = receipt["gasUsed"]
            tx.updated_at = now()
            if not ok:
                tx.error = "reverted on-chain"
            for attempt in s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id)).scalars():
                attempt.state = TxState.MINED if attempt.id == attempt_id else TxState.REPLACED

    def _is_stuck(self, attempt: TxAttempt, head: int) -> bool:
        if attempt.broadcast_at is None:
            return False
        if now() - attempt.broadcast_at >= self.policy.bump_after_s:
            return True
        return bool(
            self.policy.bump_after_blocks
            and attempt.broadcast_block is not None
            and head - attempt.broadcast_block >= self.policy.bump_after_blocks
        )

    def _bump(self, tx_id: int) -> bool:
        """Re-sign with higher fees (same nonce) and broadcast; False when capped or refused."""
        latest = self._newest_attempt(tx_id)
        fees = self._fees(floor=latest)
        old_fee = latest.max_fee_per_gas if latest.max_fee_per_gas is not None else latest.gas_price
        new_fee = fees.get("maxFeePerGas", fees.get("gasPrice"))
        if new_fee <= old_fee:
            log.error("tx #%d stuck at the fee cap (%d wei); not bumping further", tx_id, old_fee)
            return False
        with self.db.session() as s:
            tx = s.get(SentTx, tx_id)
            attempt = self._sign(tx, fees)
            s.add(attempt)
            s.flush()
            attempt_id = attempt.id
        outcome = self._broadcast(self._attempt(attempt_id))
        if outcome in ("sent", "known"):
            with self.db.session() as s:
                for older in s.execute(
                    select(TxAttempt).where(
                        TxAttempt.tx_id == tx_id, TxAttempt.id != attempt_id, TxAttempt.state == TxState.PENDING
                    )
                ).scalars():
                    older.state = TxState.REPLACED
            log.info("tx #%d (nonce %d) bumped to %s; %s", tx_id, tx.nonce, fees, self._attempt(attempt_id).tx_hash)
            return True
        with self.db.session() as s:
            s.get(TxAttempt, attempt_id).state = TxState.FAILED
        log.warning("tx #%d: bumped attempt refused by the node: %s", tx_id, outcome)
        return False

    def _view(self) -> ChainView:
        self._head_hint = int(self.w3.eth.block_number)
        return ChainView(
            head=self._head_hint,
            mined_nonce=self.w3.eth.get_transaction_count(self.address, "latest"),
            pending_nonce=self.w3.eth.get_transaction_count(self.address, "pending"),
        )

    def _step(self, tx_id: int, view: ChainView, rebroadcast: bool) -> tuple[bool, Any]:
        """One look at a pending tx: resolve it; else broadcast it where no node has it (never
        accepted, or the node lost it: its nonce is not below the node's pending count); else bump
        it if stuck."""
        final, receipt = self._resolve(tx_id, view.mined_nonce)
        if final:
            return final, receipt
        newest = self._newest_live_attempt(tx_id)
        if newest is None:
            return False, None
        attempts = self.attempts(tx_id)
        if not any(a.broadcast_at is not None for a in attempts):
            outcome = self._first_broadcast(tx_id)
            if outcome not in ("sent", "known", "mined"):
                log.error("tx #%d refused by the node and marked failed: %s", tx_id, outcome)
            return self._resolve(tx_id) if outcome == "mined" else (outcome not in ("sent", "known"), None)
        nonce = self.record(tx_id).nonce
        if rebroadcast or newest.broadcast_at is None or nonce >= view.pending_nonce:
            if nonce >= view.pending_nonce and not rebroadcast:
                log.warning("tx #%d (nonce %d) is not in the node's pool any more; rebroadcasting", tx_id, nonce)
            outcome = self._broadcast(newest)
            if outcome == "nonce-too-low":
                return self._resolve(tx_id)
        elif self._is_stuck(newest, view.head):
            self._bump(tx_id)
        return False, None

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
                    final, receipt = self._resolve(record.id) if first else (False, None)
                    if not final:
                        final, receipt = self._step(record.id, self._view(), rebroadcast=False)
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
                return self._outcome(record.id, receipt)
            if time.monotonic() >= deadline:
                current = self.record(record.id)
                raise ChainError(
                    f"{record.purpose}: tx #{record.id} (nonce {record.nonce}, {current.tx_hash}) not mined after "
                    f"{timeout_s:.0f}s; it stays recorded and is bumped and rebroadcast by check_pending()"
                )
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(1.0, delay * 1.5)

    def _outcome(self, tx_id: int, receipt: Any) -> Any:
        current = self.record(tx_id)
        if current.state == TxState.MINED:
            return receipt if receipt is not None else self.w3.eth.get_transaction_receipt(current.tx_hash)
        if current.state == TxState.FAILED and current.receipt_status == 0:
            raise ContractRevert(self._revert_reason(tx_id, current.mined_block), current.purpose)
        raise ChainError(f"{current.purpose}: tx #{tx_id} (nonce {current.nonce}) {current.state}: {current.error}")

    def _revert_reason(self, tx_id: int, block: int | None) -> str:
        with self.db.session() as s:
            tx = s.get(SentTx, tx_id)
            params = {"from": self.address, "to": tx.to_address, "data": tx.data, "value": tx.value}
        try:
            # Replayed on the state of the block it was mined in, to learn why it reverted.
            self.w3.eth.call(params, block_identifier=block)
        except (ContractLogicError, ContractCustomError) as exc:
            return revert_reason(exc)
        except (Web3RPCError, ValueError) as exc:
            return revert_reason(exc)
        return "reverted (state changed between estimate and inclusion)"

    def reorged(self, fork_block: int) -> int:
        """After a reorg back to `fork_block`: every transaction recorded as mined above it is
        looked up again. One mined again elsewhere gets its new block; one the new chain does not
        hold goes back to PENDING, so check_pending() rebroadcasts it (same nonce, same signed
        bytes) or finds its nonce taken. Returns how many went back to PENDING."""
        with self._lock:
            with self.db.session() as s:
                rows = s.execute(
                    select(SentTx.id, SentTx.mined_tx_hash).where(
                        SentTx.chain_id == self.chain_id,
                        SentTx.sender == self.address,
                        SentTx.mined_block > fork_block,
                        SentTx.state.in_((TxState.MINED, TxState.FAILED)),
                    )
                ).all()
            reopened = 0
            for tx_id, tx_hash in rows:
                try:
                    receipt = self.w3.eth.get_transaction_receipt(tx_hash)
                except TransactionNotFound:
                    receipt = None
                if receipt is not None and receipt.get("blockNumber") is not None:
                    with self.db.session() as s:
                        s.get(SentTx, tx_id).mined_block = receipt["blockNumber"]
                    continue
                self._reopen(tx_id)
                reopened += 1
        return reopened

    def _reopen(self, tx_id: int) -> None:
        with self.db.session() as s:
            tx = s.get(SentTx, tx_id)
            log.warning(
                "tx #%d (%s, nonce %d) was reorged out of block %s; back to pending",
                tx_id,
                tx.purpose,
                tx.nonce,
                tx.mined_block,
            )
            tx.state, tx.updated_at, tx.error = TxState.PENDING, now(), None
            tx.mined_tx_hash = tx.mined_block = tx.receipt_status = tx.gas_used = None
            for attempt in s.execute(
                select(TxAttempt).where(TxAttempt.tx_id == tx_id, TxAttempt.state == TxState.MINED)
            ).scalars():
                attempt.state = TxState.PENDING

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
                view = self._view()
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
        with self.db.session() as s:
            tx = s.get(SentTx, tx_id)
            if tx is None:
                raise ChainError(f"no transaction #{tx_id} in the oracle's database")
            attempts = list(
                s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id).order_by(TxAttempt.id)).scalars()
            )
            return self._snapshot(tx, attempts)

    @staticmethod
    def _snapshot(tx: SentTx, attempts: list[TxAttempt]) -> TxRecord:
        live = [a for a in attempts if a.state != TxState.FAILED] or attempts
        shown = next((a for a in attempts if a.tx_hash == tx.mined_tx_hash), None) or live[-1]
        return TxRecord(
            id=tx.id,
            nonce=tx.nonce,
            purpose=tx.purpose,
            task_ids=tuple(json.loads(tx.task_ids)),
            state=tx.state,
            tx_hash=tx.mined_tx_hash or shown.tx_hash,
            attempts=len(attempts),
            max_fee_per_gas=shown.max_fee_per_gas,
            max_priority_fee_per_gas=shown.max_priority_fee_per_gas,
            gas_price=shown.gas_price,
            mined_block=tx.mined_block,
            receipt_status=tx.receipt_status,
            gas_used=tx.gas_used,
            error=tx.error,
        )

    def pending(self) -> list[TxRecord]:
        with self.db.session() as s:
            ids = (
                s.execute(
                    select(SentTx.id)
                    .where(
                        SentTx.chain_id == self.chain_id, SentTx.sender == self.address, SentTx.state == TxState.PENDING
                    )
                    .order_by(SentTx.nonce, SentTx.id)
                )
                .scalars()
                .all()
            )
        return [self.record(i) for i in ids]

    def pending_task_ids(self, purpose: str | None = None) -> set[int]:
        """Tasks with a transaction in flight (e.g. so a recovery does not send a second one)."""
        return {t for r in self.pending() if purpose is None or r.purpose == purpose for t in r.task_ids}

    def attempts(self, tx_id: int) -> list[TxAttempt]:
        with self.db.session() as s:
            rows = list(s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id).order_by(TxAttempt.id)).scalars())
            s.expunge_all()
        return rows

    def _pending_for(self, purpose: str, task_ids: list[int]) -> TxRecord | None:
        with self.db.session() as s:
            tx_id = s.execute(
                select(SentTx.id).where(
                    SentTx.chain_id == self.chain_id,
                    SentTx.sender == self.address,
                    SentTx.state == TxState.PENDING,
                    SentTx.purpose == purpose,
                    SentTx.task_ids == json.dumps(task_ids),
                )
            ).scalar()
        return None if tx_id is None else self.record(tx_id)

    def _attempt(self, attempt_id: int) -> TxAttempt:
        with self.db.session() as s:
            row = s.get(TxAttempt, attempt_id)
            s.expunge(row)
            return row

    def _newest_attempt(self, tx_id: int) -> TxAttempt:
        with self.db.session() as s:
            row = (
                s.execute(select(TxAttempt).where(TxAttempt.tx_id == tx_id).order_by(TxAttempt.id.desc()))
                .scalars()
                .first()
            )
            s.expunge(row)
            return row

    def _newest_live_attempt(self, tx_id: int) -> TxAttempt | None:
        with self.db.session() as s:
            row = (
                s.execute(
                    select(TxAttempt)
                    .where(TxAttempt.tx_id == tx_id, TxAttempt.state != TxState.FAILED)
                    .order_by(TxAttempt.id.desc())
                )
                .scalars()
                .first()
            )
            if row is not None:
                s.expunge(row)
            return row


__all__ = ["ChainView", "NotSent", "RpcUnavailable", "TxManager", "TxPolicy", "TxRecord"]
