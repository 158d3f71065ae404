"""Signing and sending: a new transaction is estimated, signed and recorded before any node sees it.

RPC failures never leave a half-written state: before the record is written nothing happened
(`NotSent`); after it, the record is the truth and the manager's `check_pending()` finishes the job.

A node's refusal is read from its message: "already known" (it has the tx: as good as sent),
"nonce too low" (the nonce is used: by one of our own attempts, else by another sender, and the tx
is then re-signed with a fresh nonce), "underpriced" (a replacement not raised enough), anything
else: refused. A fee bump re-signs the same nonce with higher fees (fees.py) and rebroadcasts.
"""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.types import TxParams, Wei

from oracle.db import SentTx, TxAttempt, TxState, now
from oracle.rpc import Backoff, endpoint, is_transient
from oracle.tx import log
from oracle.tx.confirmer import Confirmer
from oracle.tx.fees import Fees, Market, next_fees, priced_on, top_fee
from oracle.tx.policy import TxPolicy
from oracle.tx.store import NewTx, TxStore
from tributa.chain.tx import is_insufficient_funds, revert_reason
from tributa.errors import ChainError, ContractRevert, InsufficientFunds

_ALREADY_KNOWN = ("already known", "already imported", "known transaction", "alreadyknown")
_NONCE_TOO_LOW = ("nonce too low", "nonce is too low", "oldnonce")
_UNDERPRICED = ("underpriced", "fee too low", "replacement fee too low")

# Outcomes of a broadcast where a node now holds the attempt; any other is a refusal.
ACCEPTED = ("sent", "known")


class NotSent(ChainError):
    """Nothing was signed or recorded: the call can simply be made again later."""


