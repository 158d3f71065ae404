"""TaskEscrow: posting, failing, refunding and withdrawing."""

import boa
import pytest

from tests.contracts import helpers as h

FEE = 10**16


def held(w) -> int:
    e = w.escrow
    return e.total_open_fees() + e.total_credited() + e.total_staked()


def assert_accounted(w):
    assert boa.env.get_balance(w.escrow.address) == held(w)


# --------------------------------------------------------------- post_task


def test_post_task__valid_input__escrows_fee_and_emits(w):
    deadline = boa.env.timestamp + 3600
    before = boa.env.get_balance(w.escrow.address)
    tid = h.post_task(w.escrow, w.requester, fee=FEE, k=3, deadline=deadline, input_digest=h.digest("in"))
    (log,) = h.events(w.escrow, "TaskPosted")
    assert tid == 1 and w.escrow.task_count() == 1
    assert (
        log.task_id,
        log.requester,
        log.model_id,
        log.input_digest,
        log.fee,
        log.model_fee,
        log.deadline,
        log.k,
    ) == (1, w.requester, w.model_id, h.digest("in"), FEE, w.model_fee, deadline, 3)
    assert w.escrow.task(tid) == (w.requester, w.model_id, h.digest("in"), FEE, w.model_fee, deadline, 3, h.OPEN)
    assert w.escrow.task_fee_shares(tid) == (h.PROTOCOL_FEE_BPS, h.DATA_SHARE_BPS)
    assert boa.env.get_balance(w.escrow.address) == before + FEE
    assert w.escrow.total_open_fees() == FEE
    assert_accounted(w)


def test_post_task__ids_increment_from_one(w):
    assert [h.post_task(w.escrow, w.requester) for _ in range(3)] == [1, 2, 3]
    assert w.escrow.task(0)[7] == 0


def test_post_task__bounds__k5_and_deadline_30_days_are_accepted(w):
    tid = h.post_task(w.escrow, w.requester, k=5, deadline=boa.env.timestamp + 30 * h.DAY)
    assert w.escrow.task(tid)[6] == 5


def test_post_task__fee_exactly_covers_model_price__is_accepted(w):
    # fee - 5 % - 10 % == model fee  =>  fee = model_fee / 0.85
    fee = w.model_fee * 10_000 // 8_500 + 1
    tid = h.post_task(w.escrow, w.requester, fee=fee)
    assert w.escrow.task(tid)[3] == fee


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(fee=0), "escrow: zero fee"),
        (dict(deadline_offset=0), "escrow: deadline passed"),
        (dict(deadline_offset=-1), "escrow: deadline passed"),
        (dict(deadline_offset=30 * 86_400 + 1), "escrow: deadline too far"),
        (dict(model_id=99), "escrow: unknown or inactive model"),
        (dict(model_id=0), "escrow: unknown or inactive model"),
        (dict(input_digest=b"\x00" * 32), "escrow: zero input digest"),
        (dict(k=0), "escrow: k out of range"),
        (dict(k=6), "escrow: k out of range"),
        (dict(fee=10**15), "escrow: fee below model price"),
        (dict(fee=2**96), "escrow: fee too large"),
    ],
)
def test_post_task__bad_input__reverts(w, kwargs, reason):
    fee = kwargs.get("fee", FEE)
    boa.env.set_balance(w.requester, fee + 10**18)
    deadline = boa.env.timestamp + kwargs.get("deadline_offset", 3600)
    with boa.env.prank(w.requester), boa.reverts(reason):
        w.escrow.post_task(
            kwargs.get("model_id", 1),
            kwargs.get("input_digest", h.digest("in")),
            deadline,
            kwargs.get("k", 1),
            h.MAX_UINT256,
            value=fee,
        )


def test_post_task__inactive_model__reverts(w):
    with boa.env.prank(w.publisher):
        w.registry.set_model_active(1, False)
    with boa.reverts("escrow: unknown or inactive model"):
        h.post_task(w.escrow, w.requester)


def test_post_task__front_run_fee_raise__fails(w):
    # the publisher raises the fee just before the requester's tx, which
    # carries the fee it was shown
    shown = w.registry.model(1)[3]
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 5 * 10**15)
    with boa.reverts("escrow: model fee above max"):
        h.post_task(w.escrow, w.requester, max_model_fee=shown)
    assert w.escrow.task_count() == 0
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, shown)
    tid = h.post_task(w.escrow, w.requester, max_model_fee=shown)  # at the fee shown: accepted
    assert w.escrow.task(tid)[4] == shown


