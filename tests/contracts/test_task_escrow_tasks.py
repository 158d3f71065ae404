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
    assert (log.task_id, log.requester, log.model_id, log.input_digest, log.fee, log.model_fee, log.deadline, log.k) == (
        1, w.requester, w.model_id, h.digest("in"), FEE, w.model_fee, deadline, 3
    )
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
        w.escrow.post_task(kwargs.get("model_id", 1), kwargs.get("input_digest", h.digest("in")), deadline, kwargs.get("k", 1), value=fee)


def test_post_task__inactive_model__reverts(w):
    with boa.env.prank(w.publisher):
        w.registry.set_model_active(1, False)
    with boa.reverts("escrow: unknown or inactive model"):
        h.post_task(w.escrow, w.requester)


def test_post_task__model_price_raised_later__keeps_snapshot(w):
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.publisher):
        w.registry.set_model_fee(1, 5 * 10**15)
    assert w.escrow.task(tid)[4] == w.model_fee


def test_post_task__params_changed_later__keeps_fee_share_snapshot(w):
    tid = h.post_task(w.escrow, w.requester)
    with boa.env.prank(w.owner):
        w.escrow.set_params(0, 5000, 0, 0, 0)
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


def test_fail_task__agents_that_never_answered__slashed_and_fee_still_refunded_in_full(w):
    tid = h.post_task(w.escrow, w.requester, fee=FEE, k=2)
    silent = [a.address for a in w.agents[:2]]
    stakes = [w.escrow.agent(a)[0] for a in silent]
    with boa.env.prank(w.oracle):
        w.escrow.fail_task(tid, "no agent answered", silent)
    slash_logs = h.events(w.escrow, "AgentSlashed")
    w.escrow.refund(tid)

    amounts = [stake * h.SLASH_BPS // 10_000 for stake in stakes]
    assert [w.escrow.agent(a)[0] for a in silent] == [s - x for s, x in zip(stakes, amounts)]
    assert [log.amount for log in slash_logs] == amounts
    assert w.escrow.balance_of(w.requester) == FEE + sum(x // 2 for x in amounts)
    assert w.escrow.balance_of(w.treasury) == sum(x - x // 2 for x in amounts)
    assert_accounted(w)


def test_fail_task__more_slashed_agents_than_k__reverts(w):
    tid = h.post_task(w.escrow, w.requester, k=1)
    with boa.env.prank(w.oracle), boa.reverts("escrow: more agents than k"):
        w.escrow.fail_task(tid, "x", [a.address for a in w.agents[:2]])


def test_fail_task__duplicate_slashed_agent__reverts(w):
    tid = h.post_task(w.escrow, w.requester, k=2)
    with boa.env.prank(w.oracle), boa.reverts("escrow: duplicate agent"):
        w.escrow.fail_task(tid, "x", [w.agents[0].address, w.agents[0].address])


def test_fail_task__unregistered_slashed_agent__reverts(w):
    tid = h.post_task(w.escrow, w.requester, k=1)
    with boa.env.prank(w.oracle), boa.reverts("escrow: slashed agent not registered"):
        w.escrow.fail_task(tid, "x", [w.stranger])


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
