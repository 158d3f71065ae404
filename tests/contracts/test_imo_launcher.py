"""IMOLauncher with the real DataRegistry (and TaskEscrow for the fee flow): launch, buy,
finalize, refund, token and vesting claims, proceeds, excess, views, events, gas."""

from __future__ import annotations

import boa
import pytest

from tests.contracts import helpers as h
from tests.contracts import imo_helpers as ih
from tests.contracts.imo_helpers import ACTIVE, DAY, ETHER, FAILED, SUCCEEDED, UNIT

SUPPLY = 1_000_000 * UNIT
PRICE = 10**14  # wei per whole token: 0.0001 ETH
PUBLISHER_BPS = 2_000  # 200k tokens vest to the publisher, 800k for sale
SOFT_CAP = 20 * ETHER
HARD_CAP = 60 * ETHER  # 600k tokens
SALE = 7 * DAY
VESTING = 100 * DAY
REDEEM_BPS = 1_000


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def blueprint():
    return ih.partial("ModelToken").deploy_as_blueprint()


@pytest.fixture(scope="module")
def launcher(world, blueprint):
    launcher = ih.partial("IMOLauncher").deploy(world.registry.address, blueprint.address)
    world.registry.set_imo_launcher(launcher.address, sender=world.owner)
    return launcher


@pytest.fixture(scope="module")
def buyers():
    return [ih.funded(f"buyer{i}", 10_000 * ETHER) for i in range(3)]


def params(w, **overrides) -> dict:
    p = dict(
        model_id=w.model_id,
        name="Tiny GPT2 Model",
        symbol="TGPT",
        supply=SUPPLY,
        price=PRICE,
        soft_cap=SOFT_CAP,
        hard_cap=HARD_CAP,
        sale_end=boa.env.timestamp + SALE,
        publisher_share_bps=PUBLISHER_BPS,
        vesting_duration=VESTING,
        redeem_share_bps=REDEEM_BPS,
    )
    p.update(overrides)
    return p


def launch(launcher, w, sender=None, **overrides) -> int:
    p = params(w, **overrides)
    return launcher.launch(*p.values(), sender=sender or w.publisher)


def token_of(launcher, imo_id):
    return ih.partial("ModelToken").at(launcher.imo(imo_id).token)


@pytest.fixture
def imo_id(launcher, w):
    return launch(launcher, w)


@pytest.fixture
def token(launcher, imo_id):
    return token_of(launcher, imo_id)


def succeed(launcher, imo_id, buyers, amounts=(10 * ETHER, 15 * ETHER)):
    for buyer, amount in zip(buyers, amounts, strict=False):
        launcher.buy(imo_id, value=amount, sender=buyer)
    boa.env.time_travel(seconds=SALE)
    assert launcher.finalize(imo_id) is True


def fail(launcher, imo_id, buyers, amounts=(3 * ETHER, 5 * ETHER + 7)):
    for buyer, amount in zip(buyers, amounts, strict=False):
        launcher.buy(imo_id, value=amount, sender=buyer)
    boa.env.time_travel(seconds=SALE)
    assert launcher.finalize(imo_id) is False


# ------------------------------------------------------------------ construction


def test_init__stores_registry_and_blueprint(launcher, w, blueprint):
    assert launcher.registry() == w.registry.address
    assert launcher.model_token_blueprint() == blueprint.address
    assert launcher.imo_count() == 0


@pytest.mark.parametrize("which, reason", [("registry", "imo: zero registry"), ("blueprint", "imo: zero blueprint")])
def test_init__zero_address__reverts(w, blueprint, which, reason):
    registry = ih.ZERO_ADDRESS if which == "registry" else w.registry.address
    bp = ih.ZERO_ADDRESS if which == "blueprint" else blueprint.address
    with boa.reverts(reason):
        ih.partial("IMOLauncher").deploy(registry, bp)


# ------------------------------------------------------------------ launch


def test_launch__by_publisher__creates_token_and_opens_sale(launcher, w):
    p = params(w)
    imo_id = launcher.launch(*p.values(), sender=w.publisher)
    [event] = ih.events(launcher, "Launched")
    assert imo_id == 1
    imo = launcher.imo(imo_id)
    assert imo.model_id == w.model_id
    assert imo.publisher == w.publisher
    assert (imo.price, imo.soft_cap, imo.hard_cap, imo.sale_end) == (PRICE, SOFT_CAP, HARD_CAP, p["sale_end"])
    assert (imo.raised, imo.sold, imo.refunded, imo.vested_claimed) == (0, 0, 0, 0)
    assert imo.publisher_tokens == 200_000 * UNIT
    assert imo.tokens_for_sale == 800_000 * UNIT
    assert imo.vesting_duration == VESTING and imo.vesting_start == 0
    assert imo.proceeds_withdrawn is False
    assert imo.state == ACTIVE
    assert launcher.imo_of_model(w.model_id) == imo_id
    assert launcher.imo_count() == 1

    token = ih.partial("ModelToken").at(imo.token)
    assert token.name() == "Tiny GPT2 Model" and token.symbol() == "TGPT"
    assert token.totalSupply() == SUPPLY
    assert token.balanceOf(launcher.address) == SUPPLY
    assert token.custodian() == launcher.address
    assert token.redeem_share_bps() == REDEEM_BPS
    assert token.model_id() == w.model_id

    assert (event.imo_id, event.model_id, event.publisher, event.token) == (imo_id, w.model_id, w.publisher, imo.token)
    assert (event.supply, event.price, event.soft_cap, event.hard_cap) == (SUPPLY, PRICE, SOFT_CAP, HARD_CAP)
    assert (event.sale_end, event.publisher_tokens, event.vesting_duration, event.redeem_share_bps) == (
        p["sale_end"],
        200_000 * UNIT,
        VESTING,
        REDEEM_BPS,
    )


