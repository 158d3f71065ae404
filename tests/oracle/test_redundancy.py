"""Redundant execution on a real chain: k distinct agents, the majority paid, the minority slashed.

Every slash carries the agent's own signature (TaskEscrow checks it): a minority agent's Result
signature over the digest it submitted (a conflict proof), a silent agent's signed Lease once
its expiry is past (a lease proof). An agent that never signed is never slashed.
"""

from __future__ import annotations

from oracle.db import Job, Task, TaskState
from oracle.jobs import Submission
from oracle.service import AgentDirectory
from oracle.settler import LEASE_PROOF, Settler
from oracle.stakes import StakeWatcher
from tests.helpers import OracleParts, advance_time, ensure_agent, post_raw_task, register_test_model, signer_for
from tributa.chain.eip712 import sign_lease, sign_result
from tributa.store import cid as cidlib

EXTRA_AGENTS = ("16", "17", "18", "19")  # funded dev accounts beyond the named roles


def _submit(oracle, agent, offer, output: bytes) -> None:
    digest = cidlib.cid_to_digest(str(oracle.store.cid_of(output)))
    sig = sign_result(agent.account, oracle.contracts.chain_id, oracle.contracts.escrow.address, offer.task_id, digest)
    oracle.book.submit(agent.address, offer.job_id, Submission(output, digest, sig))


def _accept(oracle, agent, offer) -> None:
    sig = sign_lease(
        agent.account, oracle.contracts.chain_id, oracle.contracts.escrow.address, offer.task_id, offer.lease_expires_at
    )
    assert oracle.book.accept(agent.address, offer.job_id, sig) == offer.lease_expires_at


def _slashed_events(contracts, receipt_or_block: int) -> list[tuple[str, int]]:
    logs = contracts.escrow.events.AgentSlashed.get_logs(from_block=receipt_or_block)
    return [(e["args"]["agent"], e["args"]["task_id"]) for e in logs]


def _expire_wall_leases(oracle, task_id: int) -> None:
    """The oracle's own (wall-clock) lease timers run out: the jobs become EXPIRED."""
    with oracle.db.session() as s:
        for job in s.query(Job).filter(Job.task_id == task_id):
            job.lease_expires_at = 0.0
    oracle.book.expire_leases()


def _setup(contracts, signers, tmp_path, k: int, deadline_s: int = 600):
    oracle = OracleParts(contracts, signers, tmp_path)
    model = register_test_model(contracts, signers["publisher"])
    agents = [signer_for(contracts, i) for i in EXTRA_AGENTS]
    for agent in agents:
        ensure_agent(contracts, agent, [model])
    input_cid = str(oracle.store.put_bytes(b'{"texts":["redundant"]}'))
    task_id = post_raw_task(
        contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid), k=k, deadline_s=deadline_s
    )
    oracle.ingestor.poll_once()
    return oracle, model, agents, task_id


def test_lease__task_with_k3__goes_to_three_distinct_agents_only(contracts, signers, tmp_path, chain_snapshot):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=3)

    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents]

    assert [o.task_id for o in offers[:3]] == [task_id] * 3
    assert len({o.job_id for o in offers[:3]}) == 3
    assert offers[3] is None  # the fourth agent finds no free slot
    assert oracle.book.lease(agents[0].address, {model}, oracle.chain_time()) is None  # nor a second lease


