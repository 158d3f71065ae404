"""Reading one contract's events out of a receipt (other contracts' logs are skipped quietly)."""

from __future__ import annotations

from typing import Any

from web3.contract import Contract
from web3.logs import DISCARD

from tributa.errors import ChainError


def receipt_events(contract: Contract, name: str, receipt: Any) -> list[dict[str, Any]]:
    return [dict(e["args"]) for e in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)]


def first_event(contract: Contract, name: str, receipt: Any) -> dict[str, Any]:
    events = receipt_events(contract, name, receipt)
    if not events:
        raise ChainError(f"transaction {receipt['transactionHash'].hex()} emitted no {name}")
    return events[0]
