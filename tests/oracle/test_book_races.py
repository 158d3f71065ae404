"""The job book under concurrent requests for one job, on SQLite and PostgreSQL: each job leaves
LEASED exactly once (one submit, or one error report, or one expiry), whatever races it.

And re-leasing: an agent may take again a task whose lease of its own expired, never one it
holds or answered (redundancy k counts distinct agents, one job each)."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select, update

from oracle.db import Database, Job, JobState, Task, TaskState
from oracle.jobs import JobBook, RequestRefused, Submission
from tests.oracle.support import backend_params, database_url
from tributa.chain.accounts import dev_account
from tributa.chain.eip712 import sign_lease, sign_result
from tributa.store import cid as cidlib
from tributa.store import open_store

CHAIN_ID = 31337
ESCROW = "0x" + "ee" * 20
ACCOUNT = dev_account("agent")
AGENT = ACCOUNT.address
OTHER = dev_account("agent2")
ROUNDS = 5  # each race is run this many times on fresh jobs: a lost race shows up in one of them
RACERS = 20


@pytest.fixture(params=backend_params())
def book(request, tmp_path):
    with database_url(request.param, tmp_path) as url:
        db = Database(url)
        yield JobBook(db, open_store(tmp_path / "store"), CHAIN_ID, ESCROW, lease_s=60)
        db.engine.dispose()


def _add_task(book: JobBook, task_id: int, k: int = 1) -> int:
    digest = cidlib.cid_to_digest(str(book.store.put_bytes(b'{"texts":["race %d"]}' % task_id)))
    with book.db.session() as s:
        s.add(
            Task(
                task_id=task_id,
                requester="0x" + "11" * 20,
                model_id=1,
                input_digest="0x" + digest.hex(),
                fee=10**15,
                model_fee=10**14,
                deadline=2**40,
                k=k,
                state=TaskState.OPEN,
                posted_block=1,
                posted_at=0.0,
            )
        )
    return task_id


def _submission(book: JobBook, task_id: int, account=ACCOUNT, output: bytes = b'{"vectors":[[1.0]]}') -> Submission:
    digest = cidlib.cid_to_digest(str(book.store.cid_of(output)))
    return Submission(output, digest, sign_result(account, CHAIN_ID, ESCROW, task_id, digest))


def _race(calls) -> list[object]:
    """Run every call at once (released together by a barrier); each one's result or RequestRefused."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except RequestRefused as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def _job(book: JobBook, job_id: int) -> Job:
    with book.db.session() as s:
        return s.get(Job, job_id)


def _task(book: JobBook, task_id: int) -> Task:
    with book.db.session() as s:
        return s.get(Task, task_id)


def test_submit__20_identical_submits_at_once__exactly_one_accepted(book):
    for round_ in range(ROUNDS):
        task_id = _add_task(book, 100 + round_)
        offer = book.lease(AGENT, {1}, 1000)
        task_id = offer.task_id  # an earlier round's expired task goes first
        sub = _submission(book, task_id)

        results = _race([lambda: book.submit(AGENT, offer.job_id, sub)] * RACERS)  # noqa: B023

        accepted = [r for r in results if isinstance(r, str)]
        refused = [r for r in results if isinstance(r, RequestRefused)]
        assert len(accepted) == 1, f"round {round_}: {len(accepted)} of {RACERS} identical submits accepted"
        assert len(refused) == RACERS - 1 and {e.status for e in refused} == {409}
        assert _job(book, offer.job_id).state == JobState.SUBMITTED
        assert _task(book, task_id).state == TaskState.VERIFIED


def test_submit_vs_error_report__exactly_one_wins_and_the_task_agrees_with_it(book):
    for round_ in range(2 * ROUNDS):
        task_id = _add_task(book, 200 + round_)
        offer = book.lease(AGENT, {1}, 1000)
        task_id = offer.task_id  # an earlier round's expired task goes first
        sub = _submission(book, task_id)

        submitted, reported = _race(
            [
                lambda: book.submit(AGENT, offer.job_id, sub),  # noqa: B023
                lambda: book.report_error(AGENT, offer.job_id, "input", "race"),  # noqa: B023
            ]
        )

        ok = [not isinstance(submitted, RequestRefused), not isinstance(reported, RequestRefused)]
        assert sum(ok) == 1, f"round {round_}: submit {submitted!r}, error report {reported!r}"
        job, task = _job(book, offer.job_id), _task(book, task_id)
        if ok[0]:
            assert job.state == JobState.SUBMITTED and job.error is None
            assert task.state == TaskState.VERIFIED and task.reason is None
        else:
            assert job.state == JobState.ERRORED and job.result_digest is None
            assert task.state == TaskState.FAILING and task.reason == "bad input: race"
        loser = reported if ok[0] else submitted
        assert loser.status == 409 and "not leased" in loser.message


