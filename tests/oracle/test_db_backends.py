"""The same database tests on SQLite and on a real PostgreSQL (TRIBUTA_TEST_PG_URL; `make test` sets it).

Migrations, exact uint256 storage, transactions, ingestion and the nonce counter must behave
identically on both backends.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text
from web3 import Web3

from oracle.db import Base, ChainLog, Database, Task, TaskState
from oracle.ingest import Ingestor
from oracle.migrations import alembic_config, head_revision
from oracle.txmanager import TxManager
from tests.helpers import post_raw_task, register_test_model
from tests.oracle.support import backend_params, database_url
from tributa.chain.accounts import dev_account
from tributa.devnet import AnvilNode
from tributa.errors import ConfigError

pytestmark = pytest.mark.parametrize("backend", backend_params())


@pytest.fixture
def url(backend, tmp_path):
    with database_url(backend, tmp_path) as url:
        yield url


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_migrations__fresh_database__schema_matches_the_models(url):
    db = Database(url)

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    assert _revision(url) == head_revision()


def test_migrations__database_made_before_migrations__is_adopted_with_its_rows(url):
    # What create_all produced before Alembic: the baseline schema, no alembic_version table.
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            text(
                "INSERT INTO tasks (task_id, requester, model_id, input_digest, fee, model_fee, deadline, k, state, "
                "posted_block, posted_at) VALUES (5, '0xabc', 1, '0x00', :fee, '0', 1, 1, 'open', 3, 0)"
            ),
            {"fee": str(2**256 - 1)},
        )
    engine.dispose()

    db = Database(url)

    assert _revision(url) == head_revision()
    with db.session() as s:
        assert s.get(Task, 5).fee == 2**256 - 1
    assert "args" in {c["name"] for c in inspect(db.engine).get_columns("chain_logs")}


def test_migrations__two_processes_open_a_fresh_database_at_once__both_succeed(url):
    errors: list[BaseException] = []

    def open_db() -> None:
        try:
            Database(url).engine.dispose()
        except BaseException as exc:  # collected and asserted below  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_db) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    assert _revision(url) == head_revision()


def test_migrations__reopening__costs_one_query_not_a_migration(url):
    Database(url)
    started = time.perf_counter()
    Database(url).engine.dispose()
    assert time.perf_counter() - started < 0.5


def test_wei__uint256_extremes__round_trip_exactly(url):
    db = Database(url)
    with db.session() as s:
        s.add(_task(1, fee=2**256 - 1, model_fee=0))
    with db.session() as s:
        task = s.get(Task, 1)
        assert (task.fee, task.model_fee) == (2**256 - 1, 0)


def test_session__error_inside__rolls_back_every_write(url):
    db = Database(url)
    with pytest.raises(RuntimeError):
        with db.session() as s:
            s.add(_task(2))
            s.flush()
            raise RuntimeError("crash between two writes")
    with db.session() as s:
        assert s.get(Task, 2) is None


def test_database__unreachable_server__says_what_to_check(backend, tmp_path):
    bad = (
        f"sqlite:///{tmp_path / 'missing-dir' / 'x' / 'oracle.sqlite'}"
        if backend == "sqlite"
        else "postgresql+psycopg2://postgres@127.0.0.1:1/none"
    )
    with pytest.raises(ConfigError, match="TRIBUTA_DB_URL"):
        Database(bad)


def test_ingest__same_chain__same_tasks_and_logs_on_either_backend(url, contracts, signers, chain_snapshot):
    model = register_test_model(contracts, signers["publisher"])
    ids = [post_raw_task(contracts, signers["requester"], model, os.urandom(32)) for _ in range(2)]
    db = Database(url)

    Ingestor(db, contracts.escrow, contracts.deployment.block_number, max_blocks=3).poll_once()

    with db.session() as s:
        tasks = {t.task_id: t for t in s.execute(select(Task).where(Task.task_id.in_(ids))).scalars()}
        logs = s.execute(select(ChainLog).where(ChainLog.task_id.in_(ids))).scalars().all()
    assert set(tasks) == set(ids) and all(t.state == TaskState.OPEN for t in tasks.values())
    assert sorted(log.task_id for log in logs) == sorted(ids) and all(log.args for log in logs)


def test_nonces__two_managers_on_one_database__never_hand_out_the_same_nonce(url, tmp_path):
    with AnvilNode(log_path=tmp_path / "anvil.log") as node:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url))
        managers = [TxManager(Database(url), w3, dev_account("oracle")) for _ in range(2)]
        records: list = []
        lock = threading.Lock()

        def send(manager: TxManager) -> None:
            for _ in range(3):
                record = manager.send_tx(dev_account("treasury").address, value=1)
                with lock:
                    records.append(record)

        threads = [threading.Thread(target=send, args=(m,)) for m in managers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

        assert sorted(r.nonce for r in records) == list(range(6))
        for record in records:
            assert managers[0].wait(record)["status"] == 1


def _task(task_id: int, fee: int = 10**15, model_fee: int = 10**14) -> Task:
    return Task(
        task_id=task_id,
        requester="0x" + "11" * 20,
        model_id=1,
        input_digest="0x" + "00" * 32,
        fee=fee,
        model_fee=model_fee,
        deadline=2**40,
        k=1,
        state=TaskState.OPEN,
        posted_block=1,
        posted_at=0.0,
    )
