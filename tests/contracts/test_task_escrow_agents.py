"""TaskEscrow: agent registration, stake, unbonding; owner administration."""

import boa
import pytest

from tests.contracts import helpers as h

PUBKEY = b"\x04" + b"\x22" * 64


def held(w):
    e = w.escrow
    return e.total_open_fees() + e.total_credited() + e.total_staked()


# ---------------------------------------------------------------- register


def test_register_agent__with_min_stake__registers_and_emits(w):
    acct = h.new_account()
    staked = w.escrow.total_staked()
    with boa.env.prank(acct.address):
        w.escrow.register_agent([1], 2, 8, PUBKEY, value=h.MIN_STAKE)
    (log,) = h.events(w.escrow, "AgentRegistered")
    assert (log.agent, log.stake, list(log.models), log.device_class, log.capacity, log.pubkey) == (
        acct.address,
        h.MIN_STAKE,
        [1],
        2,
        8,
        PUBKEY,
    )
    assert w.escrow.agent(acct.address) == (h.MIN_STAKE, 0, 0, 2, 8, True)
    assert w.escrow.agent_models(acct.address) == [1]
    assert w.escrow.agent_pubkey(acct.address) == PUBKEY
    assert w.escrow.serves_model(acct.address, 1) and not w.escrow.serves_model(acct.address, 2)
    assert w.escrow.total_staked() == staked + h.MIN_STAKE
    assert w.escrow.balance_of(acct.address) == 0  # stake is not a withdrawable balance
    assert boa.env.get_balance(w.escrow.address) == held(w)


def test_register_agent__twice__reverts(w):
    with boa.env.prank(w.agents[0].address), boa.reverts("escrow: already registered"):
        w.escrow.register_agent([1], 1, 1, PUBKEY, value=h.MIN_STAKE)


def test_register_agent__below_min_stake__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("escrow: stake below minimum"):
        w.escrow.register_agent([1], 1, 1, PUBKEY, value=h.MIN_STAKE - 1)


@pytest.mark.parametrize(
    "models, capacity, pubkey, reason",
    [
        ([1], 0, PUBKEY, "escrow: zero capacity"),
        ([1], 1, b"", "escrow: empty pubkey"),
        ([1, 2], 1, PUBKEY, "escrow: unknown model"),
        ([0], 1, PUBKEY, "escrow: unknown model"),
    ],
)
def test_register_agent__bad_profile__reverts(w, models, capacity, pubkey, reason):
    with boa.env.prank(w.stranger), boa.reverts(reason):
        w.escrow.register_agent(models, 1, capacity, pubkey, value=h.MIN_STAKE)


def test_serves_model__unregistered_account__is_false(w):
    assert not w.escrow.serves_model(w.stranger, 1)
    assert w.escrow.agent(w.stranger) == (0, 0, 0, 0, 0, False)


def test_update_agent__registered__replaces_profile(w):
    a = w.agents[0].address
    with boa.env.prank(w.stranger):
        h.register_model(w.registry, w.stranger, name="m2")
    with boa.env.prank(a):
        w.escrow.update_agent([2, 1], 0, 3, b"\x02" + b"\x33" * 32)
    (log,) = h.events(w.escrow, "AgentUpdated")
    assert (log.agent, list(log.models), log.device_class, log.capacity, log.pubkey) == (
        a,
        [2, 1],
        0,
        3,
        b"\x02" + b"\x33" * 32,
    )
    assert w.escrow.agent(a) == (h.MIN_STAKE, 0, 0, 0, 3, True)
    assert w.escrow.agent_models(a) == [2, 1] and w.escrow.serves_model(a, 2)


def test_update_agent__not_registered__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("escrow: not registered"):
        w.escrow.update_agent([1], 1, 1, PUBKEY)


def test_update_agent__bad_profile__reverts(w):
    with boa.env.prank(w.agents[0].address), boa.reverts("escrow: zero capacity"):
        w.escrow.update_agent([1], 1, 0, PUBKEY)


