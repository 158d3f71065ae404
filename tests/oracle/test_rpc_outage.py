"""An RPC node that goes away and comes back: nothing crashes, nothing is lost or done twice.

The node is a private Anvil holding a copy of the deployed chain; "going away" is stopping the
process, "coming back" is a new Anvil on the same port loaded with the state dumped before.
"""

from __future__ import annotations

import logging
import os
import time

import pytest
from sqlalchemy import func, select

from oracle.db import ChainLog, Database, SentTx, Task, TxState, database_url
from oracle.ingest import CURSOR_NAME, Ingestor
from oracle.rpc import RpcUnavailable
from oracle.txmanager import NotSent, TxManager, TxPolicy
from tests.helpers import post_raw_task, register_test_model
from tests.oracle.support import chain_state, load_state, rpc
from tributa.chain.accounts import dev_account
from tributa.chain.contracts import bind
from tributa.chain.tx import Signer
from tributa.devnet import AnvilNode

RECIPIENT = dev_account("treasury").address


class Outage:
    """A node that can be taken down and brought back with its chain intact."""

    def __init__(self, contracts, log_dir) -> None:
        self.node = AnvilNode(log_path=log_dir / "anvil.log").start()
        self.chain = bind(load_state(self.node, chain_state(contracts)), contracts.deployment)
        self._state: str | None = None

    @property
    def w3(self):
        return self.chain.w3

    def down(self) -> None:
        self._state = rpc(self.w3, "anvil_dumpState")  # the pool is not part of it: a restart loses it
        self.node.stop()

    def up(self) -> None:
        self.node.start()
        load_state(self.node, self._state)


@pytest.fixture
def outage(contracts, tmp_path):
    o = Outage(contracts, tmp_path)
    yield o
    o.node.stop()


def _wait_out(backoff) -> None:
    time.sleep(backoff.delay_s + 0.05)


def _unreachable_lines(caplog, logger: str) -> int:
    return sum(1 for r in caplog.records if r.name == logger and "unreachable" in r.getMessage())


def test_ingest__node_down_then_back__resumes_with_nothing_lost_or_doubled(outage, tmp_path, caplog):
    chain = outage.chain
    model = register_test_model(chain, Signer(chain.w3, dev_account("publisher")))
    db = Database(database_url(tmp_path))
    ingestor = Ingestor(db, chain.escrow, chain.deployment.block_number)
    ingestor.poll_once()
    first = post_raw_task(chain, Signer(chain.w3, dev_account("requester")), model, os.urandom(32))
    cursor = db.cursor(CURSOR_NAME)

    outage.down()
    with caplog.at_level(logging.INFO, logger="tributa.oracle.ingest"):
        with pytest.raises(RpcUnavailable, match="unreachable"):
            ingestor.poll_once()
        assert ingestor.poll_once() == 0  # backing off: no second call, no second line
        assert _unreachable_lines(caplog, "tributa.oracle.ingest") == 1
        assert db.cursor(CURSOR_NAME) == cursor

        outage.up()
        _wait_out(ingestor.backoff)
        assert ingestor.poll_once() == 1
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    second = post_raw_task(chain, Signer(chain.w3, dev_account("requester")), model, os.urandom(32))
    assert ingestor.poll_once() == 1

    with db.session() as s:
        assert {t.task_id for t in s.execute(select(Task).where(Task.task_id.in_([first, second]))).scalars()} == {
            first,
            second,
        }
        per_task = s.execute(
            select(func.count()).select_from(ChainLog).where(ChainLog.task_id.in_([first, second]))
        ).scalar_one()
    assert per_task == 2


def test_send__node_down__records_nothing_and_sends_once_it_is_back(outage, tmp_path):
    db = Database(database_url(tmp_path))
    txm = TxManager(db, outage.w3, dev_account("oracle"))
    mined = txm.wait(txm.send_tx(RECIPIENT, value=1))
    assert mined["status"] == 1

    outage.down()
    with pytest.raises(NotSent, match="unreachable"):
        txm.send_tx(RECIPIENT, value=2)
    with db.session() as s:
        assert s.execute(select(func.count()).select_from(SentTx)).scalar_one() == 1

    outage.up()
    _wait_out(txm.backoff)
    again = txm.send_tx(RECIPIENT, value=2)
    assert txm.wait(again)["status"] == 1
    assert again.nonce == outage.w3.eth.get_transaction_count(dev_account("oracle").address) - 1


def test_wait__node_restarts_and_loses_its_pool__tx_is_rebroadcast_and_mined_once(outage, tmp_path, caplog):
    db = Database(database_url(tmp_path))
    txm = TxManager(db, outage.w3, dev_account("oracle"), TxPolicy(outage_grace_s=0.3, wait_timeout_s=10))
    rpc(outage.w3, "evm_setAutomine", False)
    sent = txm.send_tx(RECIPIENT, value=3)
    balance = outage.w3.eth.get_balance(RECIPIENT)

    outage.down()
    with caplog.at_level(logging.WARNING, logger="tributa.oracle.txmanager"):
        with pytest.raises(RpcUnavailable):
            txm.wait(sent, timeout_s=5)
    assert txm.record(sent.id).state == TxState.PENDING  # still owed, still recorded

    outage.up()  # automine is on again, the pool is empty
    _wait_out(txm.backoff)
    with caplog.at_level(logging.WARNING, logger="tributa.oracle.txmanager"):
        txm.check_pending()  # sees the nonce missing from the node and rebroadcasts the same bytes
    assert any("not in the node's pool" in r.getMessage() for r in caplog.records)
    receipt = txm.wait(sent)

    assert receipt["transactionHash"].to_0x_hex() == sent.tx_hash
    assert txm.record(sent.id).state == TxState.MINED
    assert outage.w3.eth.get_balance(RECIPIENT) - balance == 3
