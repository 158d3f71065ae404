"""Any Hugging Face causal LM, end to end on Anvil: a random-init Llama the test builds and saves
with its tokenizer, plus a real peft LoRA adapter, served by an agent's serving engine
(`--no-sandbox`, capacity 4: jobs leased together reach the engine together; that they then run
as one mixed-adapter batch with batch-1 tokens is tests/runtime/test_engine.py's to show)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import registered_model, signer_for
from tributa.processes import start_agent, start_oracle
from tributa.publish import register_model, set_serving_terms
from tributa.store import open_store
from tributa.tasks import encode_input, post_task, wait_until_final

SETTLE_TIMEOUT_S = 300
LIMIT = 80  # the model's registered max_new_tokens


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A 2-layer Llama with the demo tokenizer, and one LoRA adapter with random (nonzero) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from tributa.ml import tokenizer as T

    root = tmp_path_factory.mktemp("llama")
    tok = T.load_tokenizer()
    torch.manual_seed(7)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    peft = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft.save_pretrained(root / "adapter")
    return root / "base", root / "adapter"


@pytest.fixture(scope="module")
def network(contracts, deployed, llama, tmp_path_factory):
    from tributa.ml.embeddings import model_dir as minilm_dir

    root = tmp_path_factory.mktemp("engine-e2e")
    settings = deployed.with_overrides(data_dir=root / "data")
    store = open_store(settings.store_dir)
    base_dir, adapter_dir = llama
    publisher = signer_for(contracts, "publisher")
    model = register_model(contracts, publisher, store, "e2e-llama", base_dir, [adapter_dir], None, 10**15)
    set_serving_terms(contracts, publisher, model.model_id, max_new_tokens=LIMIT)  # above the default 64
    embedder = registered_model(contracts, publisher, store, "e2e-minilm", minilm_dir())
    oracle = start_oracle(settings, root / "oracle.log", ["--no-attribution", "--text-logs"])
    agent = start_agent(
        settings,
        root / "agent.log",
        [
            "--text-logs",
            "--no-sandbox",
            "--capacity",
            "4",
            "--threads",
            "1",
            "--model-dir",
            str(base_dir),
            "--model-dir",
            str(adapter_dir),
            "--model-dir",
            str(minilm_dir()),
        ],
    )
    yield {
        "store": store,
        "model": model,
        "embedder": embedder,
        "oracle": oracle,
        "agent": agent,
        "log": root / "agent.log",
    }
    agent.stop()
    oracle.stop()


def test_e2e__random_llama_with_adapter__served_by_the_engine_and_settled(network, contracts, llama):
    from tributa.catalog import describe_folder
    from tributa.runtime.executor import Executor

    store = network["store"]
    base = describe_folder(store, llama[0])
    adapter = describe_folder(store, llama[1])
    requester = signer_for(contracts, "requester")
    inputs = [
        encode_input(prompt=prompt, max_new_tokens=12, adapter=choice)
        for prompt, choice in (
            ("the moon", adapter.cid),
            ("bread and", adapter.cid),
            ("the moon", None),
            ("a star", None),
        )
    ]
    inputs[2] = json.dumps({**json.loads(inputs[2]), "adapter": None}).encode()  # the bare base
    tasks = [post_task(contracts, requester, store, network["model"].model_id, data) for data in inputs]

    views = wait_until_final(
        contracts, [t.task_id for t in tasks], SETTLE_TIMEOUT_S, (network["oracle"], network["agent"])
    )

    assert [views[t.task_id].state for t in tasks] == ["settled"] * 4
    outputs = [store.get_bytes(views[t.task_id].result_cid) for t in tasks]
    # Anyone can re-check: the in-process runtime on the registered weights gives the same bytes.
    assert outputs == [Executor().run(base, [adapter], data) for data in inputs]
    adapters_used = [json.loads(o)["adapter"] for o in outputs]
    assert adapters_used == [adapter.cid, adapter.cid, None, adapter.cid]  # no field: the first adapter
    with_adapter, bare = json.loads(outputs[0])["token_ids"], json.loads(outputs[2])["token_ids"]
    assert with_adapter != bare  # the adapter is really applied


def test_e2e__registered_token_limit__up_to_it_runs_past_it_fails_and_refunds(network, contracts):
    requester = signer_for(contracts, "requester")
    escrow = contracts.escrow.functions
    before = escrow.balance_of(requester.address).call()
    model_id = network["model"].model_id
    at_limit = post_task(
        contracts, requester, network["store"], model_id, encode_input(prompt="a", max_new_tokens=LIMIT)
    )
    past = post_task(
        contracts, requester, network["store"], model_id, encode_input(prompt="a", max_new_tokens=LIMIT + 1)
    )

    views = wait_until_final(
        contracts,
        [at_limit.task_id, past.task_id],
        SETTLE_TIMEOUT_S,
        (network["oracle"], network["agent"]),
        final=("settled", "refunded"),
    )

    settled, refused = views[at_limit.task_id], views[past.task_id]
    assert settled.state == "settled"
    output = json.loads(network["store"].get_bytes(settled.result_cid))
    assert output["finish_reason"] == "eos" or len(output["token_ids"]) == LIMIT  # more than the default 64 allowed
    assert refused.state == "refunded" and f"between 1 and {LIMIT}" in refused.failure
    assert escrow.balance_of(requester.address).call() - before == past.fee + settled.settlement["refund"]


def test_e2e__bad_inputs__each_task_fails_with_its_reason_is_refunded_and_the_agent_keeps_serving(network, contracts):
    requester = signer_for(contracts, "requester")
    escrow = contracts.escrow.functions
    llama, embedder, store = network["model"].model_id, network["embedder"], network["store"]
    cases = {  # model, input, a fragment of the recorded reason
        "prompt over the context": (
            llama,
            encode_input(prompt="moon " * 200),
            "exceeds the model's context of 128 tokens",
        ),
        "embedding job to a generation model": (llama, encode_input(texts=["a star"]), "unknown field"),
        "generation job to an embedding model": (embedder, encode_input(prompt="a star"), "unknown field"),
        "prompt not a string": (llama, b'{"prompt":5}', '"prompt" must be a string, got a number'),
    }
    before = escrow.balance_of(requester.address).call()
    bad = {name: post_task(contracts, requester, store, model, data) for name, (model, data, _) in cases.items()}
    views = wait_until_final(
        contracts,
        [t.task_id for t in bad.values()],
        SETTLE_TIMEOUT_S,
        (network["oracle"], network["agent"]),
        final=("settled", "refunded"),
    )
    for name, task in bad.items():
        view = views[task.task_id]
        assert view.state == "refunded" and cases[name][2] in view.failure, (name, view.state, view.failure)
    assert escrow.balance_of(requester.address).call() - before == sum(t.fee for t in bad.values())  # every wei back

    after = [
        post_task(contracts, requester, store, llama, encode_input(prompt="the moon", max_new_tokens=4)),
        post_task(contracts, requester, store, embedder, encode_input(texts=["a star"])),
    ]
    served = wait_until_final(
        contracts, [t.task_id for t in after], SETTLE_TIMEOUT_S, (network["oracle"], network["agent"])
    )
    assert [served[t.task_id].state for t in after] == ["settled", "settled"]  # the same agent, still serving
