"""tributa/merkle.py mirrors DataRegistry's on-chain contributors tree exactly."""

import itertools

import boa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contracts import helpers as h
from tributa import merkle


def _split_10000(n: int, seed: int) -> list[int]:
    """n positive shares summing to 10000, varied by `seed`."""
    import random

    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, h.BPS), n - 1)) if n > 1 else []
    bounds = [0, *cuts, h.BPS]
    return [b - a for a, b in itertools.pairwise(bounds)]


def _random_contributors(n: int, seed: int):
    import random

    rnd = random.Random(seed)
    addrs = {("0x" + rnd.randbytes(20).hex()) for _ in range(n)}
    while len(addrs) < n:
        addrs.add("0x" + rnd.randbytes(20).hex())
    return merkle.sort_contributors(zip(addrs, _split_10000(n, seed), strict=False))


def _check_all(registry, contributors, shares, indices):
    root = merkle.contributors_root(contributors, shares)
    assert registry.compute_contributors_root(contributors, shares) == root
    for i in indices:
        proof = merkle.contributors_proof(contributors, shares, i)
        assert merkle.verify_proof(root, contributors[i], shares[i], proof)
        assert registry.contributors_leaf(contributors[i], shares[i]) == merkle.contributors_leaf(
            contributors[i], shares[i]
        )
    return root


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 1000])
def test_contributors_root__python_and_chain__agree_and_every_proof_verifies(w, n):
    contributors, shares = _random_contributors(n, seed=n)
    with boa.env.prank(w.stranger):
        did = h.commit_and_register(w.registry, h.digest(f"m-{n}"), h.digest("meta"), contributors, shares, "")
    root = merkle.contributors_root(contributors, shares)
    assert w.registry.contributors_root(did, 1) == root
    indices = range(n) if n <= 17 else [0, 1, 2, 499, 500, 511, 512, 997, 998, 999]
    for i in indices:
        proof = merkle.contributors_proof(contributors, shares, i)
        assert w.registry.verify_share(did, 1, contributors[i], shares[i], proof), i
        assert len(proof) <= 10


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(min_value=1, max_value=70), seed=st.integers(min_value=0, max_value=2**32))
def test_contributors_root__random_lists__python_matches_chain(w, n, seed):
    contributors, shares = _random_contributors(n, seed)
    _check_all(w.registry, contributors, shares, {0, n // 2, n - 1})


def test_contributors_proof__wrong_share__does_not_verify():
    contributors, shares = _random_contributors(6, seed=3)
    root = merkle.contributors_root(contributors, shares)
    proof = merkle.contributors_proof(contributors, shares, 2)
    assert not merkle.verify_proof(root, contributors[2], shares[2] + 1, proof)
    assert not merkle.verify_proof(root, contributors[3], shares[2], proof)


def test_sort_contributors__unsorted_pairs__are_sorted_by_address_value():
    pairs = [("0x" + "ff" * 20, 1), ("0x" + "01" * 20, 2), ("0x" + "0a" * 20, 3)]
    accounts, shares = merkle.sort_contributors(pairs)
    assert [int(a, 16) for a in accounts] == sorted(int(a, 16) for a, _ in pairs)
    assert shares == [2, 3, 1]


def test_sort_contributors__duplicate_account__raises_with_advice():
    with pytest.raises(ValueError, match="merge its shares"):
        merkle.sort_contributors([("0x" + "01" * 20, 1), ("0x" + "01" * 20, 2)])


@pytest.mark.parametrize(
    "contributors, shares, message",
    [
        ([], [], "no contributors"),
        (["0x" + "01" * 20], [1, 2], "length mismatch"),
        (["0x" + "00" * 20], [10_000], "zero address"),
        (["0x" + "02" * 20, "0x" + "01" * 20], [5000, 5000], "strictly ascending"),
        (["0x" + "01" * 20, "0x" + "02" * 20], [10_000, 0], "zero share"),
        (["0x" + "01" * 20], [9_999], "sum to 10000"),
    ],
)
def test_contributors_root__invalid_lists__raise_the_registry_reason(contributors, shares, message):
    with pytest.raises(ValueError, match=message):
        merkle.contributors_root(contributors, shares)


def test_contributors_proof__index_out_of_range__raises():
    contributors, shares = _random_contributors(3, seed=1)
    with pytest.raises(IndexError):
        merkle.contributors_proof(contributors, shares, 3)