def test_submit_vs_expiry__the_job_is_either_submitted_or_expired_never_both(book):
    for round_ in range(ROUNDS):
        task_id = _add_task(book, 300 + round_)
        offer = book.lease(AGENT, {1}, 1000)
        with book.db.session() as s:  # its accept window is over: the next expiry pass takes it
            s.execute(update(Job).where(Job.id == offer.job_id).values(lease_expires_at=time.time() - 1))
        task_id = offer.task_id  # an earlier round's expired task goes first
        sub = _submission(book, task_id)

        submitted, expired = _race([lambda: book.submit(AGENT, offer.job_id, sub), book.expire_leases])  # noqa: B023

        job, task = _job(book, offer.job_id), _task(book, task_id)
        if isinstance(submitted, RequestRefused):
            assert submitted.status == 409 and expired == 1
            assert job.state == JobState.EXPIRED and job.result_digest is None and task.state == TaskState.OPEN
        else:
            assert expired == 0, f"round {round_}: a submitted job was also expired"
            assert job.state == JobState.SUBMITTED and task.state == TaskState.VERIFIED


def test_accept__20_at_once__one_lease_signature_recorded_and_the_job_still_leased(book):
    task_id = _add_task(book, 400)
    offer = book.lease(AGENT, {1}, 1000)
    signature = sign_lease(ACCOUNT, CHAIN_ID, ESCROW, task_id, offer.lease_expires_at)

    results = _race([lambda: book.accept(AGENT, offer.job_id, signature)] * RACERS)

    assert all(r == offer.lease_expires_at for r in results), results  # the same signature again is no error
    job = _job(book, offer.job_id)
    assert job.state == JobState.LEASED and job.lease_signature == "0x" + signature.hex()
    assert job.lease_expires_at == pytest.approx(job.leased_at + book.lease_s)


def _expire_now(book: JobBook, job_id: int) -> None:
    with book.db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=time.time() - 1))
    assert book.expire_leases() == 1


def test_lease__own_lease_expired__same_agent_leases_it_again_and_its_new_job_counts(book):
    task_id = _add_task(book, 500)
    first = book.lease(AGENT, {1}, 1000)
    assert book.lease(AGENT, {1}, 1000) is None  # held: never a second live job on one task
    _expire_now(book, first.job_id)

    again = book.lease(AGENT, {1}, 1000)

    assert again is not None and again.task_id == task_id and again.job_id != first.job_id
    with pytest.raises(RequestRefused) as late:  # the expired job's result is refused; the new one's taken
        book.submit(AGENT, first.job_id, _submission(book, task_id))
    assert late.value.status == 409
    book.submit(AGENT, again.job_id, _submission(book, task_id))
    assert _task(book, task_id).state == TaskState.VERIFIED
    assert book.lease(AGENT, {1}, 1000) is None  # answered: never again


def test_lease__k2_with_an_expired_lease__the_agent_holds_one_live_job_and_counts_once(book):
    task_id = _add_task(book, 600, k=2)
    first = book.lease(AGENT, {1}, 1000, capacity=4)
    _expire_now(book, first.job_id)

    mine = book.lease_many(AGENT, {1}, 1000, capacity=4, max_jobs=4)
    twice = book.lease_many(AGENT, {1}, 1000, capacity=4, max_jobs=4)
    book.submit(AGENT, mine[0].job_id, _submission(book, task_id))
    after_answer = book.lease_many(AGENT, {1}, 1000, capacity=4, max_jobs=4)
    theirs = book.lease(OTHER.address, {1}, 1000)

    assert [o.task_id for o in mine] == [task_id] and twice == [] and after_answer == []
    assert _task(book, task_id).state == TaskState.RUNNING  # one answer of two: the agent counted once
    assert theirs is not None and theirs.task_id == task_id
    book.submit(OTHER.address, theirs.job_id, _submission(book, task_id, OTHER))
    assert _task(book, task_id).state == TaskState.VERIFIED
    with book.db.session() as s:
        live = s.execute(
            select(Job.agent, Job.state).where(Job.task_id == task_id, Job.state != JobState.EXPIRED)
        ).all()
    assert sorted(live) == sorted([(AGENT, JobState.SUBMITTED), (OTHER.address, JobState.SUBMITTED)])


def test_lease__own_job_errored__not_leased_to_that_agent_again(book):
    task_id = _add_task(book, 700, k=1)
    first = book.lease(AGENT, {1}, 1000)
    book.report_error(AGENT, first.job_id, "runtime", "out of memory")

    assert _task(book, task_id).state == TaskState.OPEN
    assert book.lease(AGENT, {1}, 1000) is None  # it would fail the same way again
    assert book.lease(OTHER.address, {1}, 1000).task_id == task_id


