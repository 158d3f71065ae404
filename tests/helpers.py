"""Helpers for tests that drive the real chain."""

from __future__ import annotations

from tributa.chain.events import first_event


def signer_for(contracts, role: str):
    from tributa.chain.accounts import dev_account
    from tributa.chain.tx import Signer

    return Signer(contracts.w3, dev_account(role))


def advance_time(w3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def register_test_model(contracts, publisher, fee_per_task: int = 10**15, name: str = "test-model") -> int:
    """A model with a random weights digest: enough for escrow tests that run no inference."""
    import os

    call = contracts.registry.functions.register_model(
        name, os.urandom(32), [], [], [], fee_per_task, publisher.address
    )
    result = publisher.transact(call)
    return first_event(contracts.registry, "ModelRegistered", result.receipt)["model_id"]


def ensure_agent(contracts, signer, models: list[int]) -> None:
    """Register `signer` as an agent serving `models` (or update its model list)."""
    from compute_agent.bootstrap import public_key
    from compute_agent.registration import AgentProfile, ensure_registered

    ensure_registered(contracts, signer, AgentProfile(models, 0, 1, public_key(signer)))


def post_raw_task(
    contracts,
    requester,
    model_id: int,
    input_digest: bytes,
    deadline_s: int = 600,
    fee: int | None = None,
    k: int = 1,
    max_model_fee: int | None = None,
) -> int:
    from tributa.tasks import min_fee, model_fee_of

    now = contracts.w3.eth.get_block("latest")["timestamp"]
    fee = fee if fee is not None else 2 * min_fee(contracts, model_id)
    max_model_fee = model_fee_of(contracts, model_id) if max_model_fee is None else max_model_fee
    call = contracts.escrow.functions.post_task(model_id, input_digest, now + deadline_s, k, max_model_fee)
    result = requester.transact(call, value=fee)
    return first_event(contracts.escrow, "TaskPosted", result.receipt)["task_id"]


class OracleParts:
    """The oracle's parts over one fresh database and store, wired as the service wires them."""

    def __init__(self, contracts, signers, tmp_path, **settler_options) -> None:
        from oracle.db import Database, database_url
        from oracle.ingest import Ingestor
        from oracle.jobs import JobBook
        from oracle.settler import Settler
        from tributa.store import open_store

        self.contracts = contracts
        self.db = Database(database_url(tmp_path))
        self.store = open_store(tmp_path / "store")
        self.book = JobBook(self.db, self.store, contracts.chain_id, contracts.escrow.address, lease_s=60)
        self.ingestor = Ingestor(self.db, contracts.escrow, contracts.deployment.block_number)
        self.settler = Settler(self.db, contracts, signers["oracle"], store=self.store, **settler_options)

    def chain_time(self) -> int:
        return self.contracts.w3.eth.get_block("latest")["timestamp"]

    def state(self, task_id: int) -> str:
        from oracle.db import Task

        with self.db.session() as s:
            return s.get(Task, task_id).state

    def set_state(self, task_id: int, state: str) -> None:
        from oracle.db import Task

        with self.db.session() as s:
            s.get(Task, task_id).state = state


def registered_model(contracts, publisher, store, name: str, folder, adapters=()) -> int:
    """The model registered with these weights and adapters (another test module on the same
    chain may have registered it: a weights set registers once), else a new one."""
    from tributa.catalog import describe_folder
    from tributa.publish import register_model
    from tributa.registry import list_models

    digest = describe_folder(store, folder).digest
    adapter_digests = [describe_folder(store, a).digest for a in adapters]
    for model in list_models(contracts.registry):
        if bytes(model.weights_digest) == digest and [bytes(d) for d in model.adapter_digests] == adapter_digests:
            return model.model_id
    return register_model(contracts, publisher, store, name, folder, list(adapters), None, 10**15).model_id
