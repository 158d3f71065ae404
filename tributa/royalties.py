"""Data royalties from a contributor's side: what each dataset version owes it, and claiming.

Contributor sets come from the registry's ContributorsSet events (the chain stores only
their Merkle roots); proofs are rebuilt here with tributa.merkle.
"""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3

from tributa import merkle
from tributa.chain.contracts import Contracts
from tributa.chain.tx import Signer, TxResult
from tributa.errors import TributaError

MAX_CLAIMS_PER_TX = 32


@dataclass(frozen=True)
class Share:
    dataset_id: int
    version: int
    shares_bps: int
    proof: list[bytes]
    claimable: int
    claimed: int


def contributor_sets(contracts: Contracts) -> dict[tuple[int, int], tuple[list[str], list[int]]]:
    """(dataset id, version) -> (contributors, shares), from the registry's events."""
    logs = contracts.registry.events.ContributorsSet.get_logs(from_block=contracts.deployment.block_number)
    return {
        (e["args"]["dataset_id"], e["args"]["version"]): (
            list(e["args"]["contributors"]),
            list(e["args"]["shares_bps"]),
        )
        for e in logs
    }


def shares_of(contracts: Contracts, account: str) -> list[Share]:
    account = Web3.to_checksum_address(account)
    vault = contracts.vault.functions
    shares = []
    for (dataset_id, version), (contributors, bps) in sorted(contributor_sets(contracts).items()):
        if account not in contributors:
            continue
        index = contributors.index(account)
        proof = merkle.contributors_proof(contributors, bps, index)
        # After the account's first paying claim in a version its lane there is non-zero and
        # proves the share: proof[0] alone locates the lane, and each sibling left out saves
        # ~510 gas of calldata.
        claimed = vault.claimed(dataset_id, version, account, bps[index], proof[:1]).call()
        if claimed:
            proof = proof[:1]
        shares.append(
            Share(
                dataset_id,
                version,
                bps[index],
                proof,
                vault.claimable(dataset_id, version, account, bps[index], proof).call(),
                claimed,
            )
        )
    return shares


def claim_all(contracts: Contracts, signer: Signer, account: str | None = None) -> tuple[int, list[TxResult]]:
    """Claim everything owed to `account` (default: the signer), in as few transactions as the
    vault allows. With another account the signer relays the claim (`claim_for`): it pays the gas,
    and the wei goes to `account` alone, so a contributor holding no ether is still paid."""
    account = signer.address if account is None else Web3.to_checksum_address(account)
    owed = [s for s in shares_of(contracts, account) if s.claimable > 0]
    if not owed:
        raise TributaError(f"{account} has no royalties to claim")
    vault = contracts.vault.functions
    results = []
    for start in range(0, len(owed), MAX_CLAIMS_PER_TX):
        batch = [(s.dataset_id, s.version, s.shares_bps, s.proof) for s in owed[start : start + MAX_CLAIMS_PER_TX]]
        if account == signer.address:
            results.append(signer.transact(vault.claim_many(batch), action="claim_many"))
        else:
            results.append(signer.transact(vault.claim_for(account, batch), action="claim_for"))
    return sum(s.claimable for s in owed), results
