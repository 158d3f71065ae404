"""Redundant execution on a real chain: k distinct agents, the majority paid, the minority slashed."""

from __future__ import annotations

from oracle.db import TaskState
from oracle.jobs import Submission
from tests.helpers import OracleParts, ensure_agent, post_raw_task, register_test_model, signer_for
from tributa.chain.eip712 import sign_result
from tributa.store import cid as cidlib

EXTRA_AGENTS = ("16", "17", "18", "19")  # funded dev accounts beyond the named roles


def _submit(oracle, agent, offer, output: bytes) -> None:
    digest = cidlib.cid_to_digest(str(oracle.store.cid_of(output)))
    sig = sign_result(agent.account, oracle.contracts.chain_id, oracle.contracts.escrow.address, offer.task_id, digest)
    oracle.book.submit(agent.address, offer.job_id, Submission(output, digest, sig))


def _setup(contracts, signers, tmp_path, k: int):
    oracle = OracleParts(contracts, signers, tmp_path)
    model = register_test_model(contracts, signers["publisher"])
    agents = [signer_for(contracts, i) for i in EXTRA_AGENTS]
    for agent in agents:
        ensure_agent(contracts, agent, [model])
    input_cid = str(oracle.store.put_bytes(b'{"texts":["redundant"]}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid), k=k)
    oracle.ingestor.poll_once()
    return oracle, model, agents, task_id


def test_lease__task_with_k3__goes_to_three_distinct_agents_only(contracts, signers, tmp_path, chain_snapshot):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=3)

    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents]

    assert [o.task_id for o in offers[:3]] == [task_id] * 3
    assert len({o.job_id for o in offers[:3]}) == 3
    assert offers[3] is None  # the fourth agent finds no free slot
    assert oracle.book.lease(agents[0].address, {model}, oracle.chain_time()) is None  # nor a second lease


def test_settle__two_of_three_agree__majority_paid_minority_slashed_on_chain(contracts, signers, tmp_path, chain_snapshot):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=3)
    escrow = contracts.escrow.functions
    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents[:3]]
    for agent, offer, output in zip(agents, offers, (b'{"v":1}', b'{"v":2}', b'{"v":1}')):
        _submit(oracle, agent, offer, output)
    assert oracle.state(task_id) == TaskState.VERIFIED
    before = {a.address: (escrow.balance_of(a.address).call(), escrow.agent(a.address).call()[0]) for a in agents[:3]}
    requester_before = escrow.balance_of(signers["requester"].address).call()

    assert oracle.settler.settle_ready() == 1

    honest, liar = (agents[0], agents[2]), agents[1]
    gains = [escrow.balance_of(a.address).call() - before[a.address][0] for a in honest]
    assert gains[0] == gains[1] > 0
    stake_before = before[liar.address][1]
    slashed = stake_before * escrow.slash_bps().call() // 10_000
    assert escrow.agent(liar.address).call()[0] == stake_before - slashed
    assert escrow.balance_of(liar.address).call() == before[liar.address][0]
    assert escrow.balance_of(signers["requester"].address).call() - requester_before >= slashed // 2
    assert oracle.state(task_id) == TaskState.SETTLED


def test_settle__k2_disagree_without_reexecution__fails_and_slashes_nobody(contracts, signers, tmp_path, chain_snapshot):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=2)
    escrow = contracts.escrow.functions
    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents[:2]]
    for agent, offer, output in zip(agents, offers, (b'{"v":1}', b'{"v":2}')):
        _submit(oracle, agent, offer, output)
    stakes = [escrow.agent(a.address).call()[0] for a in agents[:2]]

    assert oracle.settler.settle_ready() == 0
    assert oracle.state(task_id) == TaskState.FAILING
    oracle.settler.fail_pending()

    assert escrow.task(task_id).call()[-1] == 3  # FAILED on-chain, refundable in full
    assert [escrow.agent(a.address).call()[0] for a in agents[:2]] == stakes
