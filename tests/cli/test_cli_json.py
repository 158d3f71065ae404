"""`--json` on the read commands, `task wait` / `task submit --wait` and the fee split shown before
posting (issue 15). Real Anvil; a task is settled in-process by the oracle's own parts."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tests.helpers import OracleParts, advance_time, ensure_agent, post_raw_task, register_test_model, signer_for
from tributa.cli import cli
from tributa.cli.format import eth
from tributa.store import cid as cidlib
from tributa.tasks import read_task, settled_weights

EXIT_FAILED, EXIT_TIMEOUT = 3, 4  # README, "Using it"


def run_cli(settings, *args):
    """stdout and stderr apart: --json promises one document on stdout."""
    base = [
        "--rpc-url",
        settings.rpc_url,
        "--data-dir",
        str(settings.data_dir),
        "--deployments",
        str(settings.deployments_dir),
    ]
    return CliRunner(mix_stderr=False).invoke(cli, [*base, *args], catch_exceptions=True)


def run_json(settings, *args, exit_code=0):
    result = run_cli(settings, *args, "--json")
    assert result.exit_code == exit_code, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def assert_one_line_error(result, *fragments, exit_code=1):
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and all(f in lines[-1] for f in fragments), result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def settled(fresh_settings, contracts, signers, chain_snapshot):
    """A dataset, a model trained on it, and a task on that model settled by the oracle's parts
    over the CLI's own data dir (so its store holds the result and the attribution record)."""
    from oracle.attribution.service import OracleAttributor
    from oracle.db import TaskState
    from oracle.jobs import Submission
    from tributa.chain.eip712 import sign_result
    from tributa.chain.events import first_event
    from tributa.datasets import commit_and_register

    creator, publisher, agent = signers["creator"], signers["publisher"], signers["agent"]
    *_, dataset_id = commit_and_register(
        contracts, creator, os.urandom(32), b"\x00" * 32, [creator.address], [10_000], "CC0"
    )
    call = contracts.registry.functions.register_model(
        "json-model", os.urandom(32), [], [dataset_id], [10_000], 10**15, publisher.address
    )
    model = first_event(contracts.registry, "ModelRegistered", publisher.transact(call).receipt)["model_id"]
    ensure_agent(contracts, agent, [model])

    # An embedding output: the real attributor pays the model's training datasets (no engine needed).
    oracle = OracleParts(contracts, signers, fresh_settings.data_dir)
    oracle.settler.attributor = OracleAttributor(contracts, oracle.store, indexes=None)
    input_cid = str(oracle.store.put_bytes(b'{"texts":["hello"]}'))
    task_id = post_raw_task(contracts, signers["requester"], model, cidlib.cid_to_digest(input_cid))
    oracle.ingestor.poll_once()
    offer = oracle.book.lease(agent.address, {model}, oracle.chain_time())
    output = b'{"kind":"embed","vectors":[[0.5]]}'
    digest = cidlib.cid_to_digest(str(oracle.store.cid_of(output)))
    signature = sign_result(agent.account, contracts.chain_id, contracts.escrow.address, task_id, digest)
    oracle.book.submit(agent.address, offer.job_id, Submission(output, digest, signature))
    assert oracle.settler.settle_ready() == 1 and oracle.state(task_id) == TaskState.SETTLED
    return {"task_id": task_id, "model_id": model, "dataset_id": dataset_id, "output": json.loads(output)}


