"""The fee arithmetic of the transaction manager (oracle/tx/fees.py): pure, no node."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracle.db import TxAttempt
from oracle.tx.broadcaster import fees_of
from oracle.tx.fees import Market, bump, next_fees, top_fee
from oracle.tx.policy import MIN_BUMP_BPS, TxPolicy

GWEI = 10**9
wei = st.integers(min_value=0, max_value=10_000 * GWEI)


def raised_by_at_least(new: int, old: int, bps: int) -> bool:
    return new * 10_000 >= old * (10_000 + bps)


def test_next_fees__eip1559_no_floor__market_tip_and_room_for_the_base_fee_to_double():
    fees = next_fees(Market(base_fee=100, priority_fee=2), None, TxPolicy())
    assert fees == {"maxFeePerGas": 202, "maxPriorityFeePerGas": 2}


def test_next_fees__eip1559_bump__both_fields_up_12_5_pct_over_the_floor():
    floor = {"maxFeePerGas": 1000, "maxPriorityFeePerGas": 100}
    fees = next_fees(Market(base_fee=10, priority_fee=1), floor, TxPolicy())
    assert fees == {"maxFeePerGas": 1125, "maxPriorityFeePerGas": 113}  # 12.5 rounded up to 13
    assert raised_by_at_least(fees["maxFeePerGas"], 1000, MIN_BUMP_BPS)
    assert raised_by_at_least(fees["maxPriorityFeePerGas"], 100, MIN_BUMP_BPS)


def test_next_fees__market_above_the_bump__pays_the_market():
    floor = {"maxFeePerGas": 1000, "maxPriorityFeePerGas": 100}
    assert next_fees(Market(base_fee=2000, priority_fee=300), floor, TxPolicy()) == {
        "maxFeePerGas": 4300,
        "maxPriorityFeePerGas": 300,
    }


def test_next_fees__a_larger_bump_policy__is_used():
    fees = next_fees(
        Market(base_fee=1, priority_fee=1), {"maxFeePerGas": 1000, "maxPriorityFeePerGas": 100}, TxPolicy(bump_bps=5000)
    )
    assert fees == {"maxFeePerGas": 1500, "maxPriorityFeePerGas": 150}


def test_next_fees__fee_cap__max_fee_stops_there_and_the_tip_never_exceeds_it():
    policy = TxPolicy(max_fee_per_gas=1100)
    bumped = next_fees(Market(base_fee=10, priority_fee=1), {"maxFeePerGas": 1000, "maxPriorityFeePerGas": 100}, policy)
    assert bumped == {"maxFeePerGas": 1100, "maxPriorityFeePerGas": 113}
    tip_heavy = next_fees(Market(base_fee=10, priority_fee=5000), None, policy)
    assert tip_heavy == {"maxFeePerGas": 1100, "maxPriorityFeePerGas": 1100}


def test_next_fees__no_base_fee__legacy_gas_price_bumped_and_capped():
    market = Market(gas_price=900)
    assert next_fees(market, None, TxPolicy()) == {"gasPrice": 900}
    assert next_fees(market, {"gasPrice": 1000}, TxPolicy()) == {"gasPrice": 1125}
    assert next_fees(market, {"gasPrice": 1000}, TxPolicy(max_fee_per_gas=1050)) == {"gasPrice": 1050}
    assert next_fees(Market(gas_price=5000), {"gasPrice": 1000}, TxPolicy()) == {"gasPrice": 5000}


def test_next_fees__legacy_policy__gas_price_even_where_blocks_have_a_base_fee():
    fees = next_fees(Market(base_fee=100, priority_fee=2, gas_price=150), None, TxPolicy(legacy=True))
    assert fees == {"gasPrice": 150}


@pytest.mark.parametrize(("value", "bumped"), [(0, 1), (1, 2), (7, 8), (8, 9), (9, 11), (10**18, 1_125 * 10**15)])
def test_bump__rounds_up_and_always_adds_at_least_one_wei(value, bumped):
    assert bump(value, MIN_BUMP_BPS) == bumped


def test_top_fee__max_fee_or_gas_price():
    assert top_fee({"maxFeePerGas": 7, "maxPriorityFeePerGas": 1}) == 7
    assert top_fee({"gasPrice": 5}) == 5


def test_fees_of__an_attempt__its_signed_fields_only():
    eip1559 = TxAttempt(max_fee_per_gas=10, max_priority_fee_per_gas=0, gas_price=None)
    assert fees_of(eip1559) == {"maxFeePerGas": 10, "maxPriorityFeePerGas": 0}
    assert fees_of(TxAttempt(max_fee_per_gas=None, max_priority_fee_per_gas=None, gas_price=3)) == {"gasPrice": 3}


@given(
    base=wei,
    tip=wei,
    floor_max=wei,
    floor_tip_share=st.integers(min_value=0, max_value=100),
    bps=st.integers(min_value=MIN_BUMP_BPS, max_value=10_000),
)
def test_next_fees__eip1559_bump_without_cap__both_fields_raised_by_at_least_the_policy(
    base, tip, floor_max, floor_tip_share, bps
):
    floor = {"maxFeePerGas": floor_max, "maxPriorityFeePerGas": floor_max * floor_tip_share // 100}  # tip <= max
    fees = next_fees(Market(base_fee=base, priority_fee=tip), floor, TxPolicy(bump_bps=bps))
    assert raised_by_at_least(fees["maxFeePerGas"], floor["maxFeePerGas"], bps)
    assert raised_by_at_least(fees["maxPriorityFeePerGas"], floor["maxPriorityFeePerGas"], bps)
    assert fees["maxFeePerGas"] > floor["maxFeePerGas"] and fees["maxPriorityFeePerGas"] <= fees["maxFeePerGas"]
    assert fees["maxFeePerGas"] >= 2 * base + tip and fees["maxPriorityFeePerGas"] >= min(tip, fees["maxFeePerGas"])


@given(base=wei, tip=wei, floor_max=st.none() | wei, cap=wei)
def test_next_fees__eip1559_with_cap__never_above_it(base, tip, floor_max, cap):
    floor = None if floor_max is None else {"maxFeePerGas": floor_max, "maxPriorityFeePerGas": floor_max // 2}
    fees = next_fees(Market(base_fee=base, priority_fee=tip), floor, TxPolicy(max_fee_per_gas=cap))
    assert fees["maxPriorityFeePerGas"] <= fees["maxFeePerGas"] <= cap


@given(price=wei, floor_price=st.none() | wei, cap=st.none() | wei)
def test_next_fees__legacy__bumped_over_the_floor_unless_capped(price, floor_price, cap):
    floor = None if floor_price is None else {"gasPrice": floor_price}
    fees = next_fees(Market(gas_price=price), floor, TxPolicy(max_fee_per_gas=cap))
    assert list(fees) == ["gasPrice"]
    wanted = price if floor_price is None else max(price, bump(floor_price, MIN_BUMP_BPS))
    assert fees["gasPrice"] == (wanted if cap is None else min(wanted, cap))
    if floor_price is not None and cap is None:
        assert raised_by_at_least(fees["gasPrice"], floor_price, MIN_BUMP_BPS) and fees["gasPrice"] > floor_price
