"""The whole protocol on a real Anvil node: CLI-run oracle and agent, real weights, real settlement."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import registered_model, signer_for
from tributa.processes import start_agent, start_oracle
from tributa.store import open_store
from tributa.tasks import encode_input, post_task, wait_until_final

SETTLE_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def network(contracts, deployed, demo_models, tmp_path_factory):
    """Models registered, an oracle and one agent running as `tributa … run` processes."""
    from tributa.ml.embeddings import model_dir as minilm_dir

    root = tmp_path_factory.mktemp("e2e")
    settings = deployed.with_overrides(data_dir=root / "data")
    store = open_store(settings.store_dir)
    publisher = signer_for(contracts, "publisher")
    adapter = sorted(demo_models.adapters)[0]
    gen = registered_model(
        contracts, publisher, store, "e2e-gen", demo_models.base_dir, [demo_models.adapters[adapter]]
    )
    emb = registered_model(contracts, publisher, store, "e2e-embed", minilm_dir())
    dirs = [demo_models.base_dir, demo_models.adapters[adapter], minilm_dir()]
    oracle = start_oracle(settings, root / "oracle.log", ["--no-attribution", "--text-logs"])
    agent = start_agent(
        settings, root / "agent.log", ["--text-logs", *[a for d in dirs for a in ("--model-dir", str(d))]]
    )
    yield {
        "settings": settings,
        "store": store,
        "gen": gen,
        "emb": emb,
        "oracle": oracle,
        "agent": agent,
        "adapter": adapter,
    }
    agent.stop()
    oracle.stop()


def test_e2e__generation_and_embedding_tasks__settle_with_verifiable_results(network, contracts, demo_models):
    requester = signer_for(contracts, "requester")
    agent_address = signer_for(contracts, "agent").address
    escrow = contracts.escrow.functions
    agent_before = escrow.balance_of(agent_address).call()
    store = network["store"]
    gen_input = encode_input(prompt="The stars", max_new_tokens=16)
    gen = post_task(contracts, requester, store, network["gen"], gen_input)
    emb = post_task(contracts, requester, store, network["emb"], encode_input(texts=["the moon", "bread"]))

    views = wait_until_final(
        contracts, [gen.task_id, emb.task_id], SETTLE_TIMEOUT_S, (network["oracle"], network["agent"])
    )

    assert {v.state for v in views.values()} == {"settled"}
    paid = sum(v.settlement["agent_fee"] for v in views.values())
    assert paid > 0 and escrow.balance_of(agent_address).call() - agent_before == paid
    for v in views.values():
        s = v.settlement
        assert s["agent_fee"] + s["model_fee"] + s["data_share"] + s["protocol_fee"] + s["refund"] == v.fee
    # Anyone can re-check the generation: greedy decoding on the registered weights gives the same bytes.
    from tributa.catalog import describe_folder
    from tributa.runtime.executor import Executor

    base = describe_folder(store, demo_models.base_dir)
    adapter = describe_folder(store, demo_models.adapters[network["adapter"]])
    recomputed = Executor().run(base, [adapter], gen_input)
    assert store.get_bytes(views[gen.task_id].result_cid) == recomputed
    vectors = json.loads(store.get_bytes(views[emb.task_id].result_cid))["vectors"]
    assert len(vectors) == 2 and len(vectors[0]) == 384


def test_e2e__malformed_input__fails_with_reason_and_refunds_in_full(network, contracts):
    requester = signer_for(contracts, "requester")
    escrow = contracts.escrow.functions
    before = escrow.balance_of(requester.address).call()
    bad = post_task(contracts, requester, network["store"], network["gen"], b'{"prompt": 42}')

    # The agent reports the bad input, the oracle fails the task on-chain with the reason and refunds it.
    watch = (network["oracle"], network["agent"])
    views = wait_until_final(contracts, [bad.task_id], SETTLE_TIMEOUT_S, watch, final=("refunded",))

    view = views[bad.task_id]
    assert view.state == "refunded"
    assert view.failure and "bad input" in view.failure
    assert escrow.balance_of(requester.address).call() - before == bad.fee


def test_e2e__oracle_metrics__count_settled_tasks_and_latency(network, contracts):
    import httpx

    requester = signer_for(contracts, "requester")
    posted = post_task(contracts, requester, network["store"], network["emb"], encode_input(texts=["metrics"]))
    wait_until_final(contracts, [posted.task_id], SETTLE_TIMEOUT_S, (network["oracle"], network["agent"]))

    def scrape() -> dict[str, float]:
        text = httpx.get(network["settings"].oracle_url + "/metrics", timeout=5).text
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and line[0] != "#"
        }

    # The worker records the settlement just after its receipt, and relays it to the API process.
    deadline = time.monotonic() + 10
    while (values := scrape()).get("tributa_oracle_task_latency_seconds_count", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert values.get('tributa_oracle_tasks{state="settled"}', 0) >= 1
    assert values["tributa_oracle_task_latency_seconds_count"] >= 1
    assert values.get('tributa_oracle_gas_spent_total{purpose="settle"}', 0) > 0


def test_e2e__private_task__store_holds_only_ciphertext_and_requester_opens_checked_result(network, contracts):
    import os

    from tributa.tasks import open_private_result, post_private_task

    requester = signer_for(contracts, "requester")
    settings, store = network["settings"], network["store"]
    marker = f"private-marker-{os.urandom(6).hex()}"
    posted = post_private_task(
        contracts, requester, store, network["emb"], encode_input(texts=[marker]), settings.oracle_url
    )

    view = wait_until_final(contracts, [posted.task_id], SETTLE_TIMEOUT_S, (network["oracle"], network["agent"]))[
        posted.task_id
    ]

    assert view.state == "settled"
    output = open_private_result(contracts, requester, store, view, settings.oracle_url)  # checks the on-chain digest
    assert len(json.loads(output)["vectors"]) == 1
    assert not store.has(view.result_cid)  # the plaintext result was never stored
    everything = b"".join(p.read_bytes() for p in (settings.store_dir / "blocks").rglob("*") if p.is_file())
    assert marker.encode() not in everything and output not in everything


def test_e2e__someone_else_posts_a_private_input__oracle_refuses_to_open_it(network, contracts):
    from tributa.tasks import post_private_task, post_task

    settings, store = network["settings"], network["store"]
    victim, thief = signer_for(contracts, "requester"), signer_for(contracts, "buyer2")
    sealed = post_private_task(
        contracts, victim, store, network["emb"], encode_input(texts=["mine"]), settings.oracle_url
    )
    envelope = store.get_bytes(sealed.input_cid)

    stolen = post_task(contracts, thief, store, network["emb"], envelope)
    views = wait_until_final(
        contracts,
        [sealed.task_id, stolen.task_id],
        SETTLE_TIMEOUT_S,
        (network["oracle"],),
        final=("settled", "refunded"),
    )

    assert views[sealed.task_id].state == "settled"
    assert views[stolen.task_id].state == "refunded"
    assert "private input cannot be opened" in views[stolen.task_id].failure
