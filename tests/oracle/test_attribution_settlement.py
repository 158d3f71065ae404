"""Attribution inside settlement on a real chain: quoted datasets earn, unattributable output falls back."""

from __future__ import annotations

import json

import pytest

from oracle.attribution.service import DatasetIndexes, OracleAttributor
from oracle.db import Task
from tests.helpers import OracleParts, ensure_agent, post_raw_task, signer_for
from tests.oracle.support import ASTRO, BAKING
from tributa import merkle
from tributa.datasets import register_dataset
from tributa.publish import register_model
from tributa.store import cid as cidlib


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    from tributa.ml.embeddings import load_embedder
    from tributa.ml.tokenizer import load_tokenizer

    return DatasetIndexes(tmp_path_factory.mktemp("indexes"), load_tokenizer(), load_embedder())


@pytest.fixture
def world(contracts, signers, tmp_path, indexes, chain_snapshot):
    oracle = OracleParts(contracts, signers, tmp_path)
    creator = signers["creator"]
    members = sorted(
        [signer_for(contracts, "16").address, signer_for(contracts, "17").address], key=lambda a: int(a, 16)
    )
    datasets = {}
    for name, text in (("astro", ASTRO), ("baking", BAKING)):
        path = tmp_path / f"{name}.txt"
        path.write_text(text)
        registered = register_dataset(
            contracts,
            creator,
            oracle.store,
            path,
            members,
            [5000, 5000],
            "CC0",
            name,
            lambda cid, t: indexes.build(cid, t).token_count,
        )
        datasets[name] = registered.dataset_id
    attributor = OracleAttributor(contracts, oracle.store, indexes)
    return oracle, datasets, attributor, members


def _task(oracle, contracts, signers, model_id: int, output: dict) -> Task:
    cid = str(oracle.store.put_bytes(json.dumps(output).encode()))
    return Task(task_id=1, model_id=model_id, result_cid=cid, input_digest="0x" + "00" * 32, k=1)


def _model(contracts, signers, store, tmp_path, datasets: dict[int, int] | None):
    folder = tmp_path / f"model-{len(datasets or {})}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "n": len(datasets or {})}))
    return register_model(contracts, signers["publisher"], store, "attr-test", folder, [], datasets, 10**15).model_id


def test_attributor__output_quotes_one_dataset__all_weight_to_it(world, contracts, signers, tmp_path):
    oracle, datasets, attributor, _ = world
    model = _model(contracts, signers, oracle.store, tmp_path, {datasets["astro"]: 5000, datasets["baking"]: 5000})
    quote = "the same face of the Moon always points toward us because its spin is locked to its orbit"

    result = attributor(_task(oracle, contracts, signers, model, {"kind": "generate", "text": quote}))

    assert result.dataset_ids == [datasets["astro"]] and result.weights_bps == [10_000]
    envelope = json.loads(oracle.store.get_bytes(result.record_cid))
    assert envelope["settlement"]["source"] == "engine"
    assert any("Moon" in span["text"] for span in envelope["record"]["spans"])
    assert cidlib.cid_to_digest(result.record_cid) == result.record_digest


def test_attributor__unrelated_output__falls_back_to_model_training_datasets(world, contracts, signers, tmp_path):
    oracle, datasets, attributor, _ = world
    model = _model(contracts, signers, oracle.store, tmp_path, {datasets["astro"]: 3000, datasets["baking"]: 7000})

    result = attributor(_task(oracle, contracts, signers, model, {"kind": "generate", "text": "zq xv kkp 42 !!"}))

    assert dict(zip(result.dataset_ids, result.weights_bps, strict=False)) == {
        datasets["astro"]: 3000,
        datasets["baking"]: 7000,
    }
    assert json.loads(oracle.store.get_bytes(result.record_cid))["settlement"]["source"] == "model_training_datasets"


def test_attributor__no_datasets_anywhere__data_share_goes_back_to_requester(world, contracts, signers, tmp_path):
    oracle, _, attributor, _ = world
    model = _model(contracts, signers, oracle.store, tmp_path, None)

    result = attributor(_task(oracle, contracts, signers, model, {"kind": "embed", "vectors": [[0.1]]}))

    assert result.dataset_ids == [] and result.weights_bps == []
    assert json.loads(oracle.store.get_bytes(result.record_cid))["settlement"]["source"] == "refund_requester"


