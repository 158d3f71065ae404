"""`task list --mine/--state/--model`, round default fees and `model convert` progress / --quiet
(issue 15). Real Anvil, no mocks."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from click.testing import CliRunner

from tests.helpers import advance_time, ensure_agent, post_raw_task, register_test_model, signer_for
from tributa.cli import cli
from tributa.cli.format import PROGRESS_MIN_BYTES, eth
from tributa.tasks import default_fee, min_fee, round_up


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


def run_json(settings, *args):
    import json

    result = run_cli(settings, *args, "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def ids(doc) -> list[int]:
    return [t["task_id"] for t in doc["tasks"]]


def test_task_list__mine_state_and_model_filters__applied_before_the_limit(
    fresh_settings, contracts, chain_snapshot, signers
):
    requester, buyer = signers["requester"], signers["buyer"]
    model_a = register_test_model(contracts, signers["publisher"], name="list-a")
    model_b = register_test_model(contracts, signers["publisher"], name="list-b")
    refunded = post_raw_task(contracts, requester, model_a, os.urandom(32), deadline_s=10)
    advance_time(contracts.w3, 11)
    assert run_cli(fresh_settings, "task", "refund", str(refunded)).exit_code == 0
    open_a = post_raw_task(contracts, requester, model_a, os.urandom(32))
    open_b = post_raw_task(contracts, requester, model_b, os.urandom(32))
    theirs = post_raw_task(contracts, buyer, model_a, os.urandom(32))

    mine = run_json(fresh_settings, "task", "list", "--mine")
    assert mine == run_json(fresh_settings, "task", "list")  # --mine is the default, said explicitly
    assert ids(mine)[:3] == [open_b, open_a, refunded] and theirs not in ids(mine)

    on_a = run_json(fresh_settings, "task", "list", "--mine", "--model", str(model_a))
    assert ids(on_a) == [open_a, refunded] and on_a["model_id"] == model_a
    assert {t["model_id"] for t in on_a["tasks"]} == {model_a}
    # the state filter applies before --limit: the newest refunded task, though two newer are open
    gone = run_json(fresh_settings, "task", "list", "--state", "refunded", "--limit", "1")
    assert ids(gone) == [refunded] and gone["state"] == "refunded" and gone["tasks"][0]["state"] == "refunded"
    everyone_open_a = run_json(fresh_settings, "task", "list", "--all", "--state", "open", "--model", str(model_a))
    assert ids(everyone_open_a) == [theirs, open_a] and everyone_open_a["requester"] is None

    text = run_cli(fresh_settings, "task", "list", "--state", "settled", "--model", str(model_b))
    assert text.exit_code == 0 and text.stdout.startswith(
        f"no tasks settled on model {model_b} posted by {requester.address}"
    )
    text = run_cli(fresh_settings, "task", "list", "--model", str(model_b))
    assert text.exit_code == 0 and text.stdout.split()[:2] == [str(open_b), "open"]


def test_task_list__bad_state__usage_error_listing_the_states(fresh_settings, contracts):
    result = run_cli(fresh_settings, "task", "list", "--state", "pending")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "'pending' is not one of 'open', 'settled', 'failed', 'refunded'" in result.stderr, result.stderr


def test_task_list__mine_with_all_or_requester__one_line_error(fresh_settings, contracts, signers):
    for extra in (["--all"], ["--requester", signers["buyer"].address]):
        result = run_cli(fresh_settings, "task", "list", "--mine", *extra)
        assert result.exit_code == 1 and result.stdout == ""
        assert result.stderr.strip().splitlines() == ["Error: give one of --mine, --all or --requester"]


def test_round_up__two_significant_digits_never_below():
    assert round_up(2_666_666_666_666_672) == 2_700_000_000_000_000
    assert round_up(2_700_000_000_000_000) == 2_700_000_000_000_000
    assert [round_up(n) for n in (0, 4, 99, 101, 10**18 + 1)] == [0, 4, 99, 110, 11 * 10**17]


def test_task_submit__default_fee_for_a_0_001_eth_model__a_round_0_0027_eth_and_posted(
    fresh_settings, contracts, chain_snapshot
):
    model = register_test_model(contracts, signer_for(contracts, "publisher"), fee_per_task=10**15)
    ensure_agent(contracts, signer_for(contracts, "agent"), [model])
    assert default_fee(contracts, model) == Decimal("0.0027") * 10**18 >= 2 * min_fee(contracts, model)
    doc = run_json(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--no-upload")
    assert doc["fee_wei"] == doc["split"]["fee_wei"] == str(27 * 10**14)
    assert contracts.escrow.functions.task(doc["task_id"]).call().fee == 27 * 10**14  # the escrow took it
    text = run_cli(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--no-upload")
    assert text.exit_code == 0, text.stderr
    assert "fee 0.0027 ETH, input" in text.stdout and eth(27 * 10**14) == "0.0027 ETH"


@pytest.fixture
def big_bogus_gguf(tmp_path):
    """Large enough for a progress bar, and not a GGUF: digested (with the bar), then refused fast."""
    path = tmp_path / "big.gguf"
    path.write_bytes(b"\0" * (PROGRESS_MIN_BYTES + (1 << 20)))
    return path


def test_model_convert__progress_on_stderr_while_digesting__quiet_leaves_only_the_error(big_bogus_gguf, tmp_path):
    cache = str(tmp_path / "cache")
    loud = CliRunner(mix_stderr=False).invoke(cli, ["model", "convert", str(big_bogus_gguf), "--cache-dir", cache])
    assert loud.exit_code == 1 and loud.stdout == ""
    assert "digesting big.gguf" in loud.stderr and "converting big.gguf" in loud.stderr, loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("Error: ") and "not a GGUF model" in loud.stderr

    quiet = CliRunner(mix_stderr=False).invoke(
        cli, ["model", "convert", str(big_bogus_gguf), "--cache-dir", cache, "--quiet"]
    )
    assert quiet.exit_code == 1 and quiet.stdout == ""
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "not a GGUF model" in lines[0], quiet.stderr


def test_model_convert__smollm2__prints_the_folder_with_or_without_quiet(tmp_path):
    from tributa.ml.gguf_models import ensure_smollm2, smollm2_gguf

    folder = ensure_smollm2(progress=lambda message: None)  # the shared cache: converted once per machine
    loud = CliRunner(mix_stderr=False).invoke(cli, ["model", "convert", "--smollm2"])
    assert loud.exit_code == 0, loud.stderr
    assert loud.stdout.strip() == str(folder) and f"digesting {smollm2_gguf().name}" in loud.stderr
    quiet = CliRunner(mix_stderr=False).invoke(cli, ["model", "convert", "--smollm2", "-q"])
    assert quiet.exit_code == 0 and quiet.stdout.strip() == str(folder) and quiet.stderr == ""