def test_launch__without_redeem_share__defaults_to_zero(launcher, w):
    p = params(w)
    del p["redeem_share_bps"]
    imo_id = launcher.launch(*p.values(), sender=w.publisher)
    assert token_of(launcher, imo_id).redeem_share_bps() == launcher.DEFAULT_REDEEM_SHARE_BPS() == 0


def test_launch__by_someone_else__reverts(launcher, w, buyers):
    with boa.reverts("imo: not the model's publisher"):
        launch(launcher, w, sender=buyers[0])


def test_launch__unknown_model__reverts(launcher, w):
    with boa.reverts("imo: unknown model"):
        launch(launcher, w, model_id=999)


def test_launch__inactive_model__reverts(launcher, w):
    w.registry.set_model_active(w.model_id, False, sender=w.publisher)
    with boa.reverts("imo: model inactive"):
        launch(launcher, w)


def test_launch__launcher_not_authorised_by_registry__reverts(launcher, w):
    w.registry.set_imo_launcher(ih.ZERO_ADDRESS, sender=w.owner)
    with boa.reverts("imo: launcher not authorised by registry"):
        launch(launcher, w)


def test_launch__while_the_model_has_an_active_imo__reverts(launcher, w, imo_id):
    with boa.reverts("imo: model already has an imo"):
        launch(launcher, w)


def test_launch__after_a_successful_imo__reverts(launcher, w, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    with boa.reverts("imo: model already has an imo"):
        launch(launcher, w)


def test_launch__after_a_failed_imo__opens_a_new_sale(launcher, w, imo_id, buyers):
    fail(launcher, imo_id, buyers)
    second = launch(launcher, w, symbol="TGPT2")
    assert second == imo_id + 1
    assert launcher.imo_of_model(w.model_id) == second
    assert launcher.imo(second).token != launcher.imo(imo_id).token


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (dict(name=""), "imo: empty name"),
        (dict(symbol=""), "imo: empty symbol"),
        (dict(supply=0), "imo: zero supply"),
        (dict(supply=2**112 + 1), "imo: supply too large"),
        (dict(price=0), "imo: zero price"),
        (dict(hard_cap=0, soft_cap=0), "imo: zero hard cap"),
        (dict(hard_cap=2**128 + 1), "imo: hard cap too large"),
        (dict(soft_cap=HARD_CAP + 1), "imo: soft cap above hard cap"),
        (dict(sale_end="now"), "imo: sale end in the past"),
        (dict(sale_end="past"), "imo: sale end in the past"),
        (dict(sale_end="too_far"), "imo: sale too long"),
        (dict(publisher_share_bps=9_001), "imo: publisher share too high"),
        (dict(vesting_duration=10 * 365 * DAY + 1), "imo: vesting too long"),
        (dict(redeem_share_bps=5_001), "imo: redeem share too high"),
        (dict(price=10**36, soft_cap=0, hard_cap=10**17), "imo: hard cap buys no tokens"),
        (dict(hard_cap=80 * ETHER + 1), "imo: hard cap exceeds tokens for sale"),
        (dict(publisher_share_bps=9_000), "imo: hard cap exceeds tokens for sale"),
    ],
)
def test_launch__bad_parameter__reverts_with_clear_reason(launcher, w, overrides, reason):
    now = boa.env.timestamp
    when = {"now": now, "past": now - 1, "too_far": now + 365 * DAY + 1}
    if "sale_end" in overrides:
        overrides = dict(overrides, sale_end=when[overrides["sale_end"]])
    with boa.reverts(reason):
        launch(launcher, w, **overrides)
    assert launcher.imo_count() == 0


def test_launch__at_the_bounds__is_accepted(launcher, w):
    imo_id = launch(
        launcher,
        w,
        hard_cap=80 * ETHER,  # exactly the tokens for sale
        soft_cap=0,
        sale_end=boa.env.timestamp + 365 * DAY,
        vesting_duration=10 * 365 * DAY,
        redeem_share_bps=5_000,
    )
    assert launcher.imo(imo_id).state == ACTIVE


# ------------------------------------------------------------------ buy


def test_buy__records_purchase_and_keeps_tokens_in_launcher(launcher, imo_id, token, buyers):
    tokens = launcher.buy(imo_id, value=3 * ETHER, sender=buyers[0])
    [event] = ih.events(launcher, "Purchased")
    assert tokens == 30_000 * UNIT
    assert (event.imo_id, event.buyer, event.paid, event.tokens, event.excess) == (
        imo_id,
        buyers[0],
        3 * ETHER,
        tokens,
        0,
    )
    p = launcher.purchased(imo_id, buyers[0])
    assert (p.paid, p.tokens, p.tokens_claimed, p.refunded) == (3 * ETHER, tokens, False, False)
    imo = launcher.imo(imo_id)
    assert (imo.raised, imo.sold) == (3 * ETHER, tokens)
    assert token.balanceOf(buyers[0]) == 0
    assert token.balanceOf(launcher.address) == SUPPLY
    assert boa.env.get_balance(launcher.address) == 3 * ETHER


