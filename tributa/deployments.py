"""The deployments file: one JSON per chain with addresses, ABIs, chain id and block.

`ape run deploy` writes it; the oracle, the agents and the CLI read it, so no address
is ever pasted by hand.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tributa.errors import ConfigError

CONTRACT_NAMES = ("DataRegistry", "RoyaltyVault", "TaskEscrow", "IMOLauncher")


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    block_number: int
    addresses: dict[str, str]
    abis: dict[str, list[dict[str, Any]]]
    deployer: str
    oracle: str
    treasury: str

    def address(self, name: str) -> str:
        try:
            return self.addresses[name]
        except KeyError:
            raise ConfigError(
                f"the deployment for chain {self.chain_id} has no {name}; redeploy with `ape run deploy`"
            ) from None

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "block_number": self.block_number,
            "deployer": self.deployer,
            "oracle": self.oracle,
            "treasury": self.treasury,
            "addresses": self.addresses,
            "abis": self.abis,
        }


def deployment_path(deployments_dir: Path, chain_id: int) -> Path:
    return Path(deployments_dir) / f"{chain_id}.json"


def save_deployment(deployments_dir: Path, deployment: Deployment) -> Path:
    """Write atomically, so a reader never sees half a file."""
    path = deployment_path(deployments_dir, deployment.chain_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".deploy-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(deployment.to_json(), fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def load_deployment(deployments_dir: Path, chain_id: int) -> Deployment:
    path = deployment_path(deployments_dir, chain_id)
    if not path.exists():
        raise ConfigError(
            f"no deployment for chain {chain_id} at {path}; run `ape run deploy` "
            f"(or set TRIBUTA_DEPLOYMENTS to the folder that holds it)"
        )
    try:
        raw = json.loads(path.read_text())
        return Deployment(
            chain_id=int(raw["chain_id"]),
            block_number=int(raw["block_number"]),
            addresses=dict(raw["addresses"]),
            abis=dict(raw["abis"]),
            deployer=raw["deployer"],
            oracle=raw["oracle"],
            treasury=raw["treasury"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the deployment file {path} is unreadable ({exc}); redeploy with `ape run deploy`") from None
