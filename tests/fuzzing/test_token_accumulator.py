"""Stateless properties of ModelToken's accumulator arithmetic, on the real contract.

The holder accumulator is kept modulo 2**256; only `revenue_per_share * balance +
correction` is ever read, and its true value is bounded by the ether that exists. These
properties start the accumulator anywhere in [0, 2**256) (as if any amount of revenue had
already gone through and been claimed) and check the contract against exact integers.
"""

from __future__ import annotations

import boa
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.contracts import imo_helpers as ih

MAG = 2**128
ETHER_EXISTS = 2**100  # a generous bound on all ether (about 2**87 wei today)

start = st.integers(min_value=0, max_value=2**256 - 1)
supply = st.one_of(st.integers(min_value=2, max_value=1_000), st.integers(min_value=2, max_value=2**112))
revenues = st.lists(st.integers(min_value=1, max_value=ETHER_EXISTS // 64), min_size=1, max_size=6)


def _token_with_accumulator_at(rps: int, total: int, redeem_bps: int = 0):
    """A live token whose accumulator reads `rps`; the custodian then hands all but one
    base unit to `alice` and alice moves them on to `bob`, who starts from an exact 0."""
    issuer, alice, bob, payer = (ih.funded(n, 10**32) for n in ("issuer", "alice", "bob", "payer"))
    token = ih.deploy_token(issuer, total, redeem_bps)
    token.go_live(sender=issuer)
    token.transfer(alice, total - 1, sender=issuer)
    boa.env.set_storage(token.address, token._storage.revenue_per_share.slot, rps)
    token.transfer(bob, total - 1, sender=alice)
    return token, bob, payer


@settings(max_examples=60, deadline=None)
@given(rps=start, total=supply, amounts=revenues)
def test_claimable__from_any_accumulator_value__equals_exact_integer_arithmetic(rps, total, amounts):
    with boa.env.anchor():
        token, bob, payer = _token_with_accumulator_at(rps, total)
        exact = 0
        for amount in amounts:
            ih.send_revenue(token, payer, amount)  # never reverts, wherever the accumulator is
            exact += amount * MAG // total * (total - 1)
            assert token.claimable_revenue(bob) == exact // MAG
        if exact // MAG:
            assert token.claim(sender=bob) == exact // MAG
            assert token.claimable_revenue(bob) == 0
        assert token.revenue_per_share() == (rps + sum(a * MAG // total for a in amounts)) % 2**256


@settings(max_examples=60, deadline=None)
@given(total=supply, amounts=revenues, redeem_bps=st.integers(min_value=1, max_value=10_000))
def test_redeem_value__is_the_floor_of_the_exact_per_token_accrual(total, amounts, redeem_bps):
    with boa.env.anchor():
        token, _bob, payer = _token_with_accumulator_at(1, total, redeem_bps)
        per_share, revenue = 0, 0
        for amount in amounts:
            ih.send_revenue(token, payer, amount)
            to_pool = (revenue + amount) * redeem_bps // 10_000 - revenue * redeem_bps // 10_000
            per_share += to_pool * MAG // total
            revenue += amount
        assert token.redeem_per_share() == per_share
        pool = revenue * redeem_bps // 10_000
        assert token.redeem_pool() == pool
        assert token.redeemable_on_burn(total - 1) <= pool
        assert token.redeemable_on_burn(total - 1) == (total - 1) * token.redeem_per_share() // MAG
