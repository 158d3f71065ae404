"""Data-royalty gas from real Anvil receipts: settlement is flat in the number of contributors; what a claim costs a contributor."""

from __future__ import annotations

import random
from pathlib import Path

from eth_account import Account
from eth_utils import keccak

from bench.chain import deployed_chain, median, post, register_agent, register_model, settlement
from tributa import merkle
from tributa.chain.tx import Signer
from tributa.datasets import commit_and_register

REPEATS = 3
SIZES = (1, 100, 1000)
# Seeded: calldata gas depends on the bytes (zero bytes are cheaper), so random addresses and
# roots would move the figures a little from run to run.
SEED = 20261122
_rng = random.Random(SEED)


def _address() -> str:
    return "0x" + _rng.randbytes(20).hex()


def _members(w3, n: int) -> list[Signer]:
    """n funded accounts with keys (deterministic), so that every contributor can claim."""
    signers = []
    for i in range(n):
        account = Account.from_key(keccak(f"royalty-bench-{SEED}-{i}".encode()))
        w3.provider.make_request("anvil_setBalance", [account.address, hex(10**18)])
        signers.append(Signer(w3, account))
    return signers


def _register_dataset(contracts, creator, contributors: list[str]) -> tuple[int, list[str], list[int], int, int]:
    """Commit, next block, reveal; returns (id, contributors, shares, reveal gas, commit gas)."""
    n = len(contributors)
    shares = [10_000 // n + (1 if i < 10_000 % n else 0) for i in range(n)]
    ordered, shares = merkle.sort_contributors(zip(contributors, shares, strict=False))
    commit, reveal, dataset_id = commit_and_register(
        contracts,
        creator,
        _rng.randbytes(32),
        _rng.randbytes(32),
        ordered,
        shares,
        "bench",
        gas=29_000_000 if n > 100 else None,
    )
    return dataset_id, ordered, shares, reveal.gas_used, commit.gas_used


def run(workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    _rng.seed(SEED)
    figures: dict[str, float] = {}
    with deployed_chain(workdir) as (_node, contracts, s):
        escrow = contracts.escrow.functions
        claimer = s["creator"]
        datasets = {}
        keyed = _members(contracts.w3, SIZES[-1] - 1)
        for n in SIZES:
            members = [claimer.address] + [_address() for _ in range(n - 1)]
            if n == SIZES[-1]:  # the same draws as before (the other figures stay put), but with keys
                members = [claimer.address] + [m.address for m in keyed]
            datasets[n] = _register_dataset(contracts, s["creator"], members)
        register_gas = [
            _register_dataset(contracts, s["creator"], [claimer.address] + [_address() for _ in range(9)])
            for _ in range(REPEATS)
        ]
        figures["gas_register_dataset_contributors_10"] = median([g[3] for g in register_gas])  # the reveal
        figures["gas_commit_dataset"] = median([g[4] for g in register_gas])
        figures["gas_commit_register_dataset_contributors_10"] = median([g[3] + g[4] for g in register_gas])

        model = register_model(contracts, s["publisher"])
        register_agent(contracts, s["agent"], [model])
        warm, _ = post(contracts, s["requester"], model)
        s["oracle"].transact(
            escrow.settle(settlement(contracts, s["agent"], warm, dataset_ids=[datasets[1][0]], weights=[10_000]))
        )
        for n, (dataset_id, *_rest) in datasets.items():
            gas = []
            for _ in range(REPEATS):
                task_id, _ = post(contracts, s["requester"], model)
                call = escrow.settle(
                    settlement(contracts, s["agent"], task_id, dataset_ids=[dataset_id], weights=[10_000])
                )
                gas.append(s["oracle"].transact(call).gas_used)
            figures[f"gas_settle_contributors_{n}"] = median(gas)
            if n == SIZES[-1]:
                # The version's first credit: it creates the revenue slot and copies the root.
                figures[f"gas_settle_first_credit_contributors_{n}"] = gas[0]

        # Every contributor of the 1,000-member dataset claims once. The two leaves of a Merkle pair
        # share a claim word: the first of them to claim creates it (a zero-to-non-zero SSTORE), the
        # second writes a non-zero word. The claimer claims first of all (nothing of the dataset is
        # non-zero in the vault yet; it opens its pair), then its tree sibling (it joins), then
        # everyone else in a seeded random order; the figure is the mean of all 1,000 first claims,
        # what a recipient costs when every recipient is paid (as the 0xSplits slope is).
        dataset_id, ordered, shares = datasets[1000][:3]
        signers = {m.address: m for m in keyed} | {claimer.address: claimer}
        proofs = [merkle.contributors_proof(ordered, shares, i) for i in range(len(ordered))]
        index = ordered.index(claimer.address)
        sibling = index ^ 1
        order = [i for i in range(len(ordered)) if i not in (index, sibling)]
        random.Random(SEED).shuffle(order)
        first = {}
        for i in [index, sibling, *order]:
            call = contracts.vault.functions.claim(dataset_id, 1, shares[i], proofs[i])
            first[i] = signers[ordered[i]].transact(call, gas=200_000).gas_used
        figures["gas_claim_first_opens_pair_contributors_1000"] = first[index]
        figures["gas_claim_first_joins_pair_contributors_1000"] = first[sibling]
        figures["gas_claim_first_contributors_1000"] = round(sum(first.values()) / len(first), 1)
        task_id, _ = post(contracts, s["requester"], model)
        s["oracle"].transact(
            escrow.settle(settlement(contracts, s["agent"], task_id, dataset_ids=[dataset_id], weights=[10_000]))
        )
        # The claimer's lane is non-zero now, so the repeat claim sends only proof[0], which locates
        # the lane (as tributa.royalties does).
        repeat = contracts.vault.functions.claim(dataset_id, 1, shares[index], proofs[index][:1])
        figures["gas_claim_repeat_contributors_1000"] = claimer.transact(repeat).gas_used

        # One contributor of a 10-member dataset claims what several tasks credited.
        dataset_id, ordered, shares = register_gas[0][:3]
        for _ in range(REPEATS):
            task_id, _ = post(contracts, s["requester"], model)
            s["oracle"].transact(
                escrow.settle(settlement(contracts, s["agent"], task_id, dataset_ids=[dataset_id], weights=[10_000]))
            )
        index = ordered.index(claimer.address)
        proof = merkle.contributors_proof(ordered, shares, index)
        claim = contracts.vault.functions.claim(dataset_id, 1, shares[index], proof)
        figures["gas_claim"] = claimer.transact(claim).gas_used
    figures["settle_contributors_1000_vs_1_ratio"] = round(
        figures["gas_settle_contributors_1000"] / figures["gas_settle_contributors_1"], 4
    )
    return figures
