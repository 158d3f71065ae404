"""Contributors Merkle tree: the Python mirror of DataRegistry's on-chain root.

A dataset's contributors are committed on-chain as a Merkle root built by
``DataRegistry._contributors_root``. This module builds the same root and the
proofs ``RoyaltyVault.claim`` expects:

* leaf_i = keccak256(keccak256(abi_encode(account_i, shares_bps_i)))
  (OpenZeppelin-style double hash; the share is a uint16 encoded as one word);
* leaves in the order given, which must be strictly ascending by address
  (use :func:`sort_contributors`);
* each level pairs nodes (2i, 2i + 1) with the sorted-pair hash
  keccak256(min(a, b) || max(a, b)); an odd last node is promoted unchanged;
* a single leaf is its own root.

The full contributor lists are in the registry's ``ContributorsSet`` events, so
anyone can rebuild any proof from chain data alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

TOTAL_BPS = 10_000
MAX_CONTRIBUTORS = 1000

__all__ = [
    "MAX_CONTRIBUTORS",
    "TOTAL_BPS",
    "contributors_leaf",
    "contributors_proof",
    "contributors_root",
    "hash_pair",
    "sort_contributors",
    "validate_contributors",
    "verify_proof",
]


def _address_int(account: str | bytes) -> int:
    if isinstance(account, bytes):
        if len(account) != 20:
            raise ValueError(f"an address is 20 bytes, got {len(account)}")
        return int.from_bytes(account, "big")
    return int(to_checksum_address(account), 16)


def contributors_leaf(account: str | bytes, bps: int) -> bytes:
    """The leaf of one (account, share) pair: keccak256(keccak256(abi_encode(address, uint16)))."""
    if not 0 <= bps < 2**16:
        raise ValueError(f"a share is a uint16 in basis points, got {bps}")
    addr = to_checksum_address(account)
    return keccak(keccak(abi_encode(["address", "uint16"], [addr, bps])))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """Sorted-pair hash (snekmate / OpenZeppelin): keccak256(min(a, b) || max(a, b))."""
    return keccak(a + b) if a < b else keccak(b + a)


def sort_contributors(pairs: Iterable[tuple[str, int]]) -> tuple[list[str], list[int]]:
    """Sorts (account, bps) pairs ascending by address, as the registry requires.

    Returns the checksummed addresses and the shares as two aligned lists.
    Raises ``ValueError`` on a duplicate account (merge its shares first).
    """
    items = sorted(((_address_int(a), to_checksum_address(a), int(b)) for a, b in pairs))
    for (x, addr, _), (y, _, _) in itertools.pairwise(items):
        if x == y:
            raise ValueError(f"duplicate contributor {addr}: merge its shares into one entry")
    return [addr for _, addr, _ in items], [bps for _, _, bps in items]


def validate_contributors(contributors: Sequence[str], shares: Sequence[int]) -> None:
    """Raises ``ValueError`` with the registry's reason if the lists would be rejected on-chain."""
    if not contributors:
        raise ValueError("no contributors")
    if len(contributors) != len(shares):
        raise ValueError(f"length mismatch: {len(contributors)} contributors, {len(shares)} shares")
    if len(contributors) > MAX_CONTRIBUTORS:
        raise ValueError(f"too many contributors: {len(contributors)} > {MAX_CONTRIBUTORS}")
    previous = 0
    for account, bps in zip(contributors, shares, strict=False):
        value = _address_int(account)
        if value == 0:
            raise ValueError("zero address contributor")
        if value <= previous:
            raise ValueError("contributors not strictly ascending (use sort_contributors)")
        previous = value
        if bps == 0:
            raise ValueError(f"zero share for {account}")
    if sum(shares) != TOTAL_BPS:
        raise ValueError(f"shares must sum to {TOTAL_BPS}, got {sum(shares)}")


def _levels(contributors: Sequence[str], shares: Sequence[int]) -> list[list[bytes]]:
    validate_contributors(contributors, shares)
    level = [contributors_leaf(a, b) for a, b in zip(contributors, shares, strict=False)]
    levels = [level]
    while len(level) > 1:
        nxt = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2 == 1:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def contributors_root(contributors: Sequence[str], shares: Sequence[int]) -> bytes:
    """The root DataRegistry computes for these (ascending) contributors and shares."""
    return _levels(contributors, shares)[-1][0]


def contributors_proof(contributors: Sequence[str], shares: Sequence[int], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (promoted levels add no sibling)."""
    if not 0 <= index < len(contributors):
        raise IndexError(f"contributor index {index} out of range 0..{len(contributors) - 1}")
    proof: list[bytes] = []
    for level in _levels(contributors, shares)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def verify_proof(root: bytes, account: str, bps: int, proof: Sequence[bytes]) -> bool:
    """Checks a proof the way snekmate's ``merkle_proof_verification._verify`` does."""
    node = contributors_leaf(account, bps)
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
