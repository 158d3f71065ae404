"""The oracle's job book and settler on a real Anvil node: settle once, fail with a reason, refund."""

from __future__ import annotations

import os

import pytest

from oracle.db import Task, TaskState
from oracle.jobs import INPUT_UPLOAD_GRACE_S, RequestRefused, Submission
from tests.helpers import OracleParts, advance_time, ensure_agent, post_raw_task, register_test_model
from tributa.chain.eip712 import sign_lease, sign_result
from tributa.store import cid as cidlib

ONCHAIN_SETTLED, ONCHAIN_REFUNDED = 2, 4


@pytest.fixture
def oracle(contracts, signers, tmp_path, chain_snapshot):
    return OracleParts(contracts, signers, tmp_path)


def _submit(oracle, agent, offer, output: bytes, task_id: int) -> None:
    digest = cidlib.cid_to_digest(str(oracle.store.cid_of(output)))
    sig = sign_result(agent.account, oracle.contracts.chain_id, oracle.contracts.escrow.address, task_id, digest)
    oracle.book.submit(agent.address, offer.job_id, Submission(output, digest, sig))


def _verified_task(oracle, signers) -> int:
    contracts = oracle.contracts
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent"], [model])
    input_cid = str(oracle.store.put_bytes(b'{"texts":["hello"]}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    oracle.ingestor.poll_once()
    offer = oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time())
    assert offer is not None and offer.task_id == task_id and offer.input_cid == input_cid
    _submit(oracle, signers["agent"], offer, b'{"vectors":[[0.5]]}', task_id)
    assert oracle.state(task_id) == TaskState.VERIFIED
    return task_id


def test_settle__verified_task__pays_agent_and_refunds_rest(oracle, signers):
    escrow = oracle.contracts.escrow.functions
    agent, requester = signers["agent"].address, signers["requester"].address
    agent_before, requester_before = escrow.balance_of(agent).call(), escrow.balance_of(requester).call()
    task_id = _verified_task(oracle, signers)

    assert oracle.settler.settle_ready() == 1

    assert oracle.state(task_id) == TaskState.SETTLED
    assert escrow.task(task_id).call().state == ONCHAIN_SETTLED
    task = escrow.task(task_id).call()
    fee, model_fee = task.fee, task.model_fee
    left_after_fixed_cuts = (
        fee
        - fee * escrow.protocol_fee_bps().call() // 10_000
        - fee * escrow.data_share_bps().call() // 10_000
        - model_fee
    )
    agent_gain = escrow.balance_of(agent).call() - agent_before
    assert agent_gain == min(left_after_fixed_cuts, fee * oracle.settler.fee_policy.agent_fee_bps // 10_000)
    assert escrow.balance_of(requester).call() > requester_before


def test_settle__crash_before_recording__never_pays_twice(oracle, signers):
    escrow = oracle.contracts.escrow.functions
    task_id = _verified_task(oracle, signers)
    oracle.settler.settle_ready()
    agent_after_first = escrow.balance_of(signers["agent"].address).call()

    # The process died after the transaction but before its database commit: it retries.
    oracle.set_state(task_id, TaskState.VERIFIED)
    assert oracle.settler.settle_ready() == 0

    assert escrow.balance_of(signers["agent"].address).call() == agent_after_first
    assert oracle.state(task_id) == TaskState.SETTLED


def test_recover__settling_tasks__follow_the_chain(oracle, signers):
    settled = _verified_task(oracle, signers)
    oracle.settler.settle_ready()
    pending = _verified_task(oracle, signers)
    oracle.set_state(settled, TaskState.SETTLING)
    oracle.set_state(pending, TaskState.SETTLING)

    oracle.settler.recover()

    assert oracle.state(settled) == TaskState.SETTLED
    assert oracle.state(pending) == TaskState.VERIFIED


def test_lease__input_missing_from_store__fails_task_with_reason_and_refunds(oracle, signers):
    contracts = oracle.contracts
    escrow = contracts.escrow.functions
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent"], [model])
    task_id = post_raw_task(contracts, signers["requester"], model, os.urandom(32))
    fee = escrow.task(task_id).call().fee
    requester_before = escrow.balance_of(signers["requester"].address).call()
    oracle.ingestor.poll_once()
    with oracle.db.session() as s:  # ingested longer ago than the oracle waits for an upload
        s.get(Task, task_id).posted_at -= INPUT_UPLOAD_GRACE_S + 1

    assert oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time()) is None
    assert oracle.settler.fail_pending() == 1
    oracle.ingestor.poll_once()
    with oracle.db.session() as s:
        assert "was not uploaded to the oracle within" in s.get(Task, task_id).reason
    assert oracle.settler.refund_due(oracle.chain_time()) >= 1

    assert escrow.task(task_id).call().state == ONCHAIN_REFUNDED
    assert escrow.balance_of(signers["requester"].address).call() - requester_before == fee


def test_lease__input_not_uploaded_yet__task_waits_then_is_leased_once_it_arrives(oracle, signers):
    contracts = oracle.contracts
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent"], [model])
    data = b'{"prompt":"uploaded after posting"}'
    digest = cidlib.cid_to_digest(str(oracle.store.cid_of(data)))  # its CID, not yet stored
    task_id = post_raw_task(contracts, signers["requester"], model, digest)
    oracle.ingestor.poll_once()

    assert oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time()) is None
    with oracle.db.session() as s:
        assert s.get(Task, task_id).state == TaskState.OPEN  # waiting for the requester's upload, not failed
    oracle.store.put_bytes(data)
    offer = oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time())
    assert offer is not None and offer.task_id == task_id


