"""An account's history, from the contracts' events alone: tasks it posted and what came back,
fees it earned as an agent, withdrawals, royalties and IMO revenue claimed, slashes.

Everything is read from logs (any node, any machine: no oracle database), oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass

from tributa.chain.contracts import Contracts


@dataclass(frozen=True)
class Entry:
    block: int
    log_index: int
    tx: str
    kind: str  # posted | settled | refunded | paid_as_agent | slashed | withdrawn | royalty_claimed | revenue_claimed
    amount_wei: int
    task_id: int | None = None
    detail: str = ""

    def to_json(self) -> dict:
        return {
            "block": self.block,
            "tx": self.tx,
            "kind": self.kind,
            "amount_wei": str(self.amount_wei),
            "task_id": self.task_id,
            "detail": self.detail,
        }


def _logs(event, contracts: Contracts, **filters) -> list:
    return event.get_logs(from_block=contracts.deployment.block_number, argument_filters=filters or None)


def _entry(log, kind: str, amount: int, task_id: int | None = None, detail: str = "") -> Entry:
    return Entry(
        log["blockNumber"], log["logIndex"], "0x" + bytes(log["transactionHash"]).hex(), kind, amount, task_id, detail
    )


def account_history(contracts: Contracts, account: str) -> list[Entry]:
    escrow = contracts.escrow.events
    entries: list[Entry] = []
    posted = {}
    for log in _logs(escrow.TaskPosted, contracts, requester=account):
        args = log["args"]
        posted[args["task_id"]] = args
        entries.append(_entry(log, "posted", args["fee"], args["task_id"], f"model {args['model_id']}, k={args['k']}"))
    for log in _logs(escrow.TaskSettled, contracts):
        args = log["args"]
        if args["task_id"] in posted and args["refund"]:
            entries.append(_entry(log, "settled", args["refund"], args["task_id"], "unspent fee credited back"))
        if account in args["agents"]:
            share = args["agent_fee"] // len(args["agents"])
            entries.append(_entry(log, "paid_as_agent", share, args["task_id"], f"one of {len(args['agents'])} agents"))
    for log in _logs(escrow.TaskRefunded, contracts, requester=account):
        entries.append(_entry(log, "refunded", log["args"]["amount"], log["args"]["task_id"]))
    for log in _logs(escrow.AgentSlashed, contracts, agent=account):
        entries.append(_entry(log, "slashed", log["args"]["amount"], log["args"]["task_id"]))
    for log in _logs(escrow.Withdrawn, contracts, account=account):
        entries.append(_entry(log, "withdrawn", log["args"]["amount"], detail="credited balance to wallet"))
    for log in _logs(contracts.vault.events.RoyaltyClaimed, contracts, account=account):
        args = log["args"]
        entries.append(
            _entry(log, "royalty_claimed", args["amount"], detail=f"dataset {args['dataset_id']} v{args['version']}")
        )
    entries.extend(_revenue_claims(contracts, account))
    return sorted(entries, key=lambda e: (e.block, e.log_index))


def _revenue_claims(contracts: Contracts, account: str) -> list[Entry]:
    """RevenueClaimed on every IMO's model token (one contract per IMO)."""
    if contracts.launcher is None:
        return []
    from tributa.imo import read_imo, token_contract

    entries = []
    for imo_id in range(1, contracts.launcher.functions.imo_count().call() + 1):
        view = read_imo(contracts, imo_id)
        token = token_contract(contracts, view.token)
        for log in _logs(token.events.RevenueClaimed, contracts, account=account):
            entries.append(
                _entry(log, "revenue_claimed", log["args"]["amount"], detail=f"IMO {imo_id} (model {view.model_id})")
            )
    return entries
