"""Stateless properties of RoyaltyVault's pair words, on the real contract and mirrored.

The two leaves of a Merkle pair share one word, keyed by their parent hash: the wei
claimed by the smaller leaf in the low 128 bits, by the larger in the high 128 bits.
These properties credit arbitrary amounts (up to the 2**128 - 1 revenue cap, far more
ether than exists) between claims by either leaf, with full or first-element-only
proofs, and check against exact integers that a lane never carries into its
neighbour, that each leaf sees only its own lane, and that claimed + claimable ==
the floor share.
"""

from __future__ import annotations

import boa
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contracts import helpers as h
from tributa.merkle import contributors_proof

BPS = 10_000
LANE = 2**128

_SYSTEM = h.deploy_system()
# uneven shares, so that the two leaves of a pair are owed different amounts
_DATASET = h.register_dataset(
    _SYSTEM.registry, h.funded_address("packing_owner"), 10, label="packing", shares=[1, 2, 3, 4, 5, 6, 7, 8, 9, 9955]
)

credits = st.lists(st.integers(min_value=0, max_value=LANE // 8), min_size=1, max_size=6)
steps = st.lists(st.tuples(st.sampled_from([0, 1]), st.booleans(), st.booleans()), min_size=6, max_size=6)


def _credit(vault, escrow: str, dataset_id: int, amount: int) -> None:
    boa.env.set_balance(escrow, boa.env.get_balance(escrow) + amount + 10**18)
    with boa.env.prank(escrow):
        vault.credit(1, [dataset_id], [amount], value=amount)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(amounts=credits, plan=steps, pair=st.integers(min_value=0, max_value=4))
def test_pair_word__any_credits_and_claims_by_either_leaf__keeps_the_lanes_apart(amounts, plan, pair):
    vault = _SYSTEM.vault
    did, c, s = _DATASET
    leaves = (2 * pair, 2 * pair + 1)
    proofs = {i: contributors_proof(c, s, i) for i in leaves}
    with boa.env.anchor():
        revenue = 0
        paid = {i: 0 for i in leaves}
        for amount, (which, do_claim, short) in zip(amounts, plan, strict=False):
            _credit(vault, vault.escrow(), did, amount)
            revenue += amount
            i = leaves[which]
            owed = revenue * s[i] // BPS - paid[i]
            proof = proofs[i][:1] if short and paid[i] else proofs[i]
            assert vault.claimable(did, 1, c[i], s[i], proof) == owed
            if do_claim and owed:
                with boa.env.prank(c[i]):
                    assert vault.claim(did, 1, s[i], proof) == owed
                paid[i] += owed
            for j in leaves:
                assert vault.claimed(did, 1, c[j], s[j], proofs[j][:1]) == paid[j]
        for j in leaves:
            assert paid[j] + vault.claimable(did, 1, c[j], s[j], proofs[j]) == revenue * s[j] // BPS
        assert sum(paid.values()) <= revenue < LANE


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(min_value=0, max_value=LANE - 1),
    high=st.integers(min_value=0, max_value=LANE - 1),
    owed=st.integers(min_value=1, max_value=LANE - 1),
    lane=st.sampled_from([0, 128]),
)
def test_lane_arithmetic__an_amount_below_2_128__never_reaches_the_other_lane(low, high, owed, lane):
    # The vault's arithmetic, mirrored: word + (owed << lane), with already + owed below 2**128
    # (a lane holds a floor share of a revenue that credit keeps below 2**128).
    already = low if lane == 0 else high
    if already + owed >= LANE:
        return
    word = (low | high << 128) + (owed << lane)
    assert (word >> lane) & (LANE - 1) == already + owed
    assert (word >> (128 - lane)) & (LANE - 1) == (high if lane == 0 else low)
    assert word < 2**256


@settings(max_examples=200, deadline=None)
@given(a=st.binary(min_size=32, max_size=32), b=st.binary(min_size=32, max_size=32))
def test_pair_key__two_siblings__share_the_key_and_take_opposite_lanes(a, b):
    # The vault's _pair_of, mirrored: key = hash_pair(leaf, sibling), lane 0 for the smaller.
    if a == b:
        return

    def pair_of(leaf: bytes, sibling: bytes) -> tuple[bytes, int]:
        if int.from_bytes(leaf, "big") < int.from_bytes(sibling, "big"):
            return keccak(leaf + sibling), 0
        return keccak(sibling + leaf), 128

    (key_a, lane_a), (key_b, lane_b) = pair_of(a, b), pair_of(b, a)
    assert key_a == key_b
    assert {lane_a, lane_b} == {0, 128}
