"""Shared helpers for the TaskEscrow / DataRegistry / RoyaltyVault tests (titanoboa).

Imported by tests/contracts/conftest.py and by the stateful machines in tests/stateful/.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import boa
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from tributa.merkle import contributors_proof, contributors_root, sort_contributors

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"

ETHER = 10**18
DAY = 86_400
BPS = 10_000

# Default escrow parameters used by the tests.
PROTOCOL_FEE_BPS = 500
DATA_SHARE_BPS = 1_000
SLASH_BPS = 1_000
MIN_STAKE = ETHER
UNBONDING_DELAY = 31 * DAY  # TaskEscrow.MIN_UNBONDING_DELAY

OPEN, SETTLED, FAILED, REFUNDED = 1, 2, 3, 4
ZERO_ADDRESS = "0x" + "00" * 20


def digest(label: str | int) -> bytes:
    """A deterministic non-zero 32-byte digest for test data."""
    return keccak(text=str(label))


@functools.cache
def partial(name: str):
    """Compiles a contract once per process (compilation is the slow part)."""
    old = os.getcwd()
    os.chdir(ROOT)  # `import interfaces.X` resolves from the project root
    try:
        return boa.load_partial(str(CONTRACTS / f"{name}.vy"))
    finally:
        os.chdir(old)


@dataclass
class System:
    owner: str
    treasury: str
    oracle: str
    registry: object
    vault: object
    escrow: object
    agents: list = field(default_factory=list)  # eth_account LocalAccounts


def deploy_system(
    protocol_fee_bps: int = PROTOCOL_FEE_BPS,
    data_share_bps: int = DATA_SHARE_BPS,
    slash_bps: int = SLASH_BPS,
    min_stake: int = MIN_STAKE,
    unbonding_delay: int = UNBONDING_DELAY,
) -> System:
    owner = boa.env.generate_address("owner")
    treasury = boa.env.generate_address("treasury")
    oracle = boa.env.generate_address("oracle")
    with boa.env.prank(owner):
        registry = partial("DataRegistry").deploy()
        vault = partial("RoyaltyVault").deploy(registry.address)
        escrow = partial("TaskEscrow").deploy(
            registry.address,
            vault.address,
            treasury,
            protocol_fee_bps,
            data_share_bps,
            slash_bps,
            min_stake,
            unbonding_delay,
        )
        vault.set_escrow(escrow.address)
        escrow.set_oracle(oracle, True)
    return System(owner, treasury, oracle, registry, vault, escrow)


def new_account(balance: int = 1_000 * ETHER):
    """A fresh key pair (eth_account LocalAccount) funded in boa."""
    acct = Account.create()
    boa.env.set_balance(acct.address, balance)
    return acct


def funded_address(alias: str | None = None, balance: int = 1_000 * ETHER) -> str:
    addr = boa.env.generate_address(alias)
    boa.env.set_balance(addr, balance)
    return addr


def chain_id() -> int:
    return boa.env.evm.patch.chain_id


def typed_result(escrow_address: str, task_id: int, result_digest: bytes) -> dict:
    """The EIP-712 message agents sign, as eth_account's `full_message`."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Result": [
                {"name": "task_id", "type": "uint256"},
                {"name": "result_digest", "type": "bytes32"},
            ],
        },
        "primaryType": "Result",
        "domain": {
            "name": "Tributa TaskEscrow",
            "version": "1",
            "chainId": chain_id(),
            "verifyingContract": str(escrow_address),
        },
        "message": {"task_id": task_id, "result_digest": result_digest},
    }


def sign_result(acct, escrow, task_id: int, result_digest: bytes) -> bytes:
    """65-byte (r, s, v) EIP-712 signature by `acct` over (task_id, result_digest)."""
    signable = encode_typed_data(full_message=typed_result(escrow.address, task_id, result_digest))
    return bytes(Account.sign_message(signable, acct.key).signature)


def typed_lease(escrow_address: str, task_id: int, expires_at: int) -> dict:
    """The EIP-712 lease acceptance agents sign, as eth_account's `full_message`."""
    msg = typed_result(escrow_address, task_id, b"\x00" * 32)
    msg["types"] = {
        "EIP712Domain": msg["types"]["EIP712Domain"],
        "Lease": [
            {"name": "task_id", "type": "uint256"},
            {"name": "expires_at", "type": "uint256"},
        ],
    }
    msg["primaryType"] = "Lease"
    msg["message"] = {"task_id": task_id, "expires_at": expires_at}
    return msg


def sign_lease(acct, escrow, task_id: int, expires_at: int) -> bytes:
    """65-byte EIP-712 signature by `acct` over Lease(task_id, expires_at)."""
    signable = encode_typed_data(full_message=typed_lease(escrow.address, task_id, expires_at))
    return bytes(Account.sign_message(signable, acct.key).signature)


def lease_proof(acct, escrow, task_id: int, expires_at: int | None = None) -> tuple:
    """A SlashProof tuple for a silent agent: its lease, expired one second ago by default."""
    expires_at = expires_at if expires_at is not None else boa.env.timestamp - 1
    return (acct.address, b"\x00" * 32, expires_at, sign_lease(acct, escrow, task_id, expires_at))