def test_post_task__model_price_raised_later__keeps_snapshot(w):
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 5 * 10**15)
    assert w.escrow.task(tid)[4] == w.model_fee


def test_post_task__params_changed_later__keeps_fee_share_snapshot(w):
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.owner):
        w.escrow.set_params(0, 5000, 0, 0, h.UNBONDING_DELAY)
    assert w.escrow.task_fee_shares(tid) == (h.PROTOCOL_FEE_BPS, h.DATA_SHARE_BPS)
    assert w.escrow.task_fee_shares(h.post_task(w.escrow, w.requester)) == (0, 5000)


# ---------------------------------------------------------------- fail_task


def test_fail_task__by_oracle__marks_failed_and_emits(w):
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle):
        w.escrow.fail_task(tid, "no agent answered", [])
    (log,) = h.events(w.escrow, "TaskFailed")
    assert (log.task_id, log.reason) == (tid, "no agent answered")
    assert w.escrow.task(tid)[7] == h.FAILED
    assert w.escrow.total_open_fees() == FEE  # still held until refunded
    assert_accounted(w)


def test_fail_task__by_stranger__reverts(w):
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.stranger), boa.reverts("escrow: caller is not the oracle"):
        w.escrow.fail_task(tid, "x", [])


@pytest.mark.parametrize("task_id", [0, 2])
def test_fail_task__unknown_task__reverts(w, task_id):
    h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle), boa.reverts("escrow: task not open"):
        w.escrow.fail_task(task_id, "x", [])


def test_fail_task__already_failed__reverts(w):
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle):
        w.escrow.fail_task(tid, "x", [])
        with boa.reverts("escrow: task not open"):
            w.escrow.fail_task(tid, "x", [])


def _silent(w, tid, agents, ttl=60):
    """Lease proofs: each agent accepts the lease for `ttl` s, then lets it expire."""
    expires = boa.env.timestamp + ttl
    proofs = [h.lease_proof(a, w.escrow, tid, expires) for a in agents]
    boa.env.time_travel(seconds=ttl + 1)
    return proofs