def test_settle__attributed_output__credits_the_quoted_dataset_and_contributors_can_claim(
    world, contracts, signers, tmp_path
):
    oracle, datasets, attributor, members = world
    oracle.settler.attributor = attributor
    model = _model(contracts, signers, oracle.store, tmp_path, {datasets["baking"]: 10_000})
    ensure_agent(contracts, signers["agent"], [model])
    input_cid = str(oracle.store.put_bytes(b'{"prompt":"Knead"}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    oracle.ingestor.poll_once()
    offer = oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time())
    output = json.dumps(
        {"kind": "generate", "text": "leave it covered in a warm place until it has doubled in size"}
    ).encode()
    from tests.oracle.test_settlement import _submit

    _submit(oracle, signers["agent"], offer, output, task_id)
    assert oracle.settler.settle_ready() == 1

    revenue = contracts.vault.functions.revenue(datasets["baking"], 1).call()
    assert revenue > 0 and contracts.vault.functions.revenue(datasets["astro"], 1).call() == 0
    member = signer_for(contracts, "16")
    proof = merkle.contributors_proof(members, [5000, 5000], members.index(member.address))
    before = contracts.w3.eth.get_balance(member.address)
    receipt = member.transact(contracts.vault.functions.claim(datasets["baking"], 1, 5000, proof)).receipt
    assert (
        contracts.vault.functions.claimed(datasets["baking"], 1, member.address, 5000, proof[:1]).call() == revenue // 2
    )
    gas_paid = receipt.gasUsed * receipt.effectiveGasPrice
    assert contracts.w3.eth.get_balance(member.address) == before + revenue // 2 - gas_paid


def _settle_quote(oracle, contracts, signers, model: int, text: str) -> None:
    from tests.oracle.test_settlement import _submit

    input_cid = str(oracle.store.put_bytes(json.dumps({"prompt": text[:12]}).encode()))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    oracle.ingestor.poll_once()
    offer = oracle.book.lease(signers["agent"].address, {model}, oracle.chain_time())
    _submit(oracle, signers["agent"], offer, json.dumps({"kind": "generate", "text": text}).encode(), task_id)
    assert oracle.settler.settle_ready() == 1


def test_claim_all__first_claim_then_a_new_credit__pays_each_wei_once_and_repeats_with_a_short_proof(
    world, contracts, signers, tmp_path
):
    from tributa.royalties import claim_all, shares_of

    oracle, datasets, attributor, _members = world
    oracle.settler.attributor = attributor
    model = _model(contracts, signers, oracle.store, tmp_path, {datasets["baking"]: 10_000})
    ensure_agent(contracts, signers["agent"], [model])
    member = signer_for(contracts, "17")
    vault = contracts.vault.functions

    _settle_quote(oracle, contracts, signers, model, "leave it covered in a warm place until it has doubled in size")
    first_revenue = vault.revenue(datasets["baking"], 1).call()
    astro, share = shares_of(contracts, member.address)  # a contributor of both datasets
    assert (astro.dataset_id, astro.claimable) == (datasets["astro"], 0)
    assert (share.dataset_id, share.claimable, share.claimed) == (datasets["baking"], first_revenue // 2, 0)
    assert len(share.proof) == 1  # two contributors: the sibling leaf is the whole proof
    paid, _ = claim_all(contracts, member)
    assert paid == first_revenue // 2

    _settle_quote(
        oracle, contracts, signers, model, "Knead the dough on a floured table for ten minutes until it is smooth"
    )
    second_revenue = vault.revenue(datasets["baking"], 1).call() - first_revenue
    _, share = shares_of(contracts, member.address)
    assert len(share.proof) == 1 and share.claimed == first_revenue // 2 and share.claimable == second_revenue // 2
    before = contracts.w3.eth.get_balance(member.address)
    paid, (tx,) = claim_all(contracts, member)
    assert paid == second_revenue // 2
    assert (
        contracts.w3.eth.get_balance(member.address)
        == before + paid - tx.receipt.gasUsed * tx.receipt.effectiveGasPrice
    )
    with pytest.raises(Exception, match="no royalties to claim"):
        claim_all(contracts, member)


def test_royalties_claim__contributor_with_no_ether__told_how_then_paid_by_a_relayer_through_claim_for(
    world, contracts, signers, tmp_path, fresh_settings
):
    from tests.cli.test_cli_errors import assert_one_line_error, run_cli

    oracle, datasets, attributor, _members = world
    oracle.settler.attributor = attributor
    model = _model(contracts, signers, oracle.store, tmp_path, {datasets["baking"]: 10_000})
    ensure_agent(contracts, signers["agent"], [model])
    from tributa.royalties import shares_of

    member = signer_for(contracts, "16")
    _settle_quote(oracle, contracts, signers, model, "leave it covered in a warm place until it has doubled in size")
    owed = sum(s.claimable for s in shares_of(contracts, member.address))
    assert owed > 0
    w3 = contracts.w3
    w3.provider.make_request("anvil_setBalance", [member.address, "0x0"])

    broke = run_cli(fresh_settings, "royalties", "claim", "--account", "dev:16")
    assert_one_line_error(broke, member.address, "cannot pay", f"royalties claim --for {member.address}")
    assert w3.eth.get_balance(member.address) == 0

    relayer = signers["requester"]
    relayed = run_cli(fresh_settings, "royalties", "claim", "--for", member.address, "--account", "dev:requester")
    assert relayed.exit_code == 0, relayed.output
    assert f"to {member.address} in 1 transaction(s), gas paid by {relayer.address}" in relayed.output
    assert w3.eth.get_balance(member.address) == owed
    assert_one_line_error(
        run_cli(fresh_settings, "royalties", "claim", "--for", member.address), "has no royalties to claim"
    )