def test_buy__twice__accumulates(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=ETHER, sender=buyers[0])
    launcher.buy(imo_id, value=2 * ETHER + 5, sender=buyers[0])
    p = launcher.purchased(imo_id, buyers[0])
    assert p.paid == 3 * ETHER + 5
    assert p.tokens == 10_000 * UNIT + (2 * ETHER + 5) * UNIT // PRICE


def test_buy__odd_amount__rounds_tokens_down_and_keeps_full_payment(launcher, w, buyers):
    imo_id = launch(
        launcher, w, price=3 * 10**18, soft_cap=0, hard_cap=3_000 * ETHER, supply=10_000 * UNIT, publisher_share_bps=0
    )
    tokens = launcher.buy(imo_id, value=10, sender=buyers[0])  # 1 base unit costs 3 wei
    assert tokens == 3
    assert launcher.purchased(imo_id, buyers[0]).paid == 10


def test_buy__over_the_hard_cap__fills_up_to_the_cap_and_credits_the_excess(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=50 * ETHER, sender=buyers[0])
    tokens = launcher.buy(imo_id, value=15 * ETHER, sender=buyers[1])
    [event] = ih.events(launcher, "Purchased")
    assert (event.paid, event.excess) == (10 * ETHER, 5 * ETHER)
    assert tokens == 100_000 * UNIT
    assert launcher.purchased(imo_id, buyers[1]).paid == 10 * ETHER
    assert launcher.excess_of(buyers[1]) == 5 * ETHER
    assert launcher.imo(imo_id).raised == HARD_CAP
    assert launcher.can_finalize(imo_id) is True


def test_buy__at_the_hard_cap__reverts(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=HARD_CAP, sender=buyers[0])
    with boa.reverts("imo: hard cap reached"):
        launcher.buy(imo_id, value=1, sender=buyers[1])


def test_buy__zero_value__reverts(launcher, imo_id, buyers):
    with boa.reverts("imo: zero value"):
        launcher.buy(imo_id, value=0, sender=buyers[0])


def test_buy__unknown_imo__reverts(launcher, buyers):
    with boa.reverts("imo: unknown imo"):
        launcher.buy(42, value=ETHER, sender=buyers[0])


def test_buy__after_sale_end__reverts(launcher, imo_id, buyers):
    boa.env.time_travel(seconds=SALE)
    with boa.reverts("imo: sale ended"):
        launcher.buy(imo_id, value=ETHER, sender=buyers[0])


def test_buy__after_finalize__reverts(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=HARD_CAP, sender=buyers[0])
    launcher.finalize(imo_id)
    with boa.reverts("imo: sale finalized"):
        launcher.buy(imo_id, value=ETHER, sender=buyers[1])


def test_buy__value_below_one_base_unit__reverts(launcher, w, buyers):
    imo_id = launch(
        launcher, w, price=3 * 10**18, soft_cap=0, hard_cap=3_000 * ETHER, supply=10_000 * UNIT, publisher_share_bps=0
    )
    with boa.reverts("imo: value buys no tokens"):
        launcher.buy(imo_id, value=2, sender=buyers[0])


# ------------------------------------------------------------------ finalize


def test_finalize__before_sale_end__reverts(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=SOFT_CAP, sender=buyers[0])
    assert launcher.can_finalize(imo_id) is False
    with boa.reverts("imo: sale still open"):
        launcher.finalize(imo_id)


def test_finalize__unknown_imo__reverts(launcher):
    with boa.reverts("imo: unknown imo"):
        launcher.finalize(42)


