"""A job that breaks a limit of the sandbox, end to end on Anvil: SmolLM2 served by three
sandboxed agents with a short job time limit. The long job is killed with its worker each time it
runs; the oracle reassigns it to the next agent (an agent it failed on never gets it again) until
three agents have failed, then fails the task with the reason and refunds every wei. The short
job posted with it settles, and the agents go on serving."""

from __future__ import annotations

import pytest

from tests.helpers import registered_model, signer_for
from tributa.ml.gguf_models import ensure_smollm2
from tributa.processes import start_agent, start_oracle
from tributa.store import open_store
from tributa.tasks import encode_input, post_task, wait_until_final

SETTLE_TIMEOUT_S = 420
JOB_TIMEOUT_S = 2.0
# About 1,500 prompt tokens: their prefill alone takes several seconds on one CPU thread, so the
# job breaks the 2 s limit on any machine; a 2-token answer to a short prompt takes a fraction.
LONG_PROMPT = "the moon and the stars " * 300
SHORT_PROMPT = "1, 2, 3,"
AGENTS = ("dev:agent", "dev:agent2", "dev:17")


@pytest.fixture(scope="module")
def network(contracts, deployed, tmp_path_factory):
    root = tmp_path_factory.mktemp("job-limits")
    settings = deployed.with_overrides(data_dir=root / "data")
    store = open_store(settings.store_dir)
    smollm = ensure_smollm2(progress=lambda _: None)  # converted by `make setup`: a cache hit
    model_id = registered_model(contracts, signer_for(contracts, "publisher"), store, "e2e-smollm2", smollm)
    oracle = start_oracle(settings, root / "oracle.log", ["--no-attribution", "--text-logs"])
    agents = [
        start_agent(
            settings.with_overrides(data_dir=root / f"agent-{account[4:]}"),
            root / f"agent-{account[4:]}.log",
            [
                "--text-logs",
                "--account",
                account,
                "--no-committee",
                "--threads",
                "1",  # sandboxed: the default
                "--job-timeout-s",
                str(JOB_TIMEOUT_S),
                "--model-dir",
                str(smollm),
            ],
        )
        for account in AGENTS
    ]
    yield {
        "store": store,
        "model_id": model_id,
        "procs": (oracle, *agents),
        "logs": [root / f"agent-{a[4:]}.log" for a in AGENTS],
    }
    for agent in agents:
        agent.stop()
    oracle.stop()


def test_e2e__job_past_its_time_limit__reassigned_then_failed_with_the_reason_refunded_and_the_agents_keep_serving(
    network, contracts
):
    requester = signer_for(contracts, "requester")
    escrow = contracts.escrow.functions
    store, model_id, procs = network["store"], network["model_id"], network["procs"]
    before = escrow.balance_of(requester.address).call()
    long = post_task(contracts, requester, store, model_id, encode_input(prompt=LONG_PROMPT, max_new_tokens=8))
    short = post_task(contracts, requester, store, model_id, encode_input(prompt=SHORT_PROMPT, max_new_tokens=2))

    views = wait_until_final(
        contracts, [long.task_id, short.task_id], SETTLE_TIMEOUT_S, procs, final=("settled", "refunded")
    )

    assert views[short.task_id].state == "settled"
    failed = views[long.task_id]
    assert failed.state == "refunded", (failed.state, failed.failure)
    assert (
        "3 agents could not run it" in failed.failure and f"past its {JOB_TIMEOUT_S:g}s time limit" in failed.failure
    ), failed.failure
    assert escrow.balance_of(requester.address).call() - before == long.fee + views[short.task_id].settlement["refund"]
    for log in (path.read_text() for path in network["logs"]):  # each agent ran it, twice, and its worker was killed
        assert f"(task {long.task_id}) failed: the job ran past its {JOB_TIMEOUT_S:g}s time limit (tries: 2)" in log, (
            log[-3000:]
        )

    again = [
        post_task(contracts, requester, store, model_id, encode_input(prompt=SHORT_PROMPT, max_new_tokens=2))
        for _ in AGENTS
    ]
    served = wait_until_final(contracts, [t.task_id for t in again], SETTLE_TIMEOUT_S, procs)
    assert [served[t.task_id].state for t in again] == ["settled"] * len(AGENTS)  # still serving
