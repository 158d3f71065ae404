"""Sending transactions: one signer per key, clear errors for reverts and empty accounts."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, NoReturn

from eth_account.signers.local import LocalAccount
from eth_account.types import TransactionDictType
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted, Web3RPCError
from web3.types import Nonce, TxParams, Wei

from tributa.errors import ChainError, ContractRevert, InsufficientFunds

_REVERT_PREFIX = re.compile(r"^(execution reverted:?\s*)", re.IGNORECASE)


def revert_reason(exc: Exception) -> str:
    """The contract's revert string out of whatever web3 raised."""
    message = getattr(exc, "message", None) or (exc.args[0] if exc.args else str(exc))
    if isinstance(message, dict):
        message = message.get("message", str(message))
    return _REVERT_PREFIX.sub("", str(message)).strip() or "reverted without a reason"


def is_insufficient_funds(exc: Exception) -> bool:
    return "insufficient funds" in str(exc).lower()


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    receipt: Any


class Signer:
    """Sends transactions from one key, handing out nonces locally so that
    concurrent senders in one process never collide."""

    def __init__(self, w3: Web3, account: LocalAccount) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.chain_id = w3.eth.chain_id
        self._lock = threading.Lock()
        self._next_nonce: int | None = None

    def _take_nonce(self) -> int:
        with self._lock:
            chain_nonce = self.w3.eth.get_transaction_count(self.address, "pending")
            if self._next_nonce is None or chain_nonce > self._next_nonce:
                self._next_nonce = chain_nonce
            nonce = self._next_nonce
            self._next_nonce += 1
            return nonce

    def _release_nonce(self, nonce: int) -> None:
        # A transaction that never left us gives its nonce back, or later ones would stall.
        with self._lock:
            if self._next_nonce == nonce + 1:
                self._next_nonce = nonce

    def transact(
        self,
        call: ContractFunction | ContractConstructor,
        value: int = 0,
        gas: int | None = None,
        action: str | None = None,
        timeout_s: float = 120.0,
    ) -> TxResult:
        """Estimate, sign, send and wait; a revert raises ContractRevert with its reason."""
        label = action or ("constructor" if isinstance(call, ContractConstructor) else call.fn_name)
        params: TxParams = {"from": self.address, "value": Wei(value), "chainId": self.chain_id}
        try:
            if gas is None:
                # eth_estimateGas runs the call: a revert surfaces here with its reason, before signing.
                gas = int(call.estimate_gas(params) * 1.2) + 10_000
        except (ContractLogicError, ContractCustomError) as exc:
            raise ContractRevert(revert_reason(exc), label) from None
        except (Web3RPCError, ValueError) as exc:
            self._raise_rpc(exc, label, value)
        nonce = self._take_nonce()
        try:
            tx = call.build_transaction({**params, "gas": gas, "nonce": Nonce(nonce)})
            # web3's TxParams (a TypedDict) is what eth-account signs; its dict[str, ...] annotation cannot say so.
            signed = self.account.sign_transaction(tx)  # type: ignore[arg-type]
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        except (Web3RPCError, ValueError) as exc:
            self._release_nonce(nonce)
            self._raise_rpc(exc, label, value)
        return self._wait(tx_hash, call, params, label, timeout_s)

    def send_value(self, to: str, value: int, timeout_s: float = 120.0) -> TxResult:
        """A plain ETH transfer."""
        nonce = self._take_nonce()
        tx: TransactionDictType = {
            "to": Web3.to_checksum_address(to),
            "value": value,
            "gas": 100_000,
            "nonce": nonce,
            "chainId": self.chain_id,
            "gasPrice": self.w3.eth.gas_price,
        }
        try:
            tx_hash = self.w3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction)
        except (Web3RPCError, ValueError) as exc:
            self._release_nonce(nonce)
            self._raise_rpc(exc, "transfer", value)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)
        if receipt["status"] != 1:
            raise ContractRevert("value transfer rejected by the recipient", "transfer")
        return TxResult(tx_hash.hex(), receipt["blockNumber"], receipt["gasUsed"], receipt)

    def _wait(
        self,
        tx_hash: HexBytes,
        call: ContractFunction | ContractConstructor,
        params: TxParams,
        label: str,
        timeout_s: float,
    ) -> TxResult:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)
        except TimeExhausted:
            raise ChainError(f"{label}: transaction 0x{tx_hash.hex()} not mined after {timeout_s:.0f}s") from None
        if receipt["status"] != 1:
            if isinstance(call, ContractConstructor):  # a deployment: no call to replay
                raise ContractRevert("the deployment reverted", label)
            # Replay at the receipt's block to learn why it reverted.
            try:
                call.call(params, block_identifier=receipt["blockNumber"])
                reason = "reverted (state changed between estimate and inclusion)"
            except (ContractLogicError, ContractCustomError) as exc:
                reason = revert_reason(exc)
            raise ContractRevert(reason, label)
        return TxResult(
            "0x" + bytes(tx_hash).hex().removeprefix("0x"), receipt["blockNumber"], receipt["gasUsed"], receipt
        )

    def _raise_rpc(self, exc: Exception, label: str, value: int) -> NoReturn:
        if is_insufficient_funds(exc):
            balance = self.w3.eth.get_balance(self.address)
            raise InsufficientFunds(
                f"{label}: account {self.address} cannot pay {Web3.from_wei(value, 'ether')} ETH plus gas "
                f"(balance {Web3.from_wei(balance, 'ether')} ETH); fund it first"
            ) from None
        raise ChainError(f"{label}: the node rejected the transaction: {revert_reason(exc)}") from None