def conflict_proof(acct, escrow, task_id: int, result: bytes | None = None) -> tuple:
    """A SlashProof tuple for a minority agent: its signature over another result."""
    result = result if result is not None else digest(f"minority-{task_id}")
    return (acct.address, result, 0, sign_result(acct, escrow, task_id, result))


def settlement(
    task_id: int,
    agents=(),
    signatures=None,
    agent_fee: int = 0,
    slashed=(),
    dataset_ids=(),
    weights=(),
    result: bytes | None = None,
    attribution: bytes | None = None,
    escrow=None,
) -> tuple:
    """A Settlement struct as a tuple. `agents` may be LocalAccounts: they are then
    signed for automatically (needs `escrow`). `slashed` holds SlashProof tuples,
    or LocalAccounts, which get a conflict proof (a signature over another result)."""
    result = result if result is not None else digest(f"result-{task_id}")
    attribution = attribution if attribution is not None else digest(f"attribution-{task_id}")
    addrs = [a.address if hasattr(a, "key") else a for a in agents]
    if signatures is None:
        signatures = [sign_result(a, escrow, task_id, result) for a in agents]
    proofs = [conflict_proof(a, escrow, task_id) if hasattr(a, "key") else tuple(a) for a in slashed]
    return (task_id, result, attribution, addrs, list(signatures), agent_fee, proofs, list(dataset_ids), list(weights))


def register_agent(
    escrow, acct, stake: int = MIN_STAKE, models=(1,), device_class=1, capacity=4, pubkey=b"\x04" + b"\x11" * 64
):
    with boa.env.prank(acct.address if hasattr(acct, "key") else acct):
        escrow.register_agent(list(models), device_class, capacity, pubkey, value=stake)


def commit_dataset(registry, content_digest: bytes, metadata_digest: bytes, salt: bytes | None = None) -> bytes:
    """Commits to a dataset as boa's current sender (use inside boa.env.prank); returns the salt."""
    salt = salt if salt is not None else os.urandom(32)
    registry.commit_dataset(registry.dataset_commitment(content_digest, metadata_digest, boa.env.eoa, salt))
    return salt


def commit_and_register(
    registry, content_digest: bytes, metadata_digest: bytes, contributors, shares, terms: str = ""
) -> int:
    """The two-step registration as boa's current sender: commit, mine a block, reveal. Returns the id."""
    salt = commit_dataset(registry, content_digest, metadata_digest)
    boa.env.time_travel(blocks=1)
    return registry.register_dataset(content_digest, metadata_digest, list(contributors), list(shares), terms, salt)


def register_dataset(registry, owner: str, n_contributors: int = 3, label: str | int = "ds", shares=None):
    """Registers a dataset (commit, next block, reveal) with `n_contributors` fresh accounts;
    returns (id, contributors, shares)."""
    addrs = [boa.env.generate_address() for _ in range(n_contributors)]
    if shares is None:
        shares = [BPS // n_contributors] * n_contributors
        shares[-1] += BPS - sum(shares)
    contributors, shares = sort_contributors(zip(addrs, shares, strict=False))
    with boa.env.prank(owner):
        dataset_id = commit_and_register(
            registry, digest(f"content-{label}"), digest(f"meta-{label}"), contributors, shares, "CC-BY-4.0"
        )
    return dataset_id, contributors, shares


def register_model(
    registry,
    publisher: str,
    fee: int = 10**15,
    receiver: str | None = None,
    dataset_ids=(),
    weights=(),
    name="tiny-gpt2",
):
    with boa.env.prank(publisher):
        return registry.register_model(
            name,
            digest(f"weights-{name}"),
            [digest("adapter-a")],
            list(dataset_ids),
            list(weights),
            fee,
            receiver or publisher,
        )


MAX_UINT256 = 2**256 - 1


def post_task(
    escrow,
    requester: str,
    model_id: int = 1,
    fee: int = 10**16,
    k: int = 1,
    deadline: int | None = None,
    input_digest: bytes | None = None,
    max_model_fee: int = MAX_UINT256,
) -> int:
    deadline = deadline if deadline is not None else boa.env.timestamp + DAY
    with boa.env.prank(requester):
        return escrow.post_task(model_id, input_digest or digest("input"), deadline, k, max_model_fee, value=fee)


def proof_for(contributors, shares, account):
    i = [c.lower() for c in contributors].index(str(account).lower())
    return contributors_proof(contributors, shares, i)


def root_for(contributors, shares):
    return contributors_root(contributors, shares)


def events(contract, name: str) -> list:
    """Decoded events called `name` emitted (by any contract) in `contract`'s last call."""
    return [e for e in contract.get_logs() if type(e).__name__ == name]


def intrinsic_gas(calldata: bytes) -> int:
    """21000 + calldata cost (EIP-2028), the part of a tx's gas that boa does not meter."""
    return 21_000 + sum(16 if b else 4 for b in calldata)
