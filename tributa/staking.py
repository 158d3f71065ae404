"""An agent's stake in the escrow: add to it, unbond it, withdraw it once the delay has passed.

Each call checks what the escrow would refuse first, so a mistake is one line and nothing is sent
(the escrow's own reasons: "not registered", "stake left below minimum", "still unbonding")."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tributa.chain.contracts import Contracts
from tributa.chain.tx import Signer, TxResult
from tributa.errors import TributaError


@dataclass(frozen=True)
class Stake:
    bonded: int
    unbonding: int
    release_at: int  # chain timestamp the unbonding part can be withdrawn at; 0 when none
    registered: bool


def read_stake(contracts: Contracts, account: str) -> Stake:
    stake, unbonding, release_at, _device, _capacity, registered = contracts.escrow.functions.agent(account).call()
    return Stake(stake, unbonding, release_at, bool(registered))


def _registered(contracts: Contracts, agent: Signer) -> Stake:
    stake = read_stake(contracts, agent.address)
    if not stake.registered:
        raise TributaError(f"{agent.address} is not a registered agent (`tributa agent run` registers it with a stake)")
    return stake


def add_stake(contracts: Contracts, agent: Signer, wei: int) -> TxResult:
    _registered(contracts, agent)
    if wei <= 0:
        raise TributaError("add a positive amount of stake")
    return agent.transact(contracts.escrow.functions.add_stake(), value=wei, action="add_stake")


def request_unbond(contracts: Contracts, agent: Signer, wei: int | None) -> tuple[int, int, TxResult]:
    """Move `wei` (None: all) of the bonded stake to unbonding; returns (amount, release_at, tx).
    A second request adds to the unbonding amount and restarts its timer."""
    stake = _registered(contracts, agent)
    amount = stake.bonded if wei is None else wei
    if amount <= 0:
        raise TributaError(
            f"{agent.address} has no bonded stake to unbond" if wei is None else "unbond a positive amount"
        )
    if amount > stake.bonded:
        raise TributaError(f"cannot unbond more than the bonded stake ({stake.bonded} wei)")
    minimum = contracts.escrow.functions.min_stake().call()
    if amount != stake.bonded and stake.bonded - amount < minimum:
        raise TributaError(
            f"that would leave {stake.bonded - amount} wei bonded, below the minimum stake of {minimum} wei: "
            "unbond all of it or less"
        )
    tx = agent.transact(contracts.escrow.functions.request_unbond(amount), action="request_unbond")
    return amount, read_stake(contracts, agent.address).release_at, tx


def withdraw_stake(contracts: Contracts, agent: Signer) -> tuple[int, TxResult]:
    stake = read_stake(contracts, agent.address)
    if stake.unbonding == 0:
        raise TributaError(f"{agent.address} has no stake unbonding (`tributa agent unbond` first)")
    now = contracts.w3.eth.get_block("latest")["timestamp"]
    if now < stake.release_at:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stake.release_at))
        raise TributaError(
            f"{stake.unbonding} wei is still unbonding: it can be withdrawn from {when} "
            f"({stake.release_at - now:,} s from now)"
        )
    return stake.unbonding, agent.transact(contracts.escrow.functions.withdraw_stake(), action="withdraw_stake")


def agents_serving(contracts: Contracts, model_id: int) -> list[str]:
    """Registered agents whose model list holds `model_id` and whose bonded stake meets the
    minimum now: the agents a task on that model can go to (k of them, distinct). Read from the
    registrations in the escrow's logs, then each agent's current state."""
    escrow = contracts.escrow
    start = contracts.deployment.block_number
    agents = {
        e["args"]["agent"]
        for event in (escrow.events.AgentRegistered, escrow.events.AgentUpdated)
        for e in event.get_logs(from_block=start)
    }
    minimum = escrow.functions.min_stake().call()
    return sorted(
        agent
        for agent in agents
        if model_id in escrow.functions.agent_models(agent).call() and read_stake(contracts, agent).bonded >= minimum
    )