def test_task_show_json__settled__result_is_the_output_object_with_split_attribution_and_deadline(
    fresh_settings, contracts, settled, signers
):
    escrow = contracts.escrow.functions
    doc = run_json(fresh_settings, "task", "show", str(settled["task_id"]))
    task = escrow.task(settled["task_id"]).call()
    fee, model_fee, deadline = task.fee, task.model_fee, task.deadline

    assert doc["task_id"] == settled["task_id"] and doc["state"] == "settled" and doc["model_id"] == settled["model_id"]
    assert doc["result"] == settled["output"] and doc["result_error"] is None  # an object, not a JSON string
    assert doc["requester"] == signers["requester"].address and doc["deadline"] == deadline
    assert doc["fee_wei"] == str(fee) and doc["model_fee_wei"] == str(model_fee) and doc["refund_tx"] is None
    s = doc["settlement"]
    assert s["agents"] == [signers["agent"].address] and s["tx"].startswith("0x")
    assert s["data_share_wei"] == str(fee * escrow.data_share_bps().call() // 10_000)
    assert s["protocol_fee_wei"] == str(fee * escrow.protocol_fee_bps().call() // 10_000)
    assert (
        sum(int(s[k]) for k in ("agent_fee_wei", "model_fee_wei", "data_share_wei", "protocol_fee_wei", "refund_wei"))
        == fee
    )
    attribution = doc["attribution"]
    assert attribution["weights"] == [{"dataset_id": settled["dataset_id"], "weight_bps": 10_000}]
    assert attribution["source"] == "model_training_datasets"  # an embedding: the model's training data
    assert attribution["cid"] and attribution["record_error"] is None
    # The weights are the ones settled on-chain (the settle transaction's calldata), not only the record's.
    assert settled_weights(contracts, read_task(contracts, settled["task_id"])) == [(settled["dataset_id"], 10_000)]

    text = run_cli(fresh_settings, "task", "show", str(settled["task_id"]))  # text stays text
    assert text.exit_code == 0 and text.stdout.startswith(f"task {settled['task_id']}: settled")
    assert f"dataset {settled['dataset_id']}: 100.00% of the data share" in text.stdout


def test_task_wait__settled__exit_0_and_the_task_as_show_prints_it(fresh_settings, settled):
    task_id = str(settled["task_id"])
    waited = run_cli(fresh_settings, "task", "wait", task_id, "--timeout-s", "5", "--json")
    assert waited.exit_code == 0, waited.stderr
    assert json.loads(waited.stdout) == json.loads(run_cli(fresh_settings, "task", "show", task_id, "--json").stdout)


def test_task_list_json__newest_first__mine_or_all_and_limit(fresh_settings, contracts, settled, signers):
    other = post_raw_task(contracts, signers["buyer"], settled["model_id"], os.urandom(32))
    mine = run_json(fresh_settings, "task", "list")
    assert mine["requester"] == signers["requester"].address
    ids = [t["task_id"] for t in mine["tasks"]]
    assert settled["task_id"] in ids and other not in ids and ids == sorted(ids, reverse=True)
    assert {t["requester"] for t in mine["tasks"]} == {signers["requester"].address}
    everyone = run_json(fresh_settings, "task", "list", "--all", "--limit", "2")
    assert [t["task_id"] for t in everyone["tasks"]] == [other, other - 1] and everyone["requester"] is None
    assert everyone["tasks"][0]["state"] == "open" and everyone["tasks"][0]["fee_wei"] == str(
        contracts.escrow.functions.task(other).call().fee
    )
    theirs = run_json(fresh_settings, "task", "list", "--requester", signers["buyer"].address)
    assert [t["task_id"] for t in theirs["tasks"]] == [other]


def test_account_history__the_settled_tasks_requester_and_agent__each_sees_their_side(
    fresh_settings, contracts, settled, signers
):
    task_id = settled["task_id"]
    settlement = run_json(fresh_settings, "task", "show", str(task_id))["settlement"]
    fee = contracts.escrow.functions.task(task_id).call().fee

    mine = run_json(fresh_settings, "account", "history", signers["requester"].address)["entries"]
    theirs = run_json(fresh_settings, "account", "history", signers["agent"].address)["entries"]

    assert {"kind": "posted", "task_id": task_id, "amount_wei": str(fee)}.items() <= next(
        e for e in mine if e["kind"] == "posted" and e["task_id"] == task_id
    ).items()
    paid = [e for e in theirs if e["kind"] == "paid_as_agent" and e["task_id"] == task_id]
    assert len(paid) == 1 and paid[0]["amount_wei"] == settlement["agent_fee_wei"]
    assert not any(e["kind"] == "posted" for e in theirs)
    text = run_cli(fresh_settings, "account", "history", signers["agent"].address)
    assert text.exit_code == 0 and "paid_as_agent" in text.stdout


def test_dataset_model_royalties_agent_oracle_json__the_settled_tasks_parties(
    fresh_settings, contracts, settled, signers
):
    creator, agent = signers["creator"], signers["agent"]
    dataset_id, model_id = settled["dataset_id"], settled["model_id"]
    data_share = int(run_json(fresh_settings, "task", "show", str(settled["task_id"]))["settlement"]["data_share_wei"])
    assert data_share > 0

    datasets = run_json(fresh_settings, "dataset", "list")["datasets"]
    assert datasets[-1]["dataset_id"] == dataset_id and datasets[-1]["owner"] == creator.address
    shown = run_json(fresh_settings, "dataset", "show", str(dataset_id))
    assert shown["contributors"] == [{"address": creator.address, "shares_bps": 10_000}]
    assert shown["revenue_wei"] == str(data_share) and shown["version"] == 1 and shown["active"] is True

    models = run_json(fresh_settings, "model", "list")["models"]
    model = run_json(fresh_settings, "model", "show", str(model_id))
    assert models[model_id - 1] == {k: v for k, v in model.items() if not k.startswith("kind")}
    assert (
        model["kind"] == "unknown" and "not in this machine's store" in model["kind_unknown_because"]
    )  # random weights digest
    assert model["name"] == "json-model" and model["fee_per_task_wei"] == str(10**15)
    assert model["publisher"] == signers["publisher"].address and model["datasets"] == [
        {"dataset_id": dataset_id, "weight_bps": 10_000}
    ]
    assert model["serving"]["max_new_tokens"] == 64 and model["scheduled_fee_wei"] is None
    text = run_cli(fresh_settings, "model", "show", str(model_id))
    assert text.exit_code == 0 and "json-model" in text.stdout and "up to 64 new tokens" in text.stdout

    royalties = run_json(fresh_settings, "royalties", "show", creator.address)
    assert royalties["address"] == creator.address and royalties["total_claimable_wei"] == str(data_share)
    assert {
        "dataset_id": dataset_id,
        "version": 1,
        "shares_bps": 10_000,
        "claimable_wei": str(data_share),
        "claimed_wei": "0",
    } in royalties["shares"]

    status = run_json(fresh_settings, "agent", "status", agent.address)
    assert status["registered"] is True and model_id in status["models"] and status["device"] == "cpu"
    assert status["credited_wei"] == str(contracts.escrow.functions.balance_of(agent.address).call())
    assert status["slashes"] == 0 and status["slashed_wei"] == "0"
    assert (
        status["oracle"] is None and "online state and agreement unknown" in status["oracle_error"]
    )  # no oracle runs here
    assert run_json(fresh_settings, "agent", "status", signers["treasury"].address) == {
        "address": signers["treasury"].address,
        "registered": False,
    }

    oracle = run_json(fresh_settings, "oracle", "status")
    assert oracle["tasks"]["by_state"].get("settled", 0) >= 1 and oracle["ingested_block"] > 0
    assert [a["address"] for a in oracle["agents"]] == [agent.address]


def test_imo_status_json__sale_fields_and_holders(fresh_settings, contracts, chain_snapshot, signers):
    from tributa import imo as imo_lib

    publisher = signers["publisher"]
    model = register_test_model(contracts, publisher)
    imo_id, token, _ = imo_lib.launch(
        contracts, publisher, model, "Tiny", "TNY", 1_000_000, 10**14, 2 * 10**18, 60 * 10**18, 3600, 2000, 86_400
    )
    imo_lib.buy(contracts, signers["buyer"], imo_id, 10**18)
    doc = run_json(fresh_settings, "imo", "status", str(imo_id))
    assert doc["imo_id"] == imo_id and doc["model_id"] == model and doc["token"] == token and doc["symbol"] == "TNY"
    assert doc["state"] == "active" and doc["sale_ended"] is False and doc["raised_wei"] == str(10**18)
    assert doc["sold_units"] == str(10_000 * 10**18) and doc["tokens_for_sale_units"] == str(800_000 * 10**18)
    assert doc["publisher"] == publisher.address and doc["price_wei"] == str(10**14)
    assert all(isinstance(h["balance_units"], str) for h in doc["holders"])


def test_task_wait__a_task_nobody_serves__times_out_with_exit_4_and_progress_on_stderr(
    fresh_settings, contracts, chain_snapshot, signers
):
    model = register_test_model(contracts, signers["publisher"])
    task_id = post_raw_task(contracts, signers["requester"], model, os.urandom(32))
    result = run_cli(fresh_settings, "task", "wait", str(task_id), "--timeout-s", "1", "--json")
    assert_one_line_error(result, f"task {task_id} is still open after 1s", exit_code=EXIT_TIMEOUT)
    # The first progress line's elapsed seconds depend on how fast the first read was; only its shape is fixed.
    assert re.search(rf"^task {task_id}: open after [01]s$", result.stderr, re.MULTILINE), result.stderr
    quiet = run_cli(fresh_settings, "task", "wait", str(task_id), "--timeout-s", "0", "--quiet")
    assert quiet.exit_code == EXIT_TIMEOUT and quiet.stderr.strip().count("\n") == 0, quiet.stderr


def test_task_wait__refunded__exit_3_with_the_refund_tx(fresh_settings, contracts, chain_snapshot, signers):
    model = register_test_model(contracts, signers["publisher"])
    task_id = post_raw_task(contracts, signers["requester"], model, os.urandom(32), deadline_s=10)
    advance_time(contracts.w3, 11)
    assert run_cli(fresh_settings, "task", "refund", str(task_id)).exit_code == 0
    result = run_cli(fresh_settings, "task", "wait", str(task_id), "--timeout-s", "5", "--json")
    assert result.exit_code == EXIT_FAILED, result.stderr
    doc = json.loads(result.stdout)
    assert (
        doc["state"] == "refunded"
        and doc["refund_tx"].startswith("0x")
        and doc["result"] is None
        and doc["settlement"] is None
    )


@pytest.mark.parametrize(
    "command", [("task", "show"), ("task", "wait"), ("dataset", "show"), ("model", "show"), ("imo", "status")]
)
def test_json__unknown_id__still_one_line_error_and_exit_1(fresh_settings, contracts, command):
    assert_one_line_error(run_cli(fresh_settings, *command, "999999", "--json"), "999999")


def test_task_submit_json__carries_the_split_the_escrow_applies__no_prompt_without_a_terminal(
    fresh_settings, contracts, chain_snapshot
):
    escrow = contracts.escrow.functions
    model = register_test_model(contracts, signer_for(contracts, "publisher"), fee_per_task=10**15)
    ensure_agent(contracts, signer_for(contracts, "agent"), [model])  # else a warning that nobody serves it
    result = run_cli(
        fresh_settings,
        "task",
        "submit",
        "--model",
        str(model),
        "--prompt",
        "hi",
        "--fee",
        "0.01",
        "--json",
        "--no-upload",
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    fee, protocol_bps, data_bps = 10**16, escrow.protocol_fee_bps().call(), escrow.data_share_bps().call()
    protocol, data = fee * protocol_bps // 10_000, fee * data_bps // 10_000
    assert doc["split"] == {
        "fee_wei": str(fee),
        "protocol_fee_wei": str(protocol),
        "protocol_fee_bps": protocol_bps,
        "data_share_wei": str(data),
        "data_share_bps": data_bps,
        "model_fee_wei": str(10**15),
        "agents_max_wei": str(fee - protocol - data - 10**15),
    }
    assert escrow.task(doc["task_id"]).call().fee == fee and doc["fee_wei"] == str(fee)
    assert result.stderr == ""  # unattended: no split text, no prompt


def test_task_submit__wait_on_a_task_nobody_serves__posts_then_times_out_with_exit_4(
    fresh_settings, contracts, chain_snapshot
):
    model = register_test_model(contracts, signer_for(contracts, "publisher"))
    before = contracts.escrow.functions.task_count().call()
    result = run_cli(
        fresh_settings,
        "task",
        "submit",
        "--model",
        str(model),
        "--prompt",
        "hi",
        "--wait",
        "--timeout-s",
        "1",
        "--json",
    )
    assert_one_line_error(result, f"task {before + 1} is still open after 1s", exit_code=EXIT_TIMEOUT)
    assert f"task {before + 1} posted" in result.stderr


def _submit_on_a_terminal(settings, model: int, answer: bytes, *extra: str) -> subprocess.CompletedProcess:
    """A real process whose stdin is a terminal (the prompt is the point), `answer` typed ahead."""
    master, slave = pty.openpty()
    try:
        os.write(master, answer)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "tributa.cli.__main__",
                "--rpc-url",
                settings.rpc_url,
                "--data-dir",
                str(settings.data_dir),
                "--deployments",
                str(settings.deployments_dir),
                "task",
                "submit",
                "--model",
                str(model),
                "--prompt",
                "hi",
                *extra,
            ],
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(slave)
        os.close(master)


def test_task_submit__on_a_terminal__shows_the_split_and_asks__no_sends_nothing__yes_skips_the_prompt(
    fresh_settings, contracts, chain_snapshot
):
    model = register_test_model(contracts, signer_for(contracts, "publisher"), fee_per_task=10**15)
    before = contracts.escrow.functions.task_count().call()

    refused = _submit_on_a_terminal(fresh_settings, model, b"n\n", "--fee", "0.01")
    assert (
        refused.returncode == 1
        and "post this task and escrow 0.01 ETH?" in refused.stderr
        and "Aborted" in refused.stderr
    ), refused.stderr
    bps = contracts.escrow.functions.protocol_fee_bps().call()
    assert f"protocol fee  {eth(10**16 * bps // 10_000)} ({bps / 100:.2f}%)" in refused.stderr, refused.stderr
    assert "model fee     0.001 ETH (you accept up to 0.001 ETH)" in refused.stderr
    assert refused.stdout.strip() == ""  # click's input() leaves one space
    assert contracts.escrow.functions.task_count().call() == before

    posted = _submit_on_a_terminal(fresh_settings, model, b"", "--fee", "0.01", "--yes")
    assert posted.returncode == 0, posted.stderr
    assert "protocol fee" in posted.stderr and "?" not in posted.stderr
    assert posted.stdout.startswith(f"task {before + 1} posted")
    assert contracts.escrow.functions.task_count().call() == before + 1
