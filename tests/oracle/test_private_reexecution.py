"""Spot checks of private tasks on a real chain and real MiniLM weights.

The oracle opens the requester's sealed input with its own key, re-runs it, and judges the
answers (opened from their copies sealed to its key) by the acceptance rule; the plaintext
output never enters the store, only its seals to the requester and to the oracle do.
"""

from __future__ import annotations

import pytest

from oracle.db import Task, TaskState
from oracle.jobs import JobBook, Submission
from oracle.reexecute import Reexecutor
from tests.helpers import OracleParts, ensure_agent, post_raw_task
from tributa import private
from tributa.chain.eip712 import sign_result
from tributa.crypto import public_key_of
from tributa.ml.embeddings import model_dir as minilm_dir
from tributa.publish import register_model
from tributa.runtime.executor import Executor
from tributa.store import cid as cidlib
from tributa.tasks import encode_input

ONCHAIN_SETTLED = 2
INPUT = encode_input(texts=["a private question about bread"])


def _key(signer) -> bytes:
    return bytes(signer.account.key)


@pytest.fixture
def private_setup(contracts, signers, tmp_path, chain_snapshot):
    oracle_key = _key(signers["oracle"])
    parts = OracleParts(contracts, signers, tmp_path)
    reexecutor = Reexecutor(contracts, parts.store, [minilm_dir()], Executor(), oracle_key=oracle_key)
    parts.settler.reexecute = reexecutor
    parts.settler.oracle_key = oracle_key  # opens the answers' oracle copies to judge them
    parts.settler.spot_check_fraction = 1.0  # every k=1 task is re-run
    parts.book = JobBook(
        parts.db,
        parts.store,
        contracts.chain_id,
        contracts.escrow.address,
        60,
        oracle_key=oracle_key,
        agent_pubkey=lambda agent: public_key_of(_key(signers["agent"])),
    )
    model = _minilm_model(contracts, signers, parts.store)
    ensure_agent(contracts, signers["agent"], [model.model_id])
    requester = signers["requester"]
    where = private.Deployment(contracts.chain_id, contracts.escrow.address)
    sealed = private.seal_input(
        public_key_of(oracle_key), INPUT, public_key_of(_key(requester)), where, requester.address
    )
    input_cid = str(parts.store.put_bytes(sealed))
    task_id = post_raw_task(contracts, requester, model.model_id, cidlib.cid_to_digest(input_cid))
    parts.ingestor.poll_once()
    offer = parts.book.lease(signers["agent"].address, {model.model_id}, parts.chain_time())
    assert offer is not None and offer.input_envelope_b64 and offer.input_b64 is None
    return parts, offer, task_id, where


def _minilm_model(contracts, signers, store):
    """The MiniLM model: a weights set registers once, and the e2e module may have
    registered it on this session's chain already (same publisher and fee)."""
    from types import SimpleNamespace

    from tributa.catalog import describe_folder

    key = contracts.registry.functions.weights_key(describe_folder(store, minilm_dir()).digest, []).call()
    existing = contracts.registry.functions.model_id_of_weights(key).call()
    if existing:
        return SimpleNamespace(model_id=existing)
    return register_model(contracts, signers["publisher"], store, "private-embed", minilm_dir(), [], None, 10**15)


def _submit(parts, signers, offer, output: bytes) -> None:
    agent = signers["agent"]
    digest = cidlib.cid_to_digest(str(parts.store.cid_of(output)))
    signature = sign_result(
        agent.account, parts.contracts.chain_id, parts.contracts.escrow.address, offer.task_id, digest
    )
    parts.book.submit(agent.address, offer.job_id, Submission(output, digest, signature))


def _task(parts, task_id: int) -> Task:
    with parts.db.session() as s:
        task = s.get(Task, task_id)
        s.expunge(task)
        return task


def _opened_result(parts, signers, task_id: int, where) -> bytes:
    task = _task(parts, task_id)
    sealed = parts.store.get_bytes(task.result_ciphertext_cid)
    return private.open_output(_key(signers["requester"]), sealed, where, task.requester, task_id)


def test_spot_check__private_task_with_a_wrong_answer__agent_slashed_and_requester_gets_the_oracle_run(
    private_setup, contracts, signers
):
    parts, offer, task_id, where = private_setup
    escrow = contracts.escrow.functions
    stake_before = escrow.agent(signers["agent"].address).call().stake
    _submit(parts, signers, offer, b'{"vectors":[[0.0]]}')

    assert parts.settler.settle_ready() == 1

    honest = parts.settler.reexecute(_task(parts, task_id))
    honest_cid = str(parts.store.cid_of(honest))
    onchain = escrow.task(task_id).call()
    assert onchain[-1] == ONCHAIN_SETTLED
    assert escrow.agent(signers["agent"].address).call().stake < stake_before
    assert _task(parts, task_id).result_digest == "0x" + cidlib.cid_to_digest(honest_cid).hex()
    assert _opened_result(parts, signers, task_id, where) == honest
    assert not parts.store.has(honest_cid)  # the plaintext output was never stored


def test_spot_check__private_task_answered_right__agent_paid_with_its_own_seal(private_setup, contracts, signers):
    parts, offer, task_id, where = private_setup
    escrow = contracts.escrow.functions
    honest = parts.settler.reexecute(_task(parts, task_id))
    credit_before = escrow.balance_of(signers["agent"].address).call()
    _submit(parts, signers, offer, honest)

    assert parts.settler.settle_ready() == 1

    assert parts.state(task_id) == TaskState.SETTLED
    assert escrow.balance_of(signers["agent"].address).call() > credit_before
    assert _opened_result(parts, signers, task_id, where) == honest
    assert not parts.store.has(str(parts.store.cid_of(honest)))


def test_spot_check__private_answer_differing_in_bytes_but_agreeing_by_cosine__paid_not_slashed(
    private_setup, contracts, signers
):
    # Another CPU kernel or batch shape moves embeddings in the 4th decimal: the verdict must judge
    # the private answer by the acceptance rule (opening the oracle's sealed copy), not by digest.
    import json

    from tributa.runtime.jobs import canonical_json

    parts, offer, task_id, where = private_setup
    escrow = contracts.escrow.functions
    honest = parts.settler.reexecute(_task(parts, task_id))
    body = json.loads(honest)
    body["vectors"] = [[round(x + 1e-4, 4) for x in vector] for vector in body["vectors"]]
    nudged = canonical_json(body)
    assert nudged != honest
    stake_before = escrow.agent(signers["agent"].address).call().stake
    credit_before = escrow.balance_of(signers["agent"].address).call()
    _submit(parts, signers, offer, nudged)

    assert parts.settler.settle_ready() == 1

    assert parts.state(task_id) == TaskState.SETTLED
    assert escrow.agent(signers["agent"].address).call().stake == stake_before  # not slashed
    assert escrow.balance_of(signers["agent"].address).call() > credit_before  # paid
    assert _opened_result(parts, signers, task_id, where) == nudged  # its own answer, settled
    for cid in (parts.store.cid_of(nudged), parts.store.cid_of(honest)):
        assert not parts.store.has(str(cid))  # still no plaintext in the store