def test_finalize__twice__reverts(launcher, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    assert launcher.can_finalize(imo_id) is False
    with boa.reverts("imo: already finalized"):
        launcher.finalize(imo_id)


def test_finalize__soft_cap_met__succeeds_burns_unsold_and_points_fees_at_token(launcher, w, imo_id, token, buyers):
    launcher.buy(imo_id, value=10 * ETHER, sender=buyers[0])
    launcher.buy(imo_id, value=15 * ETHER, sender=buyers[1])
    boa.env.time_travel(seconds=SALE)
    assert launcher.can_finalize(imo_id) is True
    assert launcher.finalize(imo_id, sender=buyers[2]) is True  # anyone may finalize
    [event] = ih.events(launcher, "Finalized")
    sold = 250_000 * UNIT
    assert (event.imo_id, event.succeeded, event.raised, event.sold, event.burned) == (
        imo_id,
        True,
        25 * ETHER,
        sold,
        800_000 * UNIT - sold,
    )
    imo = launcher.imo(imo_id)
    assert imo.state == SUCCEEDED
    assert imo.vesting_start == boa.env.timestamp
    assert token.totalSupply() == sold + 200_000 * UNIT
    assert token.balanceOf(launcher.address) == sold + 200_000 * UNIT
    assert token.circulating_supply() == 0
    assert token.live() is True
    active, _fee, receiver = w.registry.model_pricing(w.model_id)
    assert receiver == token.address and active
    assert w.registry.fee_receiver_locked(w.model_id) is True


def test_finalize__hard_cap_reached__is_allowed_before_sale_end(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=HARD_CAP, sender=buyers[0])
    assert launcher.can_finalize(imo_id) is True
    assert launcher.finalize(imo_id) is True
    assert launcher.imo(imo_id).state == SUCCEEDED


def test_finalize__all_tokens_sold__burns_nothing(launcher, w, buyers):
    imo_id = launch(launcher, w, hard_cap=80 * ETHER)
    launcher.buy(imo_id, value=80 * ETHER, sender=buyers[0])
    launcher.finalize(imo_id)
    [event] = ih.events(launcher, "Finalized")
    assert event.burned == 0
    assert token_of(launcher, imo_id).totalSupply() == SUPPLY


def test_finalize__sold_out_within_one_unit_of_a_hard_cap_equal_to_the_soft_cap__succeeds(launcher, w, buyers):
    # 3 wei per base unit: 9 of the 10 wei cap buy 3 units and 1 wei cannot buy a 4th
    imo_id = launch(
        launcher, w, price=3 * 10**18, soft_cap=10, hard_cap=10, supply=10_000 * UNIT, publisher_share_bps=0
    )
    launcher.buy(imo_id, value=9, sender=buyers[0])
    with boa.reverts("imo: hard cap reached"):
        launcher.buy(imo_id, value=1, sender=buyers[1])
    assert launcher.can_finalize(imo_id) is True
    assert launcher.finalize(imo_id) is True


def test_finalize__soft_cap_missed__fails_and_burns_every_token(launcher, w, imo_id, token, buyers):
    launcher.buy(imo_id, value=5 * ETHER, sender=buyers[0])
    boa.env.time_travel(seconds=SALE)
    assert launcher.finalize(imo_id) is False
    [event] = ih.events(launcher, "Finalized")
    assert (event.succeeded, event.raised, event.sold, event.burned) == (False, 5 * ETHER, 50_000 * UNIT, SUPPLY)
    assert launcher.imo(imo_id).state == FAILED
    assert token.totalSupply() == 0
    assert token.live() is False
    assert w.registry.model_pricing(w.model_id)[2] == w.fee_receiver  # untouched
    assert w.registry.fee_receiver_locked(w.model_id) is False


def test_finalize__with_no_buyer_and_zero_soft_cap__succeeds(launcher, w, buyers):
    imo_id = launch(launcher, w, soft_cap=0)
    boa.env.time_travel(seconds=SALE)
    assert launcher.finalize(imo_id) is True
    assert token_of(launcher, imo_id).totalSupply() == 200_000 * UNIT


def test_finalize__zero_supply_token_locking_the_fee_receiver__fails(launcher, w, buyers):
    """Finding 8b: no buyer, no publisher share and a zero soft cap used to "succeed" with a
    token nobody holds, locking the model's fees to it. Such a sale now fails."""
    imo_id = launch(launcher, w, soft_cap=0, publisher_share_bps=0)
    boa.env.time_travel(seconds=SALE)
    assert launcher.finalize(imo_id) is False
    assert launcher.imo(imo_id).state == FAILED
    assert w.registry.fee_receiver_locked(w.model_id) is False
    assert w.registry.model_pricing(w.model_id)[2] == w.fee_receiver
    assert launch(launcher, w, symbol="AGAIN") != imo_id  # the publisher may launch again


def test_finalize__after_launcher_switch_freezing_buyers_eth__fails(launcher, w, imo_id, token, buyers):
    """Finding 8a: switching the registry's launcher mid-sale made finalize revert, and
    refunds need a failed sale, so the buyers' ETH was frozen."""
    launcher.buy(imo_id, value=SOFT_CAP, sender=buyers[0])
    boa.env.time_travel(seconds=SALE)
    w.registry.set_imo_launcher(ih.ZERO_ADDRESS, sender=w.owner)
    assert launcher.finalize(imo_id) is True
    assert w.registry.model_pricing(w.model_id)[2] == token.address
    assert launcher.claim_tokens(imo_id, sender=buyers[0]) == SOFT_CAP * UNIT // PRICE
    assert launcher.withdraw_proceeds(imo_id, sender=w.publisher) == SOFT_CAP


def test_finalize__failed_sale_after_launcher_switch__still_refunds(launcher, w, imo_id, buyers):
    launcher.buy(imo_id, value=ETHER, sender=buyers[0])
    boa.env.time_travel(seconds=SALE)
    w.registry.set_imo_launcher(ih.ZERO_ADDRESS, sender=w.owner)
    assert launcher.finalize(imo_id) is False
    assert launcher.refund(imo_id, sender=buyers[0]) == ETHER


def test_launch__second_imo_through_a_new_launcher_overriding_the_locked_receiver__fails(
    launcher, w, imo_id, token, buyers, blueprint
):
    """Finding 8c: after a launcher switch, a second IMO's finalize used to override the
    receiver an earlier IMO had locked."""
    succeed(launcher, imo_id, buyers)
    other = ih.partial("IMOLauncher").deploy(w.registry.address, blueprint.address)
    w.registry.set_imo_launcher(other.address, sender=w.owner)
    with boa.reverts("registry: fee receiver locked by an IMO"):
        launch(other, w, symbol="TAKE")
    assert w.registry.model_pricing(w.model_id)[2] == token.address


def test_launch__parallel_imo_through_a_new_launcher_during_a_sale__fails(launcher, w, imo_id, blueprint):
    other = ih.partial("IMOLauncher").deploy(w.registry.address, blueprint.address)
    w.registry.set_imo_launcher(other.address, sender=w.owner)
    with boa.reverts("registry: imo in progress"):
        launch(other, w, symbol="TWIN")


def test_finalize__one_wei_position_and_recycled_donations_freezing_revenue__fails(launcher, w, buyers):
    """The review's high finding, end to end: right after the sale, the attacker finalizes,
    claims a 1-wei purchase (at first the only tokens in hand), then donates and claims
    back again and again. The model's fees must still reach the token afterwards."""
    attacker = buyers[2]
    imo_id = launch(launcher, w, price=UNIT, soft_cap=0, hard_cap=10**6)  # 1 wei buys 1 base unit
    launcher.buy(imo_id, value=1, sender=attacker)
    boa.env.time_travel(seconds=SALE)
    assert launcher.finalize(imo_id, sender=attacker) is True
    launcher.claim_tokens(imo_id, sender=attacker)
    token = token_of(launcher, imo_id)
    for _ in range(40):
        ih.send_revenue(token, attacker, 10 * ETHER)
        if token.claimable_revenue(attacker):
            token.claim(sender=attacker)
    before = token.total_revenue_in()
    task_id = h.post_task(w.escrow, w.requester, model_id=w.model_id, fee=10**16)
    w.escrow.settle(h.settlement(task_id, agents=[w.agents[0]], agent_fee=10**15, escrow=w.escrow), sender=w.oracle)
    assert w.escrow.balance_of(token.address) == 0  # delivered at settlement
    assert token.total_revenue_in() == before + w.model_fee
    ih.send_revenue(token, w.requester, 27)
    # the publisher's vesting share earned its part of the model fee all along
    boa.env.time_travel(seconds=VESTING)
    launcher.claim_vested(imo_id, sender=w.publisher)
    assert token.claimable_revenue(w.publisher) > 0


def test_claim_vested__taking_the_pool_the_buyers_tokens_accrued__fails(launcher, w, buyers):
    """Finding 2: a publisher whose 90% vested after revenue arrived used to redeem 90% of a
    pool that only the buyer's tokens had accrued."""
    imo_id = launch(launcher, w, publisher_share_bps=9_000, soft_cap=0, hard_cap=10 * ETHER)
    launcher.buy(imo_id, value=10 * ETHER, sender=buyers[0])  # 100k of 1M tokens
    assert launcher.finalize(imo_id) is True
    launcher.claim_tokens(imo_id, sender=buyers[0])
    token = token_of(launcher, imo_id)
    ih.send_revenue(token, w.requester, 10 * ETHER)  # pool: 1 ETH
    buyer_value = token.redeemable_on_burn(100_000 * UNIT)
    assert abs(buyer_value - ETHER // 10) <= 1  # the buyer's 10% of the supply
    boa.env.time_travel(seconds=VESTING)
    launcher.claim_vested(imo_id, sender=w.publisher)
    assert token.redeemable_on_burn(100_000 * UNIT) == buyer_value
    assert token.burn(100_000 * UNIT, sender=buyers[0]) == buyer_value
    assert token.burn(900_000 * UNIT - 1, sender=w.publisher) <= ETHER - buyer_value


# ------------------------------------------------------------------ refund (soft cap missed)


def test_refund__soft_cap_missed__returns_exact_wei_to_every_buyer(launcher, imo_id, buyers):
    paid = [3 * ETHER + 1, 5 * ETHER + 7, 11 * ETHER - 13]  # 19 ETH - 5 wei < soft cap
    for buyer, amount in zip(buyers, paid, strict=False):
        launcher.buy(imo_id, value=amount, sender=buyer)
    launcher.buy(imo_id, value=1, sender=buyers[0])  # a second, tiny buy
    paid[0] += 1
    boa.env.time_travel(seconds=SALE)
    launcher.finalize(imo_id)
    for buyer, amount in zip(buyers, paid, strict=False):
        before = boa.env.get_balance(buyer)
        assert launcher.refund(imo_id, sender=buyer) == amount
        [event] = ih.events(launcher, "Refunded")
        assert (event.imo_id, event.buyer, event.amount) == (imo_id, buyer, amount)
        assert boa.env.get_balance(buyer) == before + amount
        assert launcher.purchased(imo_id, buyer).refunded is True
    assert launcher.imo(imo_id).refunded == sum(paid)
    assert boa.env.get_balance(launcher.address) == 0


def test_refund__twice__reverts(launcher, imo_id, buyers):
    fail(launcher, imo_id, buyers)
    launcher.refund(imo_id, sender=buyers[0])
    with boa.reverts("imo: nothing to refund"):
        launcher.refund(imo_id, sender=buyers[0])


def test_refund__by_non_buyer__reverts(launcher, imo_id, buyers):
    fail(launcher, imo_id, buyers[:2])
    with boa.reverts("imo: nothing to refund"):
        launcher.refund(imo_id, sender=buyers[2])


def test_refund__while_sale_active__reverts(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=ETHER, sender=buyers[0])
    with boa.reverts("imo: not failed"):
        launcher.refund(imo_id, sender=buyers[0])


def test_refund__after_success__reverts(launcher, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    with boa.reverts("imo: not failed"):
        launcher.refund(imo_id, sender=buyers[0])


def test_refund__unknown_imo__reverts(launcher, buyers):
    with boa.reverts("imo: unknown imo"):
        launcher.refund(42, sender=buyers[0])


# ------------------------------------------------------------------ claim tokens


def test_claim_tokens__after_success__transfers_bought_tokens(launcher, imo_id, token, buyers):
    succeed(launcher, imo_id, buyers)
    assert launcher.claim_tokens(imo_id, sender=buyers[0]) == 100_000 * UNIT
    [event] = ih.events(launcher, "TokensClaimed")
    assert (event.imo_id, event.buyer, event.amount) == (imo_id, buyers[0], 100_000 * UNIT)
    assert token.balanceOf(buyers[0]) == 100_000 * UNIT
    assert token.circulating_supply() == 100_000 * UNIT
    assert launcher.purchased(imo_id, buyers[0]).tokens_claimed is True


def test_claim_tokens__twice__reverts(launcher, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    launcher.claim_tokens(imo_id, sender=buyers[0])
    with boa.reverts("imo: nothing to claim"):
        launcher.claim_tokens(imo_id, sender=buyers[0])


def test_claim_tokens__by_non_buyer__reverts(launcher, imo_id, buyers):
    succeed(launcher, imo_id, buyers[:2])
    with boa.reverts("imo: nothing to claim"):
        launcher.claim_tokens(imo_id, sender=buyers[2])


def test_claim_tokens__before_finalize__reverts(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=ETHER, sender=buyers[0])
    with boa.reverts("imo: not succeeded"):
        launcher.claim_tokens(imo_id, sender=buyers[0])


def test_claim_tokens__after_failure__reverts(launcher, imo_id, buyers):
    fail(launcher, imo_id, buyers)
    with boa.reverts("imo: not succeeded"):
        launcher.claim_tokens(imo_id, sender=buyers[0])


# ------------------------------------------------------------------ proceeds


def test_withdraw_proceeds__pays_the_publisher_everything_raised(launcher, w, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    before = boa.env.get_balance(w.publisher)
    assert launcher.withdraw_proceeds(imo_id, sender=w.publisher) == 25 * ETHER
    [event] = ih.events(launcher, "ProceedsWithdrawn")
    assert (event.imo_id, event.publisher, event.amount) == (imo_id, w.publisher, 25 * ETHER)
    assert boa.env.get_balance(w.publisher) == before + 25 * ETHER
    assert launcher.imo(imo_id).proceeds_withdrawn is True


def test_withdraw_proceeds__twice__reverts(launcher, w, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    launcher.withdraw_proceeds(imo_id, sender=w.publisher)
    with boa.reverts("imo: proceeds already withdrawn"):
        launcher.withdraw_proceeds(imo_id, sender=w.publisher)


def test_withdraw_proceeds__by_someone_else__reverts(launcher, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    with boa.reverts("imo: not the publisher"):
        launcher.withdraw_proceeds(imo_id, sender=buyers[0])


def test_withdraw_proceeds__before_finalize__reverts(launcher, w, imo_id, buyers):
    launcher.buy(imo_id, value=SOFT_CAP, sender=buyers[0])
    with boa.reverts("imo: not succeeded"):
        launcher.withdraw_proceeds(imo_id, sender=w.publisher)


def test_withdraw_proceeds__after_failure__reverts(launcher, w, imo_id, buyers):
    fail(launcher, imo_id, buyers)
    with boa.reverts("imo: not succeeded"):
        launcher.withdraw_proceeds(imo_id, sender=w.publisher)


def test_withdraw_proceeds__with_nothing_raised__reverts(launcher, w):
    imo_id = launch(launcher, w, soft_cap=0)
    boa.env.time_travel(seconds=SALE)
    launcher.finalize(imo_id)
    with boa.reverts("imo: no proceeds"):
        launcher.withdraw_proceeds(imo_id, sender=w.publisher)


# ------------------------------------------------------------------ vesting


def test_claim_vested__vests_linearly_from_finalize(launcher, w, imo_id, token, buyers):
    succeed(launcher, imo_id, buyers)
    total = 200_000 * UNIT
    assert launcher.vested(imo_id) == 0
    boa.env.time_travel(seconds=VESTING // 4)
    assert launcher.claimable_vested(imo_id) == total // 4
    assert launcher.claim_vested(imo_id, sender=w.publisher) == total // 4
    [event] = ih.events(launcher, "VestedClaimed")
    assert (event.imo_id, event.publisher, event.amount) == (imo_id, w.publisher, total // 4)
    assert token.balanceOf(w.publisher) == total // 4
    boa.env.time_travel(seconds=VESTING)  # past the end
    assert launcher.claim_vested(imo_id, sender=w.publisher) == total - total // 4
    assert token.balanceOf(w.publisher) == total
    assert launcher.imo(imo_id).vested_claimed == total
    assert launcher.claimable_vested(imo_id) == 0


def test_claim_vested__with_nothing_vested_yet__reverts(launcher, w, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    with boa.reverts("imo: nothing vested"):
        launcher.claim_vested(imo_id, sender=w.publisher)


def test_claim_vested__fully_claimed__reverts(launcher, w, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    boa.env.time_travel(seconds=VESTING)
    launcher.claim_vested(imo_id, sender=w.publisher)
    with boa.reverts("imo: nothing vested"):
        launcher.claim_vested(imo_id, sender=w.publisher)


def test_claim_vested__zero_duration__vests_everything_at_finalize(launcher, w, buyers):
    imo_id = launch(launcher, w, vesting_duration=0)
    succeed(launcher, imo_id, buyers)
    assert launcher.claim_vested(imo_id, sender=w.publisher) == 200_000 * UNIT


def test_claim_vested__zero_publisher_share__has_nothing_to_claim(launcher, w, buyers):
    imo_id = launch(launcher, w, publisher_share_bps=0)
    succeed(launcher, imo_id, buyers)
    boa.env.time_travel(seconds=VESTING)
    with boa.reverts("imo: nothing vested"):
        launcher.claim_vested(imo_id, sender=w.publisher)


def test_claim_vested__by_someone_else__reverts(launcher, imo_id, buyers):
    succeed(launcher, imo_id, buyers)
    boa.env.time_travel(seconds=VESTING)
    with boa.reverts("imo: not the publisher"):
        launcher.claim_vested(imo_id, sender=buyers[0])


def test_claim_vested__before_finalize__reverts(launcher, w, imo_id):
    with boa.reverts("imo: not succeeded"):
        launcher.claim_vested(imo_id, sender=w.publisher)


def test_claim_vested__after_failure__reverts(launcher, w, imo_id, buyers):
    fail(launcher, imo_id, buyers)
    assert launcher.vested(imo_id) == 0
    with boa.reverts("imo: not succeeded"):
        launcher.claim_vested(imo_id, sender=w.publisher)


# ------------------------------------------------------------------ excess


def test_withdraw_excess__pays_back_what_went_over_the_cap(launcher, imo_id, buyers):
    launcher.buy(imo_id, value=HARD_CAP + 3 * ETHER, sender=buyers[0])
    before = boa.env.get_balance(buyers[0])
    assert launcher.withdraw_excess(sender=buyers[0]) == 3 * ETHER
    [event] = ih.events(launcher, "ExcessWithdrawn")
    assert (event.account, event.amount) == (buyers[0], 3 * ETHER)
    assert boa.env.get_balance(buyers[0]) == before + 3 * ETHER
    assert launcher.excess_of(buyers[0]) == 0


def test_withdraw_excess__with_nothing_credited__reverts(launcher, buyers):
    with boa.reverts("imo: no excess"):
        launcher.withdraw_excess(sender=buyers[0])


# ------------------------------------------------------------------ views


def test_imo__unknown_id__reverts(launcher):
    with boa.reverts("imo: unknown imo"):
        launcher.imo(1)


def test_purchased__unknown_id__reverts(launcher, buyers):
    with boa.reverts("imo: unknown imo"):
        launcher.purchased(1, buyers[0])


def test_purchased__non_buyer__is_empty(launcher, imo_id, buyers):
    p = launcher.purchased(imo_id, buyers[0])
    assert (p.paid, p.tokens, p.tokens_claimed, p.refunded) == (0, 0, False, False)


def test_can_finalize__unknown_or_finalized__is_false(launcher, imo_id, buyers):
    assert launcher.can_finalize(42) is False
    succeed(launcher, imo_id, buyers)
    assert launcher.can_finalize(imo_id) is False


def test_imo_of_model__without_imo__is_zero(launcher, w):
    assert launcher.imo_of_model(w.model_id) == 0


# ------------------------------------------------------------------ money never stuck


def test_success_path__every_wei_and_every_token_leaves_the_launcher(launcher, w, imo_id, token, buyers):
    launcher.buy(imo_id, value=30 * ETHER, sender=buyers[0])
    launcher.buy(imo_id, value=40 * ETHER, sender=buyers[1])  # 30 accepted, 10 excess
    assert launcher.finalize(imo_id) is True  # hard cap reached
    for buyer in buyers[:2]:
        launcher.claim_tokens(imo_id, sender=buyer)
    launcher.withdraw_excess(sender=buyers[1])
    launcher.withdraw_proceeds(imo_id, sender=w.publisher)
    boa.env.time_travel(seconds=VESTING)
    launcher.claim_vested(imo_id, sender=w.publisher)
    assert boa.env.get_balance(launcher.address) == 0
    assert token.balanceOf(launcher.address) == 0
    assert token.circulating_supply() == token.totalSupply() == 600_000 * UNIT + 200_000 * UNIT


def test_failure_path__every_wei_leaves_and_no_token_remains(launcher, imo_id, token, buyers):
    launcher.buy(imo_id, value=7 * ETHER, sender=buyers[0])
    launcher.buy(imo_id, value=9 * ETHER + 1, sender=buyers[1])
    boa.env.time_travel(seconds=SALE)
    launcher.finalize(imo_id)
    for buyer in buyers[:2]:
        launcher.refund(imo_id, sender=buyer)
    assert boa.env.get_balance(launcher.address) == 0
    assert token.totalSupply() == 0


def test_two_imos__keep_their_funds_apart(launcher, w, imo_id, buyers):
    other_model = h.register_model(w.registry, w.publisher, name="other-model")
    other = launch(launcher, w, model_id=other_model, symbol="OTHR")
    launcher.buy(imo_id, value=5 * ETHER, sender=buyers[0])  # will fail
    launcher.buy(other, value=HARD_CAP, sender=buyers[0])  # succeeds at cap
    launcher.finalize(other)
    boa.env.time_travel(seconds=SALE)
    launcher.finalize(imo_id)
    assert launcher.refund(imo_id, sender=buyers[0]) == 5 * ETHER
    assert launcher.withdraw_proceeds(other, sender=w.publisher) == HARD_CAP
    assert boa.env.get_balance(launcher.address) == 0


# ------------------------------------------------------------------ the model's fees reach the holders


def test_end_to_end__task_fees_on_the_model_are_claimed_by_token_holders(launcher, w, imo_id, token, buyers):
    succeed(launcher, imo_id, buyers, amounts=(10 * ETHER, 30 * ETHER))  # 100k + 300k tokens
    launcher.claim_tokens(imo_id, sender=buyers[0])
    launcher.claim_tokens(imo_id, sender=buyers[1])

    agent = w.agents[0]
    for i in range(3):
        task_id = h.post_task(w.escrow, w.requester, model_id=w.model_id, fee=10**16, input_digest=h.digest(f"q{i}"))
        w.escrow.settle(h.settlement(task_id, agents=[agent], agent_fee=10**15, escrow=w.escrow), sender=w.oracle)
    model_revenue = 3 * w.model_fee
    # delivered into the token as each task settles (finding 9): nothing waits in the escrow
    assert w.escrow.balance_of(token.address) == 0
    assert boa.env.get_balance(token.address) == model_revenue

    assert token.total_revenue_in() == model_revenue
    pool = model_revenue * REDEEM_BPS // 10_000
    assert token.redeem_pool() == pool
    holders = model_revenue - pool
    assert launcher.purchased(imo_id, buyers[0]).tokens == 100_000 * UNIT
    first = token.claim(sender=buyers[0])
    second = token.claim(sender=buyers[1])
    # per token of the supply: 100k and 300k of 600k (the publisher's 200k vest)
    assert holders // 6 - 1 <= first <= holders // 6
    assert holders // 2 - 1 <= second <= holders // 2


def test_end_to_end__fees_before_anyone_claims_tokens__accrue_in_custody_for_the_buyers(
    launcher, w, imo_id, token, buyers
):
    succeed(launcher, imo_id, buyers)  # 100k + 150k bought, 200k vesting: 450k tokens
    task_id = h.post_task(w.escrow, w.requester, model_id=w.model_id, fee=10**16)
    w.escrow.settle(h.settlement(task_id, agents=[w.agents[0]], agent_fee=10**15, escrow=w.escrow), sender=w.oracle)
    assert w.escrow.balance_of(token.address) == 0  # delivered at settlement
    assert token.total_revenue_in() == w.model_fee
    holders_part = w.model_fee - w.model_fee * REDEEM_BPS // 10_000
    launcher.claim_tokens(imo_id, sender=buyers[0])  # a late claim brings what its tokens accrued
    assert abs(token.claimable_revenue(buyers[0]) - holders_part * 100 // 450) <= 1
    assert abs(token.accrued_in_custody(350_000 * UNIT) - holders_part * 350 // 450) <= 1


# ------------------------------------------------------------------ gas (full-tx figures)


@pytest.mark.ignore_isolation  # gas_env commits state; it runs in its own Env
def test_gas__launch_and_buy(capsys):
    with ih.gas_env():
        owner, publisher, buyer, buyer2 = (
            ih.funded(n, 10**6 * ETHER) for n in ("owner", "publisher", "buyer", "buyer2")
        )
        registry = h.partial("DataRegistry").deploy(sender=owner)
        model_id = registry.register_model("m", h.digest("w"), [], [], [], 10**15, publisher, sender=publisher)
        blueprint = ih.partial("ModelToken").deploy_as_blueprint()
        launcher = ih.partial("IMOLauncher").deploy(registry.address, blueprint.address)
        registry.set_imo_launcher(launcher.address, sender=owner)
        args = (
            model_id,
            "Tiny GPT2 Model",
            "TGPT",
            SUPPLY,
            PRICE,
            SOFT_CAP,
            HARD_CAP,
            boa.env.timestamp + SALE,
            PUBLISHER_BPS,
            VESTING,
            REDEEM_BPS,
        )
        gas_launch, imo_id = ih.tx_gas(launcher, "launch", *args, sender=publisher)
        gas_first_buy, _ = ih.tx_gas(launcher, "buy", imo_id, sender=buyer, value=ETHER)
        gas_next_buy, _ = ih.tx_gas(launcher, "buy", imo_id, sender=buyer2, value=ETHER)
        gas_repeat_buy, _ = ih.tx_gas(launcher, "buy", imo_id, sender=buyer, value=ETHER)
    with capsys.disabled():
        print(
            f"\nGAS imo_launch: {gas_launch}\nGAS imo_buy_first: {gas_first_buy}"
            f"\nGAS imo_buy_new_buyer: {gas_next_buy}\nGAS imo_buy_repeat: {gas_repeat_buy}"
        )
    assert gas_launch < 2_500_000  # mostly the token's code deposit (7.3 kB runtime)
    assert gas_repeat_buy < gas_next_buy < 150_000
