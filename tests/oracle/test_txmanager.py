"""The transaction manager on real Anvil nodes: fee bumps, recovery after a restart, nonces.

Mining is switched off (evm_setAutomine false) where a transaction must stay stuck; blocks are
then mined by hand with evm_mine.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select
from web3 import Web3

from oracle.db import Database, SentTx, TxState
from oracle.txmanager import TxManager, TxPolicy
from tests.helpers import post_raw_task, register_test_model
from tests.oracle.support import backend_params, database_url, fail_task_call, private_chain, rpc
from tributa.chain.accounts import dev_account
from tributa.chain.tx import Signer
from tributa.devnet import AnvilNode
from tributa.errors import ChainError, ContractRevert

RECIPIENT = dev_account("treasury").address
QUICK_BUMP = TxPolicy(bump_after_s=0.2, bump_after_blocks=0, wait_timeout_s=10)


@pytest.fixture
def node(tmp_path):
    with AnvilNode(log_path=tmp_path / "anvil.log") as node:
        yield node


@pytest.fixture
def w3(node):
    return Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 10}))


def _manager(db, w3, policy: TxPolicy = QUICK_BUMP) -> TxManager:
    return TxManager(db, w3, dev_account("oracle"), policy)


def _pool_hashes(w3) -> set[str]:
    pending = rpc(w3, "txpool_content")["pending"]
    return {tx["hash"] for by_nonce in pending.values() for tx in by_nonce.values()}


def _sent_rows(db) -> int:
    with db.session() as s:
        return s.execute(select(func.count()).select_from(SentTx)).scalar_one()


def test_send__stuck_without_mining__is_fee_bumped_and_only_the_bump_is_mined(w3, tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'oracle.sqlite'}")
    txm = _manager(db, w3)
    rpc(w3, "evm_setAutomine", False)
    sent = txm.send_tx(RECIPIENT, value=1, purpose="transfer")
    assert sent.state == TxState.PENDING and _pool_hashes(w3) == {sent.tx_hash}

    assert txm.check_pending() == [] and txm.record(sent.id).attempts == 1  # not stuck yet
    time.sleep(0.3)
    txm.check_pending()

    bumped = txm.record(sent.id)
    assert bumped.attempts == 2 and bumped.nonce == sent.nonce
    assert bumped.max_fee_per_gas >= sent.max_fee_per_gas * 1125 // 1000
    assert bumped.max_priority_fee_per_gas >= sent.max_priority_fee_per_gas * 1125 // 1000
    assert _pool_hashes(w3) == {bumped.tx_hash}  # the node replaced the first attempt

    rpc(w3, "evm_mine")
    assert [r.id for r in txm.check_pending()] == [sent.id]
    mined = txm.record(sent.id)
    assert mined.state == TxState.MINED and mined.tx_hash == bumped.tx_hash and mined.receipt_status == 1
    assert [a.state for a in txm.attempts(sent.id)] == [TxState.REPLACED, TxState.MINED]
    block = w3.eth.get_block(mined.mined_block)
    assert [t.to_0x_hex() for t in block["transactions"]] == [bumped.tx_hash]


@pytest.mark.parametrize("backend", backend_params())
def test_recover__node_lost_its_mempool__fresh_manager_keeps_nonces_and_rebroadcasts(w3, tmp_path, backend):
    with database_url(backend, tmp_path) as url:
        rpc(w3, "evm_setAutomine", False)
        first = _manager(Database(url), w3).send_tx(RECIPIENT, value=1, purpose="transfer", task_ids=[7])
        rpc(w3, "anvil_dropAllTransactions")  # the node forgets it; the chain's pending nonce is 0 again
        assert w3.eth.get_transaction_count(dev_account("oracle").address, "pending") == first.nonce

        restarted = _manager(Database(url), w3)  # a new process over the same database
        second = restarted.send_tx(RECIPIENT, value=2, purpose="transfer")
        assert second.nonce == first.nonce + 1  # the in-flight nonce is not handed out again
        assert restarted.pending_task_ids("transfer") == {7}
        restarted.recover()
        assert _pool_hashes(w3) == {first.tx_hash, second.tx_hash}

        rpc(w3, "evm_mine")
        done = {r.id: r for r in restarted.check_pending()}
        assert set(done) == {first.id, second.id}
        assert all(r.state == TxState.MINED for r in done.values())
        assert restarted.pending() == []


def test_recover__mined_while_away__is_recorded_without_rebroadcast(w3, tmp_path):
    url = f"sqlite:///{tmp_path / 'oracle.sqlite'}"
    rpc(w3, "evm_setAutomine", False)
    sent = _manager(Database(url), w3).send_tx(RECIPIENT, value=1)
    rpc(w3, "evm_mine")

    done = _manager(Database(url), w3).recover()

    assert [(r.id, r.state, r.tx_hash) for r in done] == [(sent.id, TxState.MINED, sent.tx_hash)]


def test_send__same_purpose_and_tasks_in_flight__returns_the_pending_tx(w3, tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'oracle.sqlite'}")
    txm = _manager(db, w3)
    rpc(w3, "evm_setAutomine", False)

    first = txm.send_tx(RECIPIENT, value=1, purpose="refund", task_ids=[3, 1])
    again = txm.send_tx(RECIPIENT, value=1, purpose="refund", task_ids=[1, 3])
    other = txm.send_tx(RECIPIENT, value=1, purpose="refund", task_ids=[2])

    assert again.id == first.id and other.id != first.id and other.nonce == first.nonce + 1
    assert _sent_rows(db) == 2


def test_check_pending__nonce_taken_by_a_foreign_tx__marks_replaced(w3, tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'oracle.sqlite'}")
    txm = _manager(db, w3)
    rpc(w3, "evm_setAutomine", False)
    ours = txm.send_tx(RECIPIENT, value=1)
    rpc(w3, "anvil_dropAllTransactions")
    foreign = dev_account("oracle").sign_transaction(
        {
            "to": RECIPIENT,
            "value": 5,
            "gas": 21_000,
            "nonce": ours.nonce,
            "chainId": w3.eth.chain_id,
            "gasPrice": 10**10,
        }
    )
    w3.eth.send_raw_transaction(foreign.raw_transaction)
    rpc(w3, "evm_mine")

    txm.check_pending()

    record = txm.record(ours.id)
    assert record.state == TxState.REPLACED and "did not send" in record.error
    with pytest.raises(ChainError, match="replaced"):
        txm.wait(record, timeout_s=1)


def test_bump__at_the_fee_cap__stops_and_keeps_waiting(w3, tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'oracle.sqlite'}")
    rpc(w3, "evm_setAutomine", False)
    sent = _manager(db, w3).send_tx(RECIPIENT, value=1)
    capped = _manager(db, w3, TxPolicy(bump_after_s=0.0, bump_after_blocks=0, max_fee_per_gas=sent.max_fee_per_gas))

    capped.check_pending()

    assert capped.record(sent.id).attempts == 1 and capped.record(sent.id).state == TxState.PENDING


def test_send__revert_at_estimate__raises_the_reason_and_records_nothing(contracts, tmp_path, chain_snapshot):
    db = Database(f"sqlite:///{tmp_path / 'oracle.sqlite'}")
    txm = TxManager(db, contracts.w3, dev_account("oracle"))

    with pytest.raises(ContractRevert) as err:
        txm.send(contracts.escrow.functions.refund(10**9), purpose="refund", task_ids=[10**9])

    assert "escrow" in err.value.reason
    assert _sent_rows(db) == 0


def test_wait__reverted_on_chain__raises_the_contract_reason(contracts, tmp_path, chain_snapshot):
    with private_chain(contracts, tmp_path) as (_node, chain):
        model = register_test_model(chain, Signer(chain.w3, dev_account("publisher")))
        task_id = post_raw_task(chain, Signer(chain.w3, dev_account("requester")), model, b"\x01" * 32)
        db = Database(f"sqlite:///{tmp_path / 'oracle.sqlite'}")
        txm = TxManager(db, chain.w3, dev_account("oracle"), QUICK_BUMP)
        rpc(chain.w3, "evm_setAutomine", False)
        # Both estimate fine while neither is mined; the second one reverts in the block.
        first = txm.send(fail_task_call(chain.escrow, task_id, "first"), purpose="fail_task", task_ids=[task_id])
        second = txm.send(fail_task_call(chain.escrow, task_id, "second"), purpose="fail_again", task_ids=[task_id])
        rpc(chain.w3, "evm_mine")

        assert txm.wait(first)["status"] == 1
        with pytest.raises(ContractRevert) as err:
            txm.wait(second)
        assert err.value.reason.startswith("escrow:")
        record = txm.record(second.id)
        assert record.state == TxState.FAILED and record.receipt_status == 0
        assert record.task_ids == (task_id,)


def test_reorged__mined_tx_reorged_out__goes_back_to_pending_and_is_rebroadcast_once(w3, tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'oracle.sqlite'}")
    txm = _manager(db, w3)
    for _ in range(3):
        rpc(w3, "evm_mine")  # room below the block that gets reorged
    before = w3.eth.get_balance(RECIPIENT)
    sent = txm.send_tx(RECIPIENT, value=1, purpose="transfer")
    txm.wait(sent)
    mined = txm.record(sent.id)
    assert mined.state == TxState.MINED
    block = mined.mined_block

    rpc(w3, "anvil_reorg", 1, [])  # the block holding it is replaced by an empty one
    assert w3.eth.get_balance(RECIPIENT) == before
    assert txm.reorged(block - 1) == 1
    assert txm.record(sent.id).state == TxState.PENDING

    txm.check_pending()  # rebroadcast (automine mines it)
    txm.check_pending()  # and its receipt found
    again = txm.record(sent.id)
    assert again.state == TxState.MINED and again.tx_hash == sent.tx_hash and again.nonce == sent.nonce
    assert w3.eth.get_balance(RECIPIENT) == before + 1  # paid once, not twice
    assert _sent_rows(db) == 1


def test_reorged__tx_re_included_in_another_block__stays_mined_with_its_new_block(w3, tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'oracle.sqlite'}")
    txm = _manager(db, w3)
    for _ in range(3):
        rpc(w3, "evm_mine")
    sent = txm.send_tx(RECIPIENT, value=1, purpose="transfer")
    txm.wait(sent)
    block = txm.record(sent.id).mined_block
    raw = rpc(w3, "eth_getRawTransactionByHash", sent.tx_hash)

    rpc(w3, "anvil_reorg", 2, [[raw, 1]])  # the new branch carries it one block later
    assert txm.reorged(block - 2) == 0

    record = txm.record(sent.id)
    assert (
        record.state == TxState.MINED
        and record.mined_block == w3.eth.get_transaction_receipt(sent.tx_hash)["blockNumber"]
    )