def test_report_error__runtime_errors_from_three_agents__the_task_fails_with_the_last_reason(book):
    from oracle.jobs import RUNTIME_ERRORS_TO_FAIL

    task_id = _add_task(book, 701, k=1)
    agents = [AGENT, OTHER.address, dev_account(12).address, dev_account(13).address]
    for n, agent in enumerate(agents[:RUNTIME_ERRORS_TO_FAIL], start=1):
        offer = book.lease(agent, {1}, 1000)
        assert offer is not None and offer.task_id == task_id, f"agent {n} was not offered the task"
        book.report_error(agent, offer.job_id, "runtime", f"out of memory on agent {n}")
        expected = TaskState.FAILING if n == RUNTIME_ERRORS_TO_FAIL else TaskState.OPEN
        assert _task(book, task_id).state == expected
    assert _task(book, task_id).reason == f"{RUNTIME_ERRORS_TO_FAIL} agents could not run it: out of memory on agent 3"
    assert book.lease(agents[-1], {1}, 1000) is None  # failing (then refunded), not offered again


def test_report_error__a_runtime_error_while_another_agent_holds_the_task__does_not_fail_it(book):
    task_id = _add_task(book, 702, k=2)
    held = book.lease(AGENT, {1}, 1000)
    for agent in (OTHER.address, dev_account(12).address, dev_account(13).address):
        offer = book.lease(agent, {1}, 1000)
        book.report_error(agent, offer.job_id, "runtime", "killed")
    assert _task(book, task_id).state == TaskState.RUNNING  # AGENT may still answer
    assert held is not None


def test_relet__one_agent_lets_its_lease_expire__leases_the_task_again_and_it_settles_on_chain(
    contracts, signers, tmp_path, chain_snapshot
):
    from tests.helpers import OracleParts, ensure_agent, post_raw_task, register_test_model

    parts = OracleParts(contracts, signers, tmp_path)
    # The oracle's book, with an accept window short enough to run out within the test.
    book = JobBook(parts.db, parts.store, contracts.chain_id, contracts.escrow.address, lease_s=60, accept_window_s=0.3)
    agent = signers["agent"]
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, agent, [model])  # the only agent serving the model
    input_cid = str(parts.store.put_bytes(b'{"texts":["relet"]}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    parts.ingestor.poll_once()

    first = book.lease(agent.address, {model}, parts.chain_time())  # never accepted
    time.sleep(0.4)
    assert book.expire_leases() == 1 and parts.state(task_id) == TaskState.OPEN
    again = book.lease(agent.address, {model}, parts.chain_time())
    assert again is not None and again.task_id == task_id and again.job_id != first.job_id
    output = b'{"vectors":[[0.25]]}'
    digest = cidlib.cid_to_digest(str(parts.store.cid_of(output)))
    lease_sig = sign_lease(agent.account, contracts.chain_id, contracts.escrow.address, task_id, again.lease_expires_at)
    result_sig = sign_result(agent.account, contracts.chain_id, contracts.escrow.address, task_id, digest)
    book.submit(agent.address, again.job_id, Submission(output, digest, result_sig, lease_sig))
    escrow = contracts.escrow.functions
    before = escrow.balance_of(agent.address).call()

    assert parts.settler.settle_ready() == 1

    assert parts.state(task_id) == TaskState.SETTLED
    assert escrow.task(task_id).call().state == 2  # SETTLED on-chain
    assert escrow.balance_of(agent.address).call() > before  # paid once, not slashed for its expired lease


def test_lease_many__polls_at_once_by_two_agents_and_twice_by_one__each_task_once_per_agent_within_k(book):
    ids = [_add_task(book, 800 + i, k=2) for i in range(12)]
    agents = [
        AGENT,
        AGENT,
        OTHER.address,
        OTHER.address,
        "0x" + "cc" * 20,
    ]  # two polls each by two agents, one by a third

    from oracle.db import AgentSeen

    with book.db.session() as s:  # seen before (a first poll's own race is not this test's)
        s.add_all([AgentSeen(agent=a, last_poll_at=0.0) for a in set(agents)])

    def lease(agent: str) -> list[int]:
        offers = []
        for _ in range(40):  # on PostgreSQL a poll skips the rows another holds: poll on, as agents do
            offers += book.lease_many(agent, {1}, 1000, capacity=100, max_jobs=2)
        return [o.task_id for o in offers]

    results = _race([lambda a=a: lease(a) for a in agents])

    with book.db.session() as s:
        jobs = s.execute(select(Job.task_id, Job.agent).where(Job.task_id.in_(ids))).all()
    assert len(jobs) == len(set(jobs)), "a task leased twice to one agent"
    per_task = {t: sum(1 for task, _ in jobs if task == t) for t in ids}
    assert set(per_task.values()) == {2}, per_task  # k=2: exactly two distinct agents per task
    assert sum(len(r) for r in results) == len(jobs) == 2 * len(ids)