def test_settle__two_of_three_agree__majority_paid_minority_slashed_by_its_conflict_proof(
    contracts, signers, tmp_path, chain_snapshot
):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=3)
    escrow = contracts.escrow.functions
    start = contracts.w3.eth.block_number
    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents[:3]]
    for agent, offer, output in zip(agents, offers, (b'{"v":1}', b'{"v":2}', b'{"v":1}'), strict=False):
        _submit(oracle, agent, offer, output)
    assert oracle.state(task_id) == TaskState.VERIFIED
    before = {
        a.address: (escrow.balance_of(a.address).call(), escrow.agent(a.address).call().stake) for a in agents[:3]
    }
    requester_before = escrow.balance_of(signers["requester"].address).call()

    plan = oracle.settler._plan(task_id)
    liar_digest = cidlib.cid_to_digest(str(oracle.store.cid_of(b'{"v":2}')))
    [(proof_agent, proof_digest, proof_expiry, _proof_sig)] = plan.settlement[6]
    assert (proof_agent, proof_digest, proof_expiry) == (agents[1].address, liar_digest, 0)  # a conflict proof
    with oracle.db.session() as s:  # _plan only planned: the task is still waiting to settle
        assert s.get(Task, task_id).state == TaskState.VERIFIED

    assert oracle.settler.settle_ready() == 1

    honest, liar = (agents[0], agents[2]), agents[1]
    gains = [escrow.balance_of(a.address).call() - before[a.address][0] for a in honest]
    assert gains[0] == gains[1] > 0
    stake_before = before[liar.address][1]
    slashed = stake_before * escrow.slash_bps().call() // 10_000
    assert escrow.agent(liar.address).call().stake == stake_before - slashed
    assert escrow.balance_of(liar.address).call() == before[liar.address][0]
    fee = escrow.task(task_id).call().fee
    # The requester is made whole, never more: half the slash, capped at the task's fee.
    with oracle.db.session() as s:
        refund = s.get(Task, task_id).refund
    assert escrow.balance_of(signers["requester"].address).call() - requester_before - refund == min(slashed // 2, fee)
    assert _slashed_events(contracts, start) == [(liar.address, task_id)]
    assert oracle.state(task_id) == TaskState.SETTLED


def test_settle__k2_disagree_without_reexecution__fails_and_slashes_nobody(
    contracts, signers, tmp_path, chain_snapshot
):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=2)
    escrow = contracts.escrow.functions
    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents[:2]]
    for agent, offer, output in zip(agents, offers, (b'{"v":1}', b'{"v":2}'), strict=False):
        _submit(oracle, agent, offer, output)
    stakes = [escrow.agent(a.address).call().stake for a in agents[:2]]

    assert oracle.settler.settle_ready() == 0
    assert oracle.state(task_id) == TaskState.FAILING
    oracle.settler.fail_pending()

    assert escrow.task(task_id).call().state == 3  # FAILED on-chain, refundable in full
    assert [escrow.agent(a.address).call().stake for a in agents[:2]] == stakes


def test_fail__silent_agent_with_signed_lease__slashed_by_its_lease_proof_once_chain_time_passes(
    contracts, signers, tmp_path, chain_snapshot
):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=1)
    escrow = contracts.escrow.functions
    start = contracts.w3.eth.block_number
    silent = agents[0]
    offer = oracle.book.lease(silent.address, {model}, oracle.chain_time())
    _accept(oracle, silent, offer)
    _expire_wall_leases(oracle, task_id)
    stake = escrow.agent(silent.address).call().stake
    with oracle.db.session() as s:  # chain time not yet past the signed expiry: no proof to offer
        assert Settler._silent_agents(s, s.get(Task, task_id), offer.lease_expires_at) == []
        [proof] = Settler._silent_agents(s, s.get(Task, task_id), offer.lease_expires_at + 1)
    assert proof[:3] == (silent.address, LEASE_PROOF, offer.lease_expires_at)
    advance_time(contracts.w3, 700)  # past the lease and the deadline

    oracle.settler.refund_due(oracle.chain_time())  # decides the failure
    assert oracle.state(task_id) == TaskState.FAILING
    assert oracle.settler.fail_pending() == 1
    oracle.settler.refund_due(oracle.chain_time())

    slashed = stake * escrow.slash_bps().call() // 10_000
    assert escrow.agent(silent.address).call().stake == stake - slashed
    assert _slashed_events(contracts, start) == [(silent.address, task_id)]
    assert oracle.state(task_id) == TaskState.REFUNDED


def test_fail__agent_never_accepted_its_lease__not_slashed(contracts, signers, tmp_path, chain_snapshot):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=1)
    escrow = contracts.escrow.functions
    start = contracts.w3.eth.block_number
    offer = oracle.book.lease(agents[0].address, {model}, oracle.chain_time())
    assert offer is not None  # leased, never accepted (no Lease signature)
    _expire_wall_leases(oracle, task_id)
    stake = escrow.agent(agents[0].address).call().stake
    oracle.set_state(task_id, TaskState.FAILING)
    advance_time(contracts.w3, 120)

    assert oracle.settler.fail_pending() == 1

    assert escrow.task(task_id).call().state == 3  # FAILED
    assert escrow.agent(agents[0].address).call().stake == stake
    assert _slashed_events(contracts, start) == []


def test_settle__minority_and_silent_agents__each_slashed_by_its_own_proof(
    contracts, signers, tmp_path, chain_snapshot
):
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=5)
    agents = [*agents, signers["agent2"]]
    ensure_agent(contracts, agents[4], [model])
    start = contracts.w3.eth.block_number
    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents]
    for agent, offer in zip(agents, offers, strict=False):
        _accept(oracle, agent, offer)
    for agent, offer, output in zip(agents[:4], offers, (b'{"v":1}', b'{"v":1}', b'{"v":9}', b'{"v":1}'), strict=False):
        _submit(oracle, agent, offer, output)
    _expire_wall_leases(oracle, task_id)  # agents[4] took the job, signed its lease and went silent
    advance_time(contracts.w3, 61)  # chain time past its signed lease expiry
    oracle.book.close_due(oracle.chain_time(), 10**6)  # decide with the four answers in

    plan = oracle.settler._plan(task_id)
    kinds = {p[0]: (p[1] == LEASE_PROOF) for p in plan.settlement[6]}
    assert kinds == {agents[2].address: False, agents[4].address: True}  # conflict proof, lease proof
    assert oracle.settler.settle_ready() == 1

    assert sorted(_slashed_events(contracts, start)) == sorted(
        [(agents[2].address, task_id), (agents[4].address, task_id)]
    )
    assert oracle.state(task_id) == TaskState.SETTLED


