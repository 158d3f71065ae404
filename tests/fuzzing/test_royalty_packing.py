"""Stateless properties of RoyaltyVault's packed claim word, on the real contract.

Per (dataset, version, account) the vault keeps one word: the wei claimed in the low
240 bits and the share proven by the first paying claim in the high 16 bits. These
properties credit arbitrary amounts (up to far more ether than exists) between claims
and check, against exact integers, that the amount never carries into the share bits,
that the share once proven never changes, and that claimed + claimable == the floor share.
"""

from __future__ import annotations

import boa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contracts import helpers as h
from tributa.merkle import contributors_proof

BPS = 10_000
ETHER_EXISTS = 2**100  # a generous bound on all ether (about 2**87 wei today)

_SYSTEM = h.deploy_system()
_DATASET = h.register_dataset(_SYSTEM.registry, h.funded_address("packing_owner"), 10, label="packing")

credits = st.lists(st.integers(min_value=0, max_value=ETHER_EXISTS // 8), min_size=1, max_size=6)
claims_after = st.lists(st.booleans(), min_size=6, max_size=6)


def _credit(vault, escrow: str, dataset_id: int, amount: int) -> None:
    boa.env.set_balance(escrow, boa.env.get_balance(escrow) + amount + 10**18)
    with boa.env.prank(escrow):
        vault.credit(1, [dataset_id], [amount], value=amount)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(amounts=credits, claim_flags=claims_after, index=st.integers(min_value=0, max_value=9))
def test_packed_word__any_credits_and_claims__keeps_amount_and_share_apart(amounts, claim_flags, index):
    vault = _SYSTEM.vault
    did, c, s = _DATASET
    account, share = c[index], s[index]
    with boa.env.anchor():
        revenue = paid = 0
        for amount, do_claim in zip(amounts, claim_flags):
            _credit(vault, vault.escrow(), did, amount)
            revenue += amount
            owed = revenue * share // BPS - paid
            proof = [] if paid else contributors_proof(c, s, index)
            assert vault.claimable(did, 1, account, share, proof) == owed
            if do_claim and owed:
                with boa.env.prank(account):
                    assert vault.claim(did, 1, share, proof) == owed
                paid += owed
            assert vault.claimed(did, 1, account) == paid
            assert vault.proven_share(did, 1, account) == (share if paid else 0)
        assert paid + vault.claimable(did, 1, account, share, contributors_proof(c, s, index)) == revenue * share // BPS


@settings(max_examples=60, deadline=None)
@given(already=st.integers(min_value=0, max_value=2**240 - 1), owed=st.integers(min_value=0, max_value=2**128), share=st.integers(min_value=1, max_value=BPS))
def test_packing__amount_below_2_240__never_reaches_the_share_bits(already, owed, share):
    # The vault's arithmetic, mirrored: word = share << 240 | already, then word + owed.
    if already + owed >= 2**240:
        return  # unreachable: a floor share of a version's revenue is below all ether
    word = (share << 240 | already) + owed
    assert word >> 240 == share
    assert word & (2**240 - 1) == already + owed