def fees_of(attempt: TxAttempt) -> Fees:
    """The fee fields an attempt was signed with."""
    fields = {
        "maxFeePerGas": attempt.max_fee_per_gas,
        "maxPriorityFeePerGas": attempt.max_priority_fee_per_gas,
        "gasPrice": attempt.gas_price,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _lower(exc: Exception) -> str:
    return revert_reason(exc).lower()


def _refusal(exc: Exception) -> str:
    """A node's refusal of a raw transaction, as an outcome: 'known', 'nonce-too-low',
    'underpriced', or the node's own message."""
    message = _lower(exc)
    if any(m in message for m in _ALREADY_KNOWN):
        return "known"
    if any(m in message for m in _NONCE_TOO_LOW):
        return "nonce-too-low"
    if any(m in message for m in _UNDERPRICED):
        return "underpriced"
    return revert_reason(exc)


class Broadcaster:
    """Signs and sends the transactions of one key."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        chain_id: int,
        store: TxStore,
        confirmer: Confirmer,
        policy: TxPolicy,
        backoff: Backoff,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.chain_id = chain_id
        self.store = store
        self.confirmer = confirmer  # asked whether an attempt of ours used a nonce the node calls used
        self.policy = policy
        self.backoff = backoff  # the manager's: an unreachable node here counts toward its outage

    # -- new transactions ----------------------------------------------------------------------
    def send(self, new: NewTx, label: str) -> int:
        """Estimate, sign, record and broadcast `new`; returns its id.

        Raises, with nothing recorded: ContractRevert (a revert at estimation), InsufficientFunds,
        NotSent (the node unreachable, or refusing to prepare it). Once recorded, an unreachable
        node is no error (check_pending broadcasts it later); an outright refusal is a ChainError.
        """
        try:
            gas = new.gas if new.gas is not None else self._estimate(new, label)
            tx_id = self._record(new, gas)
        except (ContractRevert, InsufficientFunds):
            raise
        except Exception as exc:
            if is_transient(exc):
                raise NotSent(str(self.backoff.failed(exc, endpoint(self.w3)))) from None
            if isinstance(exc, (Web3RPCError, ValueError)):
                raise NotSent(f"{label}: the node refused to prepare the transaction: {revert_reason(exc)}") from None
            raise
        self._broadcast_new(tx_id, label, new.value)
        return tx_id

    def _estimate(self, new: NewTx, label: str) -> int:
        params: TxParams = {"from": self.address, "to": new.to, "data": new.data, "value": Wei(new.value)}
        try:
            # eth_estimateGas runs the call: a revert surfaces here, before anything is signed.
            estimate = self.w3.eth.estimate_gas(params)
        except (ContractLogicError, ContractCustomError) as exc:
            raise ContractRevert(revert_reason(exc), label) from None
        except (Web3RPCError, ValueError) as exc:
            if is_insufficient_funds(exc):
                raise self._insufficient(label, new.value) from None
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

    def _record(self, new: NewTx, gas: int) -> int:
        fees = self.fees()
        # Read before the store takes the key's row lock: no RPC while holding it.
        chain_pending = self.w3.eth.get_transaction_count(self.address, "pending")
        return self.store.record_new(new, gas, chain_pending, lambda tx: self.sign(tx, fees))

    def _broadcast_new(self, tx_id: int, label: str, value: int) -> None:
        """First broadcast of a freshly recorded tx: raises if the node refused it outright."""
        try:
            outcome = self.first_broadcast(tx_id)
        except Exception as exc:
            if is_transient(exc):
                self.backoff.failed(exc, endpoint(self.w3))
                log.warning("%s: tx #%d is recorded and will be broadcast when the node answers", label, tx_id)
                return
            raise
        if outcome in (*ACCEPTED, "mined"):
            return
        if "insufficient funds" in outcome:
            raise self._insufficient(label, value)
        raise ChainError(f"{label}: the node rejected the transaction: {outcome}")

    # -- broadcasting --------------------------------------------------------------------------
    def first_broadcast(self, tx_id: int) -> str:
        """Broadcast a tx no node has accepted yet; the outcome, or 'mined'. 'nonce too low' then
        means another sender used the nonce (unless one of our attempts was mined): re-sign with a
        fresh one. Any other refusal marks it failed and frees the nonce."""
        outcome = self.broadcast(self.store.newest_attempt(tx_id))
        if outcome == "nonce-too-low":
            if self.confirmer.resolve(tx_id, allow_replaced=False)[0]:
                return "mined"
            self._renonce(tx_id)
            outcome = self.broadcast(self.store.newest_attempt(tx_id))
        if outcome not in ACCEPTED:
            self.store.fail_unsent(tx_id, outcome)
        return outcome

    def broadcast(self, attempt: TxAttempt) -> str:
        """Send one attempt's raw bytes; 'sent', 'known', 'nonce-too-low', 'underpriced' or the error."""
        try:
            self.w3.eth.send_raw_transaction(HexStr(attempt.raw_tx))
            outcome = "sent"
        except (Web3RPCError, ValueError) as exc:
            if is_transient(exc):
                raise
            outcome = _refusal(exc)
        if outcome in ACCEPTED:
            self.store.mark_accepted(attempt.id, self.confirmer.head_hint)
        else:
            self.store.mark_refused(attempt.id, outcome)
        return outcome

    def _renonce(self, tx_id: int) -> None:
        fees = self.fees()
        chain_pending = self.w3.eth.get_transaction_count(self.address, "pending")
        nonce = self.store.renonce(tx_id, chain_pending, lambda tx: self.sign(tx, fees))
        log.warning("tx #%d: nonce taken by another sender of %s; re-signed with nonce %d", tx_id, self.address, nonce)

    def bump(self, tx_id: int) -> bool:
        """Re-sign with higher fees (same nonce) and broadcast; False when capped or refused."""
        old = fees_of(self.store.newest_attempt(tx_id))
        fees = self.fees(floor=old)
        if top_fee(fees) <= top_fee(old):
            log.error("tx #%d stuck at the fee cap (%d wei); not bumping further", tx_id, top_fee(old))
            return False
        tx = self.store.sent(tx_id)
        attempt = self.store.add_attempt(self.sign(tx, fees))
        outcome = self.broadcast(attempt)
        if outcome in ACCEPTED:
            self.store.supersede(tx_id, attempt.id)
            log.info("tx #%d (nonce %d) bumped to %s; %s", tx_id, tx.nonce, fees, attempt.tx_hash)
            return True
        self.store.fail_attempt(attempt.id)
        log.warning("tx #%d: bumped attempt refused by the node: %s", tx_id, outcome)
        return False

    # -- fees and signatures -------------------------------------------------------------------
    def fees(self, floor: Fees | None = None) -> Fees:
        """Fees for a new attempt at the node's current prices, bumped over `floor` if given."""
        block = self.w3.eth.get_block("latest")
        self.confirmer.head_hint = int(block["number"])
        if priced_on(block.get("baseFeePerGas"), self.policy) is None:
            market = Market(gas_price=int(self.w3.eth.gas_price))
        else:
            market = Market(base_fee=int(block["baseFeePerGas"]), priority_fee=int(self.w3.eth.max_priority_fee))
        return next_fees(market, floor, self.policy)

    def sign(self, tx: SentTx, fees: Fees) -> TxAttempt:
        """A new attempt at `tx`: its current nonce and fields, with `fees`."""
        body: dict[str, Any] = {
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
