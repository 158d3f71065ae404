"""Reorgs on a real Anvil node (anvil_reorg / anvil_rollback): the oracle follows the new chain.

Each test runs on a private copy of the deployed chain, so rewriting its blocks cannot disturb
other tests.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import func, select

from oracle.db import ChainLog, Database, Job, JobState, Task, TaskState, database_url, now
from oracle.ingest import CURSOR_NAME, Ingestor, saved_block_hashes
from tests.helpers import post_raw_task, register_test_model
from tests.oracle.support import fail_task_call, private_chain, rpc
from tributa.chain.accounts import dev_account
from tributa.chain.tx import Signer


@pytest.fixture(scope="module")
def chain(contracts, tmp_path_factory):
    with private_chain(contracts, tmp_path_factory.mktemp("reorg-chain")) as (_node, private):
        yield private


@pytest.fixture(scope="module")
def model(chain):
    return register_test_model(chain, Signer(chain.w3, dev_account("publisher")))


@pytest.fixture
def db(tmp_path):
    return Database(database_url(tmp_path))


def _signer(chain, role: str) -> Signer:
    return Signer(chain.w3, dev_account(role))


def _ingestor(chain, db, **kw) -> Ingestor:
    return Ingestor(db, chain.escrow, chain.deployment.block_number, **kw)


def _post(chain, model: int, role: str = "requester") -> tuple[int, str]:
    """Post a task; returns its id and the hash of the posting transaction."""
    task_id = post_raw_task(chain, _signer(chain, role), model, os.urandom(32))
    tx_hash = _task_log(chain, task_id)["transactionHash"].to_0x_hex()
    return task_id, tx_hash


def _task_log(chain, task_id: int):
    logs = chain.escrow.events.TaskPosted().get_logs(from_block=0, argument_filters={"task_id": task_id})
    return logs[-1]


def _raw(chain, tx_hash: str) -> str:
    return rpc(chain.w3, "eth_getRawTransactionByHash", tx_hash)


def _task(db, task_id: int) -> Task | None:
    with db.session() as s:
        return s.get(Task, task_id)


def _logs_of_tx(db, tx_hash: str) -> list[ChainLog]:
    with db.session() as s:
        return list(s.execute(select(ChainLog).where(ChainLog.tx_hash == tx_hash)).scalars())


def _lease(db, task_id: int, agent: str) -> None:
    """An agent's lease, as the job book writes it."""
    with db.session() as s:
        s.add(Job(task_id=task_id, agent=agent, state=JobState.LEASED, leased_at=now(), lease_expires_at=now() + 60))
        s.get(Task, task_id).state = TaskState.RUNNING


def test_reorg__posting_reorged_out__task_disappears_from_the_oracle(chain, model, db):
    ingestor = _ingestor(chain, db)
    ingestor.poll_once()
    task_id, tx_hash = _post(chain, model)
    assert ingestor.poll_once() == 1

    rpc(chain.w3, "anvil_reorg", 1, [])  # the block holding the posting is replaced by an empty one
    ingestor.poll_once()

    assert ingestor.reorgs == 1
    assert _task(db, task_id) is None
    assert _logs_of_tx(db, tx_hash) == []
    head = chain.w3.eth.get_block("latest")
    assert saved_block_hashes(db)[head["number"]] == head["hash"].to_0x_hex()


def test_reorg__posting_re_included_in_another_block__is_ingested_once(chain, model, db):
    ingestor = _ingestor(chain, db)
    ingestor.poll_once()
    task_id, tx_hash = _post(chain, model)
    first_block = _task_log(chain, task_id)["blockNumber"]
    for _ in range(2):
        rpc(chain.w3, "evm_mine")
    ingestor.poll_once()
    before = _task(db, task_id)

    # Three blocks replaced; the same transaction is mined again, two blocks later.
    rpc(chain.w3, "anvil_reorg", 3, [[_raw(chain, tx_hash), 2]])
    assert ingestor.poll_once() == 0

    logs = _logs_of_tx(db, tx_hash)
    assert len(logs) == 1 and logs[0].block_number == first_block + 2
    assert logs[0].block_hash == chain.w3.eth.get_block(first_block + 2)["hash"].to_0x_hex()
    after = _task(db, task_id)
    assert after.state == TaskState.OPEN and after.posted_at == before.posted_at  # the same row, untouched
    assert after.posted_block == first_block + 2
    assert ingestor.reorgs == 1


def test_reorg__chain_rolled_back__cursor_follows_and_the_id_is_reused(chain, model, db):
    ingestor = _ingestor(chain, db)
    ingestor.poll_once()
    task_id, _ = _post(chain, model)
    ingestor.poll_once()

    rpc(chain.w3, "anvil_rollback", 1)  # the chain is one block shorter than the cursor
    ingestor.poll_once()
    assert _task(db, task_id) is None
    assert db.cursor(CURSOR_NAME) == chain.w3.eth.block_number

    again, _ = _post(chain, model, role="buyer2")
    assert again == task_id
    assert ingestor.poll_once() == 1
    assert _task(db, task_id).requester == dev_account("buyer2").address