def test_fail_task__agents_that_never_answered__slashed_and_fee_still_refunded_in_full(w):
    big = 4 * 10**17  # halves of the slashes (2 x 0.05 ETH) stay under the fee: no cap
    tid = h.post_task(w.escrow, w.requester, fee=big, k=2)
    silent = [a.address for a in w.agents[:2]]
    stakes = [w.escrow.agent(a)[0] for a in silent]
    proofs = _silent(w, tid, w.agents[:2])
    with boa.env.prank(w.oracle):
        w.escrow.fail_task(tid, "no agent answered", proofs)
    slash_logs = h.events(w.escrow, "AgentSlashed")
    w.escrow.refund(tid)

    amounts = [stake * h.SLASH_BPS // 10_000 for stake in stakes]
    assert [w.escrow.agent(a)[0] for a in silent] == [s - x for s, x in zip(stakes, amounts, strict=False)]
    assert [log.amount for log in slash_logs] == amounts
    assert w.escrow.balance_of(w.requester) == big + sum(x // 2 for x in amounts)
    assert w.escrow.balance_of(w.treasury) == sum(x - x // 2 for x in amounts)
    assert_accounted(w)


def test_fail_task__more_slashed_agents_than_k__reverts(w):
    tid = h.post_task(w.escrow, w.requester, k=1)
    proofs = _silent(w, tid, w.agents[:2])
    with boa.env.prank(w.oracle), boa.reverts("escrow: more agents than k"):
        w.escrow.fail_task(tid, "x", proofs)


def test_fail_task__duplicate_slashed_agent__reverts(w):
    tid = h.post_task(w.escrow, w.requester, k=2)
    proofs = _silent(w, tid, [w.agents[0], w.agents[0]])
    with boa.env.prank(w.oracle), boa.reverts("escrow: duplicate agent"):
        w.escrow.fail_task(tid, "x", proofs)


def test_fail_task__unregistered_slashed_agent__reverts(w):
    tid = h.post_task(w.escrow, w.requester, k=1)
    proofs = _silent(w, tid, [w.outsider])
    with boa.env.prank(w.oracle), boa.reverts("escrow: slashed agent not registered"):
        w.escrow.fail_task(tid, "x", proofs)


# ------------------------------------------------- fail_task: the review's attacks


def test_fail_task__slash_without_lease_signature__fails(w):
    # a leaked oracle key slashes an agent that never took the task: it has no
    # lease signature, so it forges one (own key), reuses one of another task,
    # or passes garbage
    victim = w.agents[0]
    tid = h.post_task(w.escrow, w.requester, k=1)
    other = h.post_task(w.escrow, w.requester, k=1)
    expires = boa.env.timestamp + 60
    forged = (victim.address, b"\x00" * 32, expires, h.sign_lease(w.outsider, w.escrow, tid, expires))
    replayed = (victim.address, b"\x00" * 32, expires, h.sign_lease(victim, w.escrow, other, expires))
    garbage = (victim.address, b"\x00" * 32, expires, b"\x00" * 65)
    boa.env.time_travel(seconds=61)
    for proof in (forged, replayed, garbage):
        with boa.env.prank(w.oracle), boa.reverts("escrow: bad slash proof"):
            w.escrow.fail_task(tid, "x", [proof])
    assert w.escrow.agent(victim.address)[0] == h.MIN_STAKE


def test_fail_task__slash_before_lease_expires__fails(w):
    tid = h.post_task(w.escrow, w.requester, k=1)
    proof = h.lease_proof(w.agents[0], w.escrow, tid, boa.env.timestamp)  # expires now: not yet expired
    with boa.env.prank(w.oracle), boa.reverts("escrow: lease not expired"):
        w.escrow.fail_task(tid, "x", [proof])


def test_fail_task__conflict_proof__fails(w):
    # a result signature proves the agent answered: it cannot fail it as silent
    tid = h.post_task(w.escrow, w.requester, k=1)
    with boa.env.prank(w.oracle), boa.reverts("escrow: conflict proof in fail_task"):
        w.escrow.fail_task(tid, "x", [h.conflict_proof(w.agents[0], w.escrow, tid)])


def test_fail_task__one_wei_task_slash_for_profit__fails(w):
    # the review's PoC: a 1-wei task, 1 s deadline, the agent's stake slashed,
    # half to the requester. Now a 1 s deadline is not slashable at all ...
    agent = w.agents[0]
    boa.env.set_balance(w.requester, 10**21)
    tid = h.post_task(w.escrow, w.requester, fee=1, model_id=_zero_fee_model(w), deadline=boa.env.timestamp + 1)
    assert not w.escrow.task_slashable(tid)
    proofs = _silent(w, tid, [agent], ttl=0)
    with boa.env.prank(w.oracle), boa.reverts("escrow: task not slashable"):
        w.escrow.fail_task(tid, "x", proofs)
    # ... a long enough deadline is, but the requester gets at most its 1 wei
    tid = h.post_task(
        w.escrow, w.requester, fee=1, model_id=_zero_fee_model(w, "zero-2"), deadline=boa.env.timestamp + h.DAY
    )
    assert w.escrow.task_slashable(tid)
    proofs = _silent(w, tid, [agent])
    with boa.env.prank(w.oracle):
        w.escrow.fail_task(tid, "x", proofs)
    w.escrow.refund(tid)
    assert w.escrow.balance_of(w.requester) == 1 + 1  # its fee back, plus at most its fee
    assert w.escrow.balance_of(w.treasury) == h.MIN_STAKE * h.SLASH_BPS // h.BPS - 1
    # ... and once the owner sets a minimum slash fee, a 1-wei task is not slashable
    with boa.env.prank(w.owner):
        w.escrow.set_min_slash_fee(10**15)
    tid = h.post_task(w.escrow, w.requester, fee=10**15 - 1, model_id=_zero_fee_model(w, "zero-3"))
    assert not w.escrow.task_slashable(tid)
    assert w.escrow.task_slashable(
        h.post_task(w.escrow, w.requester, fee=10**15, model_id=_zero_fee_model(w, "zero-4"))
    )
    assert_accounted(w)


def test_fail_task__requester_share_above_fee__fails(w):
    # three silent agents, 0.1 ETH each: half would be 0.15 ETH, the fee is 0.01
    tid = h.post_task(w.escrow, w.requester, fee=FEE, k=3)
    proofs = _silent(w, tid, w.agents)
    with boa.env.prank(w.oracle):
        w.escrow.fail_task(tid, "x", proofs)
    w.escrow.refund(tid)
    slashed = 3 * h.MIN_STAKE * h.SLASH_BPS // h.BPS
    assert w.escrow.balance_of(w.requester) == FEE + FEE  # refund + capped share
    assert w.escrow.balance_of(w.treasury) == slashed - FEE
    assert_accounted(w)


def test_fail_task__repeated_slashing_of_an_agent_by_the_oracle__fails(w):
    # the PoC drained ~99 % of all stake in 40 rounds; without the agents'
    # signatures each round slashes nothing
    staked = w.escrow.total_staked()
    model = _zero_fee_model(w)
    for _i in range(5):
        tid = h.post_task(w.escrow, w.requester, fee=1, model_id=model, k=3)
        expires = boa.env.timestamp + 60
        boa.env.time_travel(seconds=61)
        fake = [(a.address, b"\x00" * 32, expires, h.sign_lease(w.outsider, w.escrow, tid, expires)) for a in w.agents]
        with boa.env.prank(w.oracle), boa.reverts("escrow: bad slash proof"):
            w.escrow.fail_task(tid, "x", fake)
    assert w.escrow.total_staked() == staked


def _zero_fee_model(w, name="zero-fee"):
    mid = h.register_model(w.registry, w.stranger, fee=0, name=name)
    for a in w.agents:
        with boa.env.prank(a.address):
            w.escrow.update_agent([1, mid], 1, 4, b"\x04" + b"\x11" * 64)
    return mid


def test_task_slashable__window_and_fee_bounds(w):
    now = boa.env.timestamp
    assert w.escrow.MIN_SLASH_WINDOW() == 60
    assert w.escrow.task_slashable(h.post_task(w.escrow, w.requester, deadline=now + 60))
    assert not w.escrow.task_slashable(h.post_task(w.escrow, w.requester, deadline=now + 59))
    assert not w.escrow.task_slashable(999)


def test_set_min_slash_fee__owner_sets_and_emits__others_revert(w):
    assert w.escrow.min_slash_fee() == 0
    with boa.env.prank(w.owner):
        w.escrow.set_min_slash_fee(123)
    (log,) = h.events(w.escrow, "MinSlashFeeSet")
    assert log.min_slash_fee == 123 == w.escrow.min_slash_fee()
    with boa.env.prank(w.owner), boa.reverts("escrow: min slash fee too large"):
        w.escrow.set_min_slash_fee(2**96)
    with boa.env.prank(w.stranger), boa.reverts("ownable: caller is not the owner"):
        w.escrow.set_min_slash_fee(0)


# ------------------------------------------------------------------ refund


def test_refund__after_deadline__credits_full_fee(w):
    tid = h.post_task(w.escrow, w.requester, deadline=boa.env.timestamp + 100)
    boa.env.time_travel(seconds=101)
    with boa.env.prank(w.stranger):  # anyone may trigger it
        w.escrow.refund(tid)
    (log,) = h.events(w.escrow, "TaskRefunded")
    assert (log.task_id, log.requester, log.amount) == (tid, w.requester, FEE)
    assert w.escrow.task(tid)[7] == h.REFUNDED
    assert w.escrow.balance_of(w.requester) == FEE
    assert (w.escrow.total_open_fees(), w.escrow.total_credited()) == (0, FEE)
    assert_accounted(w)


def test_refund__at_deadline__reverts_deadline_not_passed(w):
    tid = h.post_task(w.escrow, w.requester, deadline=boa.env.timestamp + 100)
    boa.env.time_travel(seconds=100)
    with boa.reverts("escrow: deadline not passed"):
        w.escrow.refund(tid)


def test_refund__failed_task__credits_full_fee_before_deadline(w):
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle):
        w.escrow.fail_task(tid, "agents disagreed", [])
    w.escrow.refund(tid)
    assert w.escrow.balance_of(w.requester) == FEE
    assert w.escrow.task(tid)[7] == h.REFUNDED


def test_refund__twice__reverts_not_refundable(w):
    tid = h.post_task(w.escrow, w.requester, deadline=boa.env.timestamp + 1)
    boa.env.time_travel(seconds=2)
    w.escrow.refund(tid)
    with boa.reverts("escrow: not refundable"):
        w.escrow.refund(tid)
    assert w.escrow.balance_of(w.requester) == FEE


def test_refund__settled_task__reverts_not_refundable(w):
    tid = h.post_task(w.escrow, w.requester, deadline=boa.env.timestamp + 100)
    with boa.env.prank(w.oracle):
        w.escrow.settle(h.settlement(tid, agents=[w.agents[0]], agent_fee=10**15, escrow=w.escrow))
    boa.env.time_travel(seconds=200)
    with boa.reverts("escrow: not refundable"):
        w.escrow.refund(tid)


def test_refund__unknown_task__reverts(w):
    with boa.reverts("escrow: unknown task"):
        w.escrow.refund(1)


# ---------------------------------------------------------------- withdraw


def _credit_requester(w, fee=FEE):
    tid = h.post_task(w.escrow, w.requester, fee=fee)
    with boa.env.prank(w.oracle):
        w.escrow.fail_task(tid, "x", [])
    w.escrow.refund(tid)


def test_withdraw__credited_balance__is_sent_and_zeroed(w):
    _credit_requester(w)
    before = boa.env.get_balance(w.requester)
    with boa.env.prank(w.requester):
        assert w.escrow.withdraw() == FEE
    (log,) = h.events(w.escrow, "Withdrawn")
    assert (log.account, log.amount) == (w.requester, FEE)
    assert boa.env.get_balance(w.requester) == before + FEE
    assert w.escrow.balance_of(w.requester) == 0 and w.escrow.total_credited() == 0
    assert_accounted(w)


def test_withdraw__nothing_credited__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("escrow: nothing to withdraw"):
        w.escrow.withdraw()


def test_withdraw_for__by_anyone__pays_the_account(w):
    _credit_requester(w)
    before = boa.env.get_balance(w.requester)
    with boa.env.prank(w.stranger):
        assert w.escrow.withdraw_for(w.requester) == FEE
    assert boa.env.get_balance(w.requester) == before + FEE
    with boa.reverts("escrow: nothing to withdraw"):
        w.escrow.withdraw_for(w.requester)


def test_withdraw_for__contract_fee_receiver__flushes_revenue_into_it(w):
    token = boa.loads("""
# pragma version ~=0.4.3
received: public(uint256)
@external
@payable
def __default__():
    self.received += msg.value
""")
    with boa.env.prank(w.publisher):
        w.registry.set_fee_receiver(1, token.address)
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle):
        w.escrow.settle(h.settlement(tid, agents=[w.agents[0]], agent_fee=10**15, escrow=w.escrow))
    w.escrow.withdraw_for(token.address)
    assert token.received() == w.model_fee == boa.env.get_balance(token.address)


def test_withdraw__recipient_rejects_eth__reverts_and_keeps_balance(w):
    rejecter = boa.loads("""
# pragma version ~=0.4.3
@external
def pull(escrow: address):
    raw_call(escrow, method_id("withdraw()"))
""")
    with boa.env.prank(w.publisher):
        w.registry.set_fee_receiver(1, rejecter.address)
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.oracle):
        w.escrow.settle(h.settlement(tid, escrow=w.escrow))
    with boa.reverts("escrow: transfer failed"):
        rejecter.pull(w.escrow.address)
    assert w.escrow.balance_of(rejecter.address) == w.model_fee


def test_withdraw__reentrant_recipient__cannot_withdraw_twice(w):
    attacker = boa.loads("""
# pragma version ~=0.4.3
escrow: address
reentered: public(bool)
@external
def pull(escrow: address):
    self.escrow = escrow
    raw_call(escrow, method_id("withdraw()"))
@external
@payable
def __default__():
    self.reentered = raw_call(self.escrow, method_id("withdraw()"), revert_on_failure=False)
""")
    with boa.env.prank(w.publisher):
        w.registry.set_fee_receiver(1, attacker.address)
    for _ in range(2):
        tid = h.post_task(w.escrow, w.requester)
        with boa.env.prank(w.oracle):
            w.escrow.settle(h.settlement(tid, escrow=w.escrow))
    attacker.pull(w.escrow.address)
    assert attacker.reentered() is False
    assert boa.env.get_balance(attacker.address) == 2 * w.model_fee
    assert w.escrow.balance_of(attacker.address) == 0
    assert_accounted(w)