def test_submit__signature_from_another_key__is_refused(oracle, signers):
    contracts = oracle.contracts
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent"], [model])
    input_cid = str(oracle.store.put_bytes(b'{"prompt":"x"}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    oracle.ingestor.poll_once()
    offer = oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time())
    output = b'{"text":"y"}'
    digest = cidlib.cid_to_digest(str(oracle.store.cid_of(output)))
    forged = sign_result(signers["agent2"].account, contracts.chain_id, contracts.escrow.address, task_id, digest)

    with pytest.raises(RequestRefused) as err:
        oracle.book.submit(signers["agent"].address, offer.job_id, Submission(output, digest, forged))

    assert err.value.status == 401
    assert oracle.state(task_id) == TaskState.RUNNING


def test_expire_leases__silent_agent__task_goes_to_another_agent(oracle, signers):
    contracts = oracle.contracts
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent"], [model])
    ensure_agent(contracts, signers["agent2"], [model])
    input_cid = str(oracle.store.put_bytes(b'{"prompt":"z"}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    oracle.ingestor.poll_once()
    oracle.book.lease_s = -1  # every lease is already over
    first = oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time())

    assert oracle.book.expire_leases() == 1
    second = oracle.book.lease(signers["agent2"].address, {model}, oracle.chain_time())
    assert second is not None and second.task_id == task_id and second.job_id != first.job_id
    # k = 1 and agent2 holds it now: the silent agent (which may re-lease its own expired task
    # when it is free, issue 18) gets nothing.
    assert oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time()) is None


def test_refund_due__deadline_passed_without_result__refunds_full_fee(oracle, signers):
    contracts = oracle.contracts
    escrow = contracts.escrow.functions
    model = register_test_model(contracts, signers["publisher"])
    task_id = post_raw_task(contracts, signers["requester"], model, os.urandom(32), deadline_s=60)
    fee = escrow.task(task_id).call().fee
    before = escrow.balance_of(signers["requester"].address).call()
    oracle.ingestor.poll_once()
    advance_time(contracts.w3, 120)

    assert oracle.settler.refund_due(oracle.chain_time()) >= 1

    assert escrow.balance_of(signers["requester"].address).call() - before == fee
    assert oracle.state(task_id) == TaskState.REFUNDED


def test_refund_due__agent_took_task_and_went_silent__slashed_and_requester_refunded_in_full(oracle, signers):
    contracts = oracle.contracts
    escrow = contracts.escrow.functions
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, signers["agent2"], [model])
    input_cid = str(oracle.store.put_bytes(b'{"prompt":"silence"}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid), deadline_s=120)
    fee = escrow.task(task_id).call().fee
    oracle.ingestor.poll_once()
    offer = oracle.book.lease(signers["agent2"].address, {model}, oracle.chain_time())
    assert offer is not None
    # The agent accepts: its signed lease is what lets the escrow slash it for silence.
    lease_sig = sign_lease(
        signers["agent2"].account, contracts.chain_id, contracts.escrow.address, task_id, offer.lease_expires_at
    )
    oracle.book.accept(signers["agent2"].address, offer.job_id, lease_sig)
    stake = escrow.agent(signers["agent2"].address).call().stake
    before = escrow.balance_of(signers["requester"].address).call()
    advance_time(contracts.w3, 180)

    slashes_before = oracle.settler.metrics.slashes._value.get()
    oracle.settler.refund_due(oracle.chain_time())  # decides the failure
    assert oracle.settler.fail_pending() == 1  # fails on-chain, slashing the silent agent
    assert oracle.settler.metrics.slashes._value.get() == slashes_before + 1  # counted like a settlement's
    oracle.settler.refund_due(oracle.chain_time())  # refunds the whole fee

    slashed = stake * escrow.slash_bps().call() // 10_000
    assert escrow.agent(signers["agent2"].address).call().stake == stake - slashed
    assert escrow.balance_of(signers["requester"].address).call() - before == fee + min(slashed // 2, fee)
    assert oracle.state(task_id) == TaskState.REFUNDED
