"""An agent's on-chain registration: stake, served models, device class and capacity."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tributa.chain.contracts import Contracts
from tributa.chain.tx import Signer
from tributa.crypto import check_public_key_owner
from tributa.errors import TributaError

log = logging.getLogger("tributa.agent.registration")

DEVICE_CPU = 0
DEVICE_GPU = 1


@dataclass(frozen=True)
class AgentProfile:
    models: list[int]
    device_class: int
    capacity: int
    pubkey: bytes  # uncompressed secp256k1 public key, for inputs encrypted to this agent


def ensure_registered(contracts: Contracts, signer: Signer, profile: AgentProfile, stake_wei: int | None = None) -> str:
    """Register with a stake, or bring an existing registration up to date.

    Returns "registered", "updated" or "unchanged".
    """
    # The key inputs are encrypted to must be the agent's own: a wrong one would leak them.
    check_public_key_owner(profile.pubkey, signer.address)
    if not profile.models:
        raise TributaError(
            "this agent serves no registered model; give it --model-dir folders whose digests are registered"
        )
    escrow = contracts.escrow
    current = escrow.functions.agent(signer.address).call()
    registered = bool(current.registered)
    if not registered:
        min_stake = escrow.functions.min_stake().call()
        stake = max(min_stake, stake_wei or 0)
        signer.transact(
            escrow.functions.register_agent(profile.models, profile.device_class, profile.capacity, profile.pubkey),
            value=stake,
            action="register_agent",
        )
        log.info("registered agent %s with stake %s wei for models %s", signer.address, stake, profile.models)
        return "registered"
    served = escrow.functions.agent_models(signer.address).call()
    same = (
        sorted(served) == sorted(profile.models)
        and current.device_class == profile.device_class
        and current.capacity == profile.capacity
        and escrow.functions.agent_pubkey(signer.address).call() == profile.pubkey
    )
    if same:
        return "unchanged"
    signer.transact(
        escrow.functions.update_agent(profile.models, profile.device_class, profile.capacity, profile.pubkey),
        action="update_agent",
    )
    log.info("updated agent %s: models %s", signer.address, profile.models)
    return "updated"


def join_committees(contracts: Contracts, signer: Signer, models: list[int]) -> list[int]:
    """Put the agent on the AIOracle committee roster of each model it serves (AICommittee.join),
    so it can be drawn to re-execute a challenged request; returns the models it joined now.

    The first join deposits AICommittee.member_deposit (half of it is lost for a duty left
    unanswered by the committee deadline). A full roster (64) is skipped with a log line: the
    agent still serves the model."""
    committee = contracts.committee
    if committee is None:
        return []
    joined = []
    for model_id in models:
        roster = committee.functions.roster(model_id).call()
        if signer.address in roster:
            continue
        if len(roster) >= committee.functions.MAX_ROSTER().call():
            log.info("model %s's committee roster is full: not joined", model_id)
            continue
        # The roster wants a deposit (AICommittee.member_deposit), lost in part by a member that stays silent.
        short = committee.functions.member_deposit().call() - committee.functions.deposit_of(signer.address).call()
        signer.transact(committee.functions.join(model_id), value=max(0, short), action="committee.join")
        joined.append(model_id)
    if joined:
        log.info("joined the AIOracle committee rosters of models %s", joined)
    return joined
