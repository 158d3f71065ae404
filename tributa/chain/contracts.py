"""Contract bindings built from the deployments file."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3
from web3.contract import Contract

from tributa.chain.connection import connect
from tributa.chain.result_names import with_result_names
from tributa.config import Settings
from tributa.deployments import Deployment, load_deployment
from tributa.errors import ConfigError


@dataclass(frozen=True)
class Contracts:
    w3: Web3
    deployment: Deployment
    escrow: Contract
    registry: Contract
    vault: Contract
    launcher: Contract | None
    # Contracts that ask for AI (absent from deployments made before them).
    ai_oracle: Contract | None = None
    committee: Contract | None = None

    @property
    def chain_id(self) -> int:
        return self.deployment.chain_id


def bind(w3: Web3, deployment: Deployment) -> Contracts:
    def at(name: str) -> Contract:
        address = Web3.to_checksum_address(deployment.address(name))
        if not w3.eth.get_code(address):
            raise ConfigError(
                f"no {name} code at {address} on chain {deployment.chain_id}; the node was probably "
                f"restarted since the last deploy: run `ape run deploy` again"
            )
        # decode_tuples: struct results come back as named tuples, read by field name (`task.state`)
        return w3.eth.contract(address=address, abi=with_result_names(deployment.abis[name]), decode_tuples=True)

    def optional(name: str) -> Contract | None:
        return at(name) if name in deployment.addresses else None

    return Contracts(
        w3,
        deployment,
        at("TaskEscrow"),
        at("DataRegistry"),
        at("RoyaltyVault"),
        optional("IMOLauncher"),
        optional("AIOracle"),
        optional("AICommittee"),
    )


def load_contracts(settings: Settings, w3: Web3 | None = None) -> Contracts:
    """Connect to the node in `settings` (or use `w3`, connected to it) and bind the contracts
    deployed on its chain."""
    w3 = w3 if w3 is not None else connect(settings.rpc_url)
    deployment = load_deployment(settings.deployments_dir, w3.eth.chain_id)
    return bind(w3, deployment)