# ------------------------------------------------------------------- stake


def test_add_stake__registered__increases_stake(w):
    a = w.agents[0].address
    with boa.env.prank(a):
        w.escrow.add_stake(value=5)
    (log,) = h.events(w.escrow, "StakeAdded")
    assert (log.agent, log.amount) == (a, 5)
    assert w.escrow.agent(a)[0] == h.MIN_STAKE + 5
    assert boa.env.get_balance(w.escrow.address) == held(w)


def test_add_stake__not_registered_or_zero__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("escrow: not registered"):
        w.escrow.add_stake(value=1)
    with boa.env.prank(w.agents[0].address), boa.reverts("escrow: zero stake"):
        w.escrow.add_stake()


def test_request_unbond__moves_stake_to_unbonding_with_release_time(w):
    a = w.agents[0].address
    with boa.env.prank(a):
        w.escrow.add_stake(value=400)
        w.escrow.request_unbond(400)  # leaves exactly min_stake bonded
    (log,) = h.events(w.escrow, "UnbondRequested")
    release = boa.env.timestamp + h.UNBONDING_DELAY
    assert (log.agent, log.amount, log.release_at) == (a, 400, release)
    assert w.escrow.agent(a)[:3] == (h.MIN_STAKE, 400, release)
    assert w.escrow.total_staked() == 3 * h.MIN_STAKE + 400  # unbonding stake is still held
    assert w.escrow.serves_model(a, 1)


def test_request_unbond__second_request__adds_and_restarts_timer(w):
    a = w.agents[0].address
    with boa.env.prank(a):
        w.escrow.add_stake(value=150)
        w.escrow.request_unbond(100)
        boa.env.time_travel(seconds=h.DAY)
        w.escrow.request_unbond(50)
    assert w.escrow.agent(a)[1:3] == (150, boa.env.timestamp + h.UNBONDING_DELAY)


@pytest.mark.parametrize(
    "amount, reason", [(0, "escrow: zero amount"), (h.MIN_STAKE + 1, "escrow: amount exceeds stake")]
)
def test_request_unbond__bad_amount__reverts(w, amount, reason):
    with boa.env.prank(w.agents[0].address), boa.reverts(reason):
        w.escrow.request_unbond(amount)


def test_request_unbond__leave_dust_stake_registered__fails(w):
    # the review's PoC: unbond all but a dust stake, withdraw it, stay
    # registered and keep being paid while a slash takes ~0
    a = w.agents[0].address
    with boa.env.prank(a), boa.reverts("escrow: stake left below minimum"):
        w.escrow.request_unbond(h.MIN_STAKE - 1)
    assert w.escrow.agent(a)[:2] == (h.MIN_STAKE, 0)


def test_request_unbond__everything__agent_no_longer_serves_or_gets_paid(w):
    a = w.agents[0]
    with boa.env.prank(a.address):
        w.escrow.request_unbond(h.MIN_STAKE)
    assert w.escrow.agent(a.address)[:2] == (0, h.MIN_STAKE)
    assert not w.escrow.serves_model(a.address, 1)  # the oracle leases only where this is true
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle), boa.reverts("escrow: agent stake below minimum"):
        w.escrow.settle(h.settlement(tid, agents=[a], agent_fee=1, escrow=w.escrow))
    with boa.env.prank(a.address):
        w.escrow.add_stake(value=h.MIN_STAKE)  # re-bonding restores it
    assert w.escrow.serves_model(a.address, 1)


def test_serves_model__stake_below_min_after_min_raised__is_false(w):
    a = w.agents[0].address
    with boa.env.prank(w.owner):
        w.escrow.set_params(h.PROTOCOL_FEE_BPS, h.DATA_SHARE_BPS, h.SLASH_BPS, h.MIN_STAKE + 1, h.UNBONDING_DELAY)
    assert not w.escrow.serves_model(a, 1)
    with boa.env.prank(a):
        w.escrow.request_unbond(h.MIN_STAKE)  # unbonding everything is always allowed