def test_reorg__task_id_taken_by_another_posting__voids_jobs_of_the_old_one(chain, model, db):
    ingestor = _ingestor(chain, db)
    ingestor.poll_once()
    first, _ = _post(chain, model, role="requester")
    second, second_tx = _post(chain, model, role="buyer2")
    ingestor.poll_once()
    _lease(db, first, dev_account("agent").address)

    # Both postings reorged out; only the second is mined again, so it gets the first one's id.
    rpc(chain.w3, "anvil_reorg", 2, [[_raw(chain, second_tx), 0]])
    ingestor.poll_once()

    task = _task(db, first)
    assert task.requester == dev_account("buyer2").address and task.state == TaskState.OPEN
    with db.session() as s:
        job = s.execute(select(Job).where(Job.task_id == first)).scalars().one()
    assert job.state == JobState.ERRORED and "different posting" in job.error
    assert _task(db, second) is None
    assert len(_logs_of_tx(db, second_tx)) == 1


def test_reorg__worked_task_reorged_out__is_orphaned_then_restored_when_reposted(chain, model, db):
    ingestor = _ingestor(chain, db)
    ingestor.poll_once()
    task_id, tx_hash = _post(chain, model)
    ingestor.poll_once()
    _lease(db, task_id, dev_account("agent").address)
    raw = _raw(chain, tx_hash)

    rpc(chain.w3, "anvil_reorg", 1, [])
    ingestor.poll_once()
    orphan = _task(db, task_id)
    assert orphan.state == TaskState.ORPHANED and "reorged out" in orphan.reason

    # The dropped posting is mined again later (its receipt first: Anvil mines it a moment after accepting it).
    chain.w3.eth.wait_for_transaction_receipt(chain.w3.eth.send_raw_transaction(raw), timeout=30)
    assert ingestor.poll_once() == 1
    assert _task(db, task_id).state == TaskState.RUNNING  # the agent's lease still counts


def test_reorg__failure_reorged_out__oracle_decision_to_fail_stands(chain, model, db):
    ingestor = _ingestor(chain, db)
    ingestor.poll_once()
    task_id, _ = _post(chain, model)
    _signer(chain, "oracle").transact(fail_task_call(chain.escrow, task_id, "no agent"), action="fail_task")
    ingestor.poll_once()
    assert _task(db, task_id).state == TaskState.FAILED

    rpc(chain.w3, "anvil_reorg", 1, [])  # only the fail_task block goes
    ingestor.poll_once()

    task = _task(db, task_id)
    assert task.state == TaskState.FAILING and task.reason == "no agent"  # fail_pending sends it again
    with db.session() as s:
        events = s.execute(select(ChainLog.event).where(ChainLog.task_id == task_id)).scalars().all()
    assert events == ["TaskPosted"]


def test_reorg__shallower_than_confirmations__is_never_seen(chain, model, db):
    ingestor = _ingestor(chain, db, confirmations=2)
    rpc(chain.w3, "evm_mine")
    ingestor.poll_once()
    task_id, _ = _post(chain, model)
    rpc(chain.w3, "anvil_reorg", 1, [])
    for _ in range(2):
        rpc(chain.w3, "evm_mine")

    assert ingestor.poll_once() == 0
    assert ingestor.reorgs == 0 and _task(db, task_id) is None
    with db.session() as s:
        assert (
            s.execute(select(func.count()).select_from(ChainLog).where(ChainLog.task_id == task_id)).scalar_one() == 0
        )


def test_reorg__oracle_tx_reorged_out__tx_manager_reopens_and_rebroadcasts_it(chain, model, db):
    from oracle.txmanager import TxManager, TxPolicy

    txm = TxManager(db, chain.w3, dev_account("oracle"), TxPolicy(wait_timeout_s=10))
    forks: list[int] = []
    ingestor = _ingestor(chain, db, on_reorg=lambda fork: (forks.append(fork), txm.reorged(fork)))
    ingestor.poll_once()
    task_id, _ = _post(chain, model)
    failed = txm.transact(fail_task_call(chain.escrow, task_id, "no agent"), "fail_task", [task_id])
    ingestor.poll_once()

    rpc(chain.w3, "anvil_reorg", 1, [])  # the fail_task block goes
    ingestor.poll_once()

    assert forks == [failed.block_number - 1]
    assert [r.task_ids for r in txm.pending()] == [(task_id,)]
    txm.check_pending()  # rebroadcast: the same signed bytes are mined again
    txm.check_pending()
    assert txm.pending() == [] and chain.escrow.functions.task(task_id).call().state == 3  # FAILED on-chain
