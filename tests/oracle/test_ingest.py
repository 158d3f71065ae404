"""Event ingestion against a real Anvil node: the cursor survives restarts, replays are absorbed."""

from __future__ import annotations

import os

from sqlalchemy import func, select

from oracle.db import ChainLog, Cursor, Database, Task, TaskState, database_url
from oracle.ingest import CURSOR_NAME, Ingestor
from tests.helpers import post_raw_task, register_test_model


def _ingestor(contracts, db, **kw) -> Ingestor:
    return Ingestor(db, contracts.escrow, contracts.deployment.block_number, **kw)


def _task_count(db) -> int:
    with db.session() as s:
        return s.execute(select(func.count()).select_from(Task)).scalar_one()


def test_ingest__restart__resumes_from_saved_cursor(contracts, signers, tmp_path, chain_snapshot):
    model = register_test_model(contracts, signers["publisher"])
    db = Database(database_url(tmp_path))
    _ingestor(contracts, db).poll_once()  # whatever earlier tests left on the chain
    first = [post_raw_task(contracts, signers["requester"], model, os.urandom(32)) for _ in range(2)]

    assert _ingestor(contracts, db).poll_once() == 2
    cursor_after_first = db.cursor(CURSOR_NAME)
    assert cursor_after_first == contracts.w3.eth.block_number

    # A new process over the same database: nothing is ingested twice.
    restarted = Database(database_url(tmp_path))
    assert _ingestor(contracts, restarted).poll_once() == 0
    later = post_raw_task(contracts, signers["requester"], model, os.urandom(32))
    assert _ingestor(contracts, restarted).poll_once() == 1

    with restarted.session() as s:
        states = {
            t.task_id: t.state for t in s.execute(select(Task).where(Task.task_id.in_([*first, later]))).scalars()
        }
    assert states == {first[0]: TaskState.OPEN, first[1]: TaskState.OPEN, later: TaskState.OPEN}


def test_ingest__cursor_rewound__replayed_logs_are_absorbed(contracts, signers, tmp_path, chain_snapshot):
    model = register_test_model(contracts, signers["publisher"])
    db = Database(database_url(tmp_path))
    post_raw_task(contracts, signers["requester"], model, os.urandom(32))
    ingestor = _ingestor(contracts, db)
    ingestor.poll_once()
    tasks_before = _task_count(db)
    with db.session() as s:
        logs_before = s.execute(select(func.count()).select_from(ChainLog)).scalar_one()
        s.get(Cursor, CURSOR_NAME).block_number = contracts.deployment.block_number

    assert ingestor.poll_once() == 0
    with db.session() as s:
        assert s.execute(select(func.count()).select_from(ChainLog)).scalar_one() == logs_before
    assert _task_count(db) == tasks_before


def test_ingest__small_chunks__same_result_as_one_chunk(contracts, signers, tmp_path, chain_snapshot):
    model = register_test_model(contracts, signers["publisher"])
    ids = [post_raw_task(contracts, signers["requester"], model, os.urandom(32)) for _ in range(3)]
    db = Database(database_url(tmp_path))

    _ingestor(contracts, db, max_blocks=1).poll_once()

    with db.session() as s:
        got = sorted(t.task_id for t in s.execute(select(Task)).scalars() if t.task_id in ids)
    assert got == sorted(ids)


def test_ingest__confirmations__holds_back_recent_blocks(contracts, signers, tmp_path, chain_snapshot):
    model = register_test_model(contracts, signers["publisher"])
    db = Database(database_url(tmp_path))
    _ingestor(contracts, db).poll_once()
    task_id = post_raw_task(contracts, signers["requester"], model, os.urandom(32))
    deep = _ingestor(contracts, db, confirmations=3)

    assert deep.poll_once() == 0
    for _ in range(3):
        contracts.w3.provider.make_request("evm_mine", [])
    assert deep.poll_once() == 1
    with db.session() as s:
        assert s.get(Task, task_id).state == TaskState.OPEN