def test_request_unbond__not_registered__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("escrow: not registered"):
        w.escrow.request_unbond(1)


def test_withdraw_stake__after_delay__sends_unbonded_stake(w):
    a = w.agents[0].address
    with boa.env.prank(a):
        w.escrow.request_unbond(h.MIN_STAKE)
        boa.env.time_travel(seconds=h.UNBONDING_DELAY - 1)
        with boa.reverts("escrow: still unbonding"):
            w.escrow.withdraw_stake()
        boa.env.time_travel(seconds=1)
        before = boa.env.get_balance(a)
        assert w.escrow.withdraw_stake() == h.MIN_STAKE
    (log,) = h.events(w.escrow, "StakeWithdrawn")
    assert (log.agent, log.amount) == (a, h.MIN_STAKE)
    assert boa.env.get_balance(a) == before + h.MIN_STAKE
    assert w.escrow.agent(a)[:3] == (0, 0, 0)
    assert w.escrow.total_staked() == 2 * h.MIN_STAKE
    assert boa.env.get_balance(w.escrow.address) == held(w)


def test_withdraw_stake__nothing_unbonding__reverts(w):
    with boa.env.prank(w.agents[0].address), boa.reverts("escrow: nothing unbonding"):
        w.escrow.withdraw_stake()


def test_withdraw_stake__unbonding_slashed_meanwhile__pays_what_is_left(w):
    a = w.agents[0]
    with boa.env.prank(a.address):
        w.escrow.request_unbond(h.MIN_STAKE)
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle):
        w.escrow.settle(h.settlement(tid, slashed=[a], escrow=w.escrow))
    boa.env.time_travel(seconds=h.UNBONDING_DELAY)
    with boa.env.prank(a.address):
        assert w.escrow.withdraw_stake() == h.MIN_STAKE - h.MIN_STAKE * h.SLASH_BPS // h.BPS


# ------------------------------------------------------------------- admin


def _deploy(**overrides):
    args = dict(
        registry=None,
        vault=None,
        treasury=None,
        pbps=h.PROTOCOL_FEE_BPS,
        dbps=h.DATA_SHARE_BPS,
        sbps=h.SLASH_BPS,
        min_stake=h.MIN_STAKE,
        delay=h.UNBONDING_DELAY,
    )
    args.update(overrides)
    return h.partial("TaskEscrow").deploy(*args.values())


@pytest.mark.parametrize(
    "overrides, reason",
    [
        (dict(registry=h.ZERO_ADDRESS), "escrow: zero registry"),
        (dict(vault=h.ZERO_ADDRESS), "escrow: zero vault"),
        (dict(treasury=h.ZERO_ADDRESS), "escrow: zero treasury"),
        (dict(pbps=3000, dbps=2001), "escrow: fee shares above 5000 bps"),
        (dict(sbps=10_001), "escrow: slash above 10000 bps"),
        (dict(delay=90 * h.DAY + 1), "escrow: unbonding delay too long"),
    ],
)
def test_constructor__bad_params__reverts(w, overrides, reason):
    base = dict(registry=w.registry.address, vault=w.vault.address, treasury=w.treasury)
    base.update(overrides)
    with boa.reverts(reason):
        _deploy(**base)


def test_constructor__valid_params__sets_everything_and_emits(w):
    e = _deploy(
        registry=w.registry.address,
        vault=w.vault.address,
        treasury=w.treasury,
        pbps=3000,
        dbps=2000,
        sbps=10_000,
        delay=90 * h.DAY,
    )
    names = [type(x).__name__ for x in e.get_logs()]
    assert "ParamsSet" in names and "TreasurySet" in names
    assert (e.protocol_fee_bps(), e.data_share_bps(), e.slash_bps(), e.min_stake(), e.unbonding_delay()) == (
        3000,
        2000,
        10_000,
        h.MIN_STAKE,
        90 * h.DAY,
    )
    assert (e.registry(), e.vault(), e.treasury()) == (w.registry.address, w.vault.address, w.treasury)
    assert (e.task_count(), e.total_open_fees(), e.total_credited(), e.total_staked()) == (0, 0, 0, 0)