def test_settle__task_not_slashable__minority_paid_nothing_and_not_slashed(
    contracts, signers, tmp_path, chain_snapshot
):
    # A deadline under the escrow's minimum window: proofs would reject the settlement, so none are sent.
    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=3, deadline_s=30)
    escrow = contracts.escrow.functions
    assert escrow.task_slashable(task_id).call() is False
    start = contracts.w3.eth.block_number
    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents[:3]]
    for agent, offer, output in zip(agents, offers, (b'{"v":1}', b'{"v":2}', b'{"v":1}'), strict=False):
        _accept(oracle, agent, offer)
        _submit(oracle, agent, offer, output)
    stake = escrow.agent(agents[1].address).call().stake

    assert oracle.settler.settle_ready() == 1

    assert escrow.agent(agents[1].address).call().stake == stake
    assert _slashed_events(contracts, start) == []
    assert oracle.state(task_id) == TaskState.SETTLED


def test_lease__agent_stake_fell_below_min_stake__job_book_skips_it(contracts, signers, tmp_path, chain_snapshot):
    oracle = OracleParts(contracts, signers, tmp_path)
    escrow = contracts.escrow
    model = register_test_model(contracts, signers["publisher"])
    unbonder, other = signer_for(contracts, EXTRA_AGENTS[0]), signer_for(contracts, EXTRA_AGENTS[1])
    for agent in (unbonder, other):
        ensure_agent(contracts, agent, [model])
        assert (
            oracle.book.lease(agent.address, {model}, oracle.chain_time()) is None
        )  # polled once: known to the oracle
    watcher = StakeWatcher(oracle.db, escrow, contracts.deployment.block_number)
    watcher.poll_once()
    directory = AgentDirectory(contracts, ttl_s=0)
    assert directory.models(unbonder.address) == {model} or model in directory.models(unbonder.address)

    unbonder.transact(escrow.functions.request_unbond(escrow.functions.agent(unbonder.address).call().stake))
    assert watcher.poll_once() >= 1  # the UnbondRequested event: the agent's stake is read again, once
    input_cid = str(oracle.store.put_bytes(b'{"texts":["stake"]}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    oracle.ingestor.poll_once()

    assert oracle.book.lease(unbonder.address, {model}, oracle.chain_time()) is None
    offer = oracle.book.lease(other.address, {model}, oracle.chain_time())
    assert offer is not None and offer.task_id == task_id
    # The job API's directory says why, and lists no model for it.
    assert directory.models(unbonder.address) == set()
    assert "below min_stake" in directory.stake_shortfall(unbonder.address)
    assert escrow.functions.serves_model(unbonder.address, model).call() is False


def test_settle__a_high_s_signature_stored_by_an_old_oracle__dropped_and_the_honest_majority_paid(
    contracts, signers, tmp_path, chain_snapshot
):
    """Issue 18: one signature the escrow refuses (high s, v flipped; eth_account still recovers it)
    would revert the whole settlement. The settler leaves it out; the two honest agents are paid."""
    from oracle.auth import SECP256K1_N

    oracle, model, agents, task_id = _setup(contracts, signers, tmp_path, k=3)
    escrow = contracts.escrow.functions
    offers = [oracle.book.lease(a.address, {model}, oracle.chain_time()) for a in agents[:3]]
    output = b'{"v":1}'
    digest = cidlib.cid_to_digest(str(oracle.store.cid_of(output)))
    for agent, offer in zip(agents[:2], offers[:2], strict=False):
        _submit(oracle, agent, offer, output)
    good = sign_result(agents[2].account, contracts.chain_id, contracts.escrow.address, task_id, digest)
    s = int.from_bytes(good[32:64], "big")
    high_s = good[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - good[64]])  # 27 <-> 28
    oracle.book.submit(agents[2].address, offers[2].job_id, Submission(output, digest, high_s))
    before = [escrow.balance_of(a.address).call() for a in agents[:3]]

    assert oracle.settler.settle_ready() == 1

    assert oracle.state(task_id) == TaskState.SETTLED
    gains = [escrow.balance_of(a.address).call() - b for a, b in zip(agents[:3], before, strict=False)]
    assert gains[0] == gains[1] > 0 and gains[2] == 0