def test_set_oracle__owner__grants_and_revokes(w):
    with boa.env.prank(w.owner):
        w.escrow.set_oracle(w.stranger, True)
        (log,) = h.events(w.escrow, "OracleSet")
        assert (log.oracle, log.enabled) == (w.stranger, True)
        assert w.escrow.is_oracle(w.stranger)
        w.escrow.set_oracle(w.stranger, False)
    assert not w.escrow.is_oracle(w.stranger)


def test_set_oracle__stranger_or_zero__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("ownable: caller is not the owner"):
        w.escrow.set_oracle(w.stranger, True)
    with boa.env.prank(w.owner), boa.reverts("escrow: zero oracle"):
        w.escrow.set_oracle(h.ZERO_ADDRESS, True)


def test_set_params__owner__updates_and_emits(w):
    with boa.env.prank(w.owner):
        w.escrow.set_params(100, 200, 300, 400, 40 * h.DAY)
    (log,) = h.events(w.escrow, "ParamsSet")
    assert (log.protocol_fee_bps, log.data_share_bps, log.slash_bps, log.min_stake, log.unbonding_delay) == (
        100,
        200,
        300,
        400,
        40 * h.DAY,
    )
    assert (
        w.escrow.protocol_fee_bps(),
        w.escrow.data_share_bps(),
        w.escrow.slash_bps(),
        w.escrow.min_stake(),
        w.escrow.unbonding_delay(),
    ) == (100, 200, 300, 400, 40 * h.DAY)


@pytest.mark.parametrize(
    "params, reason",
    [
        ((2500, 2501, 0, 0, h.UNBONDING_DELAY), "escrow: fee shares above 5000 bps"),
        ((0, 0, 10_001, 0, h.UNBONDING_DELAY), "escrow: slash above 10000 bps"),
        ((0, 0, 0, 0, 90 * 86_400 + 1), "escrow: unbonding delay too long"),
        ((0, 0, 0, 0, 31 * 86_400 - 1), "escrow: unbonding delay shorter than a task's slash window"),
    ],
)
def test_set_params__out_of_bounds__reverts(w, params, reason):
    with boa.env.prank(w.owner), boa.reverts(reason):
        w.escrow.set_params(*params)


def test_set_params__stranger__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("ownable: caller is not the owner"):
        w.escrow.set_params(0, 0, 0, 0, 0)


def test_set_treasury__owner__redirects_protocol_fees(w):
    new = boa.env.generate_address()
    with boa.env.prank(w.owner):
        w.escrow.set_treasury(new)
    (log,) = h.events(w.escrow, "TreasurySet")
    assert log.treasury == new and w.escrow.treasury() == new
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle):
        w.escrow.settle(h.settlement(tid))
    assert w.escrow.balance_of(new) == 10**16 * h.PROTOCOL_FEE_BPS // h.BPS


def test_set_treasury__stranger_or_zero__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("ownable: caller is not the owner"):
        w.escrow.set_treasury(w.stranger)
    with boa.env.prank(w.owner), boa.reverts("escrow: zero treasury"):
        w.escrow.set_treasury(h.ZERO_ADDRESS)


def test_constants__are_exposed(w):
    assert (
        w.escrow.MAX_K(),
        w.escrow.MAX_FEE_SHARES_BPS(),
        w.escrow.MAX_TASK_DURATION(),
        w.escrow.MAX_UNBONDING_DELAY(),
    ) == (5, 5000, 30 * h.DAY, 90 * h.DAY)
