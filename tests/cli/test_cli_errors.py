"""Bad input to the CLI: one line on stderr, a non-zero exit, no traceback, nothing sent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from eth_account import Account

from tests.helpers import ensure_agent, register_test_model, signer_for
from tributa.cli import cli


def run_cli(settings, *args, env=None):
    base = [
        "--rpc-url",
        settings.rpc_url,
        "--data-dir",
        str(settings.data_dir),
        "--deployments",
        str(settings.deployments_dir),
    ]
    return CliRunner().invoke(cli, [*base, *args], env=env, catch_exceptions=True)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException, not a crash
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli__unreachable_rpc__one_line_error_and_exit_1_without_traceback(fresh_settings):
    """A real process: proves the installed entry point prints no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "tributa.cli.__main__", "--rpc-url", "http://127.0.0.1:9", "task", "show", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TRIBUTA_DATA_DIR": str(fresh_settings.data_dir)},
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "cannot reach an Ethereum node at http://127.0.0.1:9" in proc.stderr


def test_oracle_run__node_never_answers__waits_node_wait_s_then_one_line_error(fresh_settings):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tributa.cli.__main__",
            "--rpc-url",
            "http://127.0.0.1:9",
            "oracle",
            "run",
            "--node-wait-s",
            "3",
            "--text-logs",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TRIBUTA_DATA_DIR": str(fresh_settings.data_dir)},
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "waiting up to 3s for it" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "cannot reach an Ethereum node at http://127.0.0.1:9" in last and "--node-wait-s" in last, proc.stderr


def test_oracle_run__sigusr1__prints_every_threads_stack_and_keeps_running(fresh_settings):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tributa.cli.__main__",
            "--rpc-url",
            "http://127.0.0.1:9",
            "oracle",
            "run",
            "--node-wait-s",
            "60",
            "--text-logs",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TRIBUTA_DATA_DIR": str(fresh_settings.data_dir)},
    )
    try:
        before = []
        while not before or "waiting up to 60s for it" not in before[-1]:  # the process is up, waiting for its node
            before.append(proc.stderr.readline())
            assert before[-1] and len(before) < 20, before
        proc.send_signal(signal.SIGUSR1)
        dump = [proc.stderr.readline() for _ in range(3)]
        assert any(line.startswith("Current thread") or line.startswith("Thread 0x") for line in dump), dump
        assert proc.poll() is None  # a dump, not an exit
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_oracle_run__an_account_that_is_not_an_oracle__refused_before_anything_starts(fresh_settings, contracts):
    """A real process: `oracle run` sets up the process's logging, which must not leak into other tests."""
    s = fresh_settings
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tributa.cli.__main__",
            "--rpc-url",
            s.rpc_url,
            "--data-dir",
            str(s.data_dir),
            "--deployments",
            str(s.deployments_dir),
            "oracle",
            "run",
            "--account",
            "dev:publisher",
            "--text-logs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "is not an oracle of the escrow" in last and contracts.escrow.address in last and "--account" in last, (
        proc.stderr
    )
    assert not (s.data_dir / "oracle.sqlite").exists()  # refused before the database was made


def test_oracle_status__a_data_dir_without_a_database__says_so_and_creates_nothing(fresh_settings, tmp_path):
    empty = tmp_path / "never-ran-an-oracle"
    result = run_cli(fresh_settings.with_overrides(data_dir=empty), "oracle", "status")
    assert_one_line_error(result, "no oracle database in", str(empty), "--db-url")
    assert not empty.exists()


def test_cli__rpc_url_not_http__says_so(fresh_settings):
    result = run_cli(fresh_settings.with_overrides(rpc_url="ws://localhost:8545"), "model", "list")
    assert_one_line_error(result, "is not http(s)://")


def test_cli__missing_deployment__names_the_file_and_the_fix(fresh_settings, tmp_path):
    result = run_cli(fresh_settings.with_overrides(deployments_dir=tmp_path / "nowhere"), "model", "list")
    assert_one_line_error(result, "no deployment for chain 31337", "ape run deploy")


def test_cli__unfunded_account__says_it_cannot_pay(fresh_settings, contracts, chain_snapshot):
    model = register_test_model(contracts, signer_for(contracts, "publisher"))
    empty = Account.create()
    result = run_cli(
        fresh_settings,
        "task",
        "submit",
        "--model",
        str(model),
        "--prompt",
        "hi",
        "--account",
        "env:EMPTY_KEY",
        env={"EMPTY_KEY": empty.key.hex()},
    )
    assert_one_line_error(result, empty.address, "fund it first")
    assert contracts.w3.eth.get_transaction_count(empty.address) == 0


def test_cli__unknown_task__says_how_many_exist(fresh_settings, contracts):
    result = run_cli(fresh_settings, "task", "show", "999999")
    assert_one_line_error(result, "task 999999 does not exist")


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"\x00\x01\x02binary", "is not text"), (b"\xff\xfe\xfa not utf8", "is not UTF-8 text")],
)
def test_dataset_register__bad_file__rejected_before_any_transaction(
    fresh_settings, contracts, tmp_path, content, message
):
    bad = tmp_path / "data.txt"
    bad.write_bytes(content)
    creator = signer_for(contracts, "creator")
    nonce = contracts.w3.eth.get_transaction_count(creator.address)

    result = run_cli(
        fresh_settings, "dataset", "register", str(bad), "--contributor", f"{creator.address}=10000", "--no-index"
    )

    assert_one_line_error(result, message)
    assert contracts.w3.eth.get_transaction_count(creator.address) == nonce


def test_dataset_register__empty_file_with_indexing_on__refused_before_the_models_load(
    fresh_settings, contracts, tmp_path, monkeypatch
):
    from oracle.attribution import service

    def loaded(*_args, **_kwargs):
        raise AssertionError("the tokenizer and embedder were loaded before the file was checked")

    monkeypatch.setattr(service, "default_indexes", loaded)  # a tripwire: it must not be reached
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    creator = signer_for(contracts, "creator")

    result = run_cli(fresh_settings, "dataset", "register", str(empty), "--contributor", f"{creator.address}=10000")

    assert_one_line_error(result, "is empty")


def test_dataset_register__missing_path__rejected(fresh_settings, contracts, tmp_path):
    creator = signer_for(contracts, "creator")
    result = run_cli(
        fresh_settings, "dataset", "register", str(tmp_path / "absent"), "--contributor", f"{creator.address}=10000"
    )
    assert_one_line_error(result, "does not exist")


def test_dataset_register__shares_not_summing_to_10000__rejected(fresh_settings, contracts, tmp_path):
    good = tmp_path / "data.txt"
    good.write_text("some text")
    creator = signer_for(contracts, "creator")
    result = run_cli(
        fresh_settings, "dataset", "register", str(good), "--contributor", f"{creator.address}=9000", "--no-index"
    )
    assert_one_line_error(result, "10000")


@pytest.mark.parametrize("address", ["0x12", "0x1234", "nobody", "0x" + "g" * 40])
def test_dataset_register__contributor_not_an_address__one_line_before_any_transaction(
    fresh_settings, contracts, tmp_path, address
):
    good = tmp_path / "data.txt"
    good.write_text("some text")
    creator = signer_for(contracts, "creator")
    nonce = contracts.w3.eth.get_transaction_count(creator.address)
    result = run_cli(
        fresh_settings, "dataset", "register", str(good), "--contributor", f"{address}=10000", "--no-index"
    )
    assert_one_line_error(result, repr(address), "is not an Ethereum address")
    assert contracts.w3.eth.get_transaction_count(creator.address) == nonce


@pytest.mark.parametrize("command", [("account", "balance"), ("agent", "status"), ("royalties", "show")])
def test_read_commands__address_argument_not_an_address__one_line(fresh_settings, contracts, command):
    assert_one_line_error(run_cli(fresh_settings, *command, "0x12"), "'0x12' is not an Ethereum address")


def test_task_submit__fee_not_an_amount__rejected(fresh_settings, contracts):
    result = run_cli(fresh_settings, "task", "submit", "--model", "1", "--prompt", "x", "--fee", "lots")
    assert_one_line_error(result, "is not an ETH amount")


def test_imo_buy__zero_eth__rejected(fresh_settings, contracts):
    result = run_cli(fresh_settings, "imo", "buy", "1", "--eth", "0")
    assert_one_line_error(result, "positive amount")


def test_task_submit__max_model_fee_below_the_model_fee__one_line_naming_the_limit(
    fresh_settings, contracts, chain_snapshot
):
    model = register_test_model(contracts, signer_for(contracts, "publisher"), fee_per_task=2 * 10**15)
    result = run_cli(
        fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--max-model-fee", "0.001"
    )
    assert_one_line_error(result, "model fee rose to 0.002 ETH, above your max 0.001 ETH")


def test_task_submit__k_over_the_agents_serving_the_model__refused_and_nothing_posted(
    fresh_settings, contracts, chain_snapshot
):
    model = register_test_model(contracts, signer_for(contracts, "publisher"))
    ensure_agent(contracts, signer_for(contracts, "agent"), [model])
    posted = contracts.escrow.functions.task_count().call()

    result = run_cli(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--k", "3")

    assert_one_line_error(result, "--k 3 needs 3 distinct agents, but 1 staked agent serves model")
    assert contracts.escrow.functions.task_count().call() == posted


def test_task_submit__no_agent_serves_the_model__a_warning_and_the_task_posted(
    fresh_settings, contracts, chain_snapshot
):
    model = register_test_model(contracts, signer_for(contracts, "publisher"))
    posted = contracts.escrow.functions.task_count().call()

    result = run_cli(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--no-upload")

    assert result.exit_code == 0, result.output
    assert f"warning: no staked agent serves model {model} now" in result.output
    assert contracts.escrow.functions.task_count().call() == posted + 1


def test_task_submit__shows_the_model_fee_it_accepts(fresh_settings, contracts, chain_snapshot):
    model = register_test_model(contracts, signer_for(contracts, "publisher"), fee_per_task=10**15)
    result = run_cli(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi")
    assert result.exit_code == 0, result.output
    assert "model fee 0.001 ETH, max 0.001 ETH" in result.output


def test_task_submit__adapter_the_model_does_not_register__refused_before_sending(
    fresh_settings, contracts, chain_snapshot
):
    from tributa.store import cid as cidlib

    model = register_test_model(contracts, signer_for(contracts, "publisher"))
    stranger = str(cidlib.digest_to_cid(b"\x42" * 32))
    tasks_before = contracts.escrow.functions.task_count().call()
    assert_one_line_error(
        run_cli(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--adapter", stranger),
        f"model {model} has no adapter {stranger}",
    )
    assert_one_line_error(
        run_cli(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--adapter", "not-a-cid"),
        "is not a CID",
    )
    assert contracts.escrow.functions.task_count().call() == tasks_before


def test_model_terms__publisher_sets_the_limit__task_submit_enforces_it_before_paying(
    fresh_settings, contracts, chain_snapshot
):
    model = register_test_model(contracts, signer_for(contracts, "publisher"))
    shown = run_cli(fresh_settings, "model", "terms", str(model))
    assert shown.exit_code == 0 and "up to 64 new tokens" in shown.output
    assert_one_line_error(
        run_cli(fresh_settings, "model", "terms", str(model), "--max-new-tokens", "100", "--account", "dev:requester"),
        "only model",
    )
    result = run_cli(fresh_settings, "model", "terms", str(model), "--max-new-tokens", "100", "--min-cosine", "0.995")
    assert result.exit_code == 0 and "up to 100 new tokens" in result.output and "cosine >= 0.995" in result.output
    assert tuple(contracts.registry.functions.serving_terms(model).call()) == (100, 995_000, 0)
    tasks_before = contracts.escrow.functions.task_count().call()
    assert_one_line_error(
        run_cli(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--max-new-tokens", "101"),
        f"more than model {model} sells per task (100",
    )
    assert contracts.escrow.functions.task_count().call() == tasks_before
    ok = run_cli(fresh_settings, "task", "submit", "--model", str(model), "--prompt", "hi", "--max-new-tokens", "100")
    assert ok.exit_code == 0, ok.output


def test_model_terms__unknown_model_or_out_of_range__one_line(fresh_settings, contracts):
    assert_one_line_error(run_cli(fresh_settings, "model", "terms", "999"), "model 999 is not registered")
    result = run_cli(fresh_settings, "model", "terms", "1", "--min-cosine", "0.5")
    assert result.exit_code != 0 and "0.5" in result.output


def test_version__prints_the_installed_package_version():
    from importlib.metadata import version

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"tributa {version('tributa')}"


def test_shell_completion__as_the_readme_documents__completes_command_names():
    env = {"_TRIBUTA_COMPLETE": "bash_complete", "COMP_WORDS": "tributa sto", "COMP_CWORD": "1"}
    result = CliRunner().invoke(cli, [], prog_name="tributa", env=env)
    assert result.output.split() == ["plain,store"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", ""], "the prompt is empty"),
        (["--prompt", "   "], "the prompt is empty"),
        (["--text", ""], "an embedding text is empty"),
        (["--text", "a", "--chat"], "a chat template applies to generation only"),
        (["--input", "{in}", "--prompt", "x"], "not both"),
    ],
)
def test_task_submit__empty_or_contradictory_input__refused_before_anything_is_sent(
    fresh_settings, contracts, tmp_path, args, message
):
    requester = signer_for(contracts, "requester")
    nonce = contracts.w3.eth.get_transaction_count(requester.address)
    (tmp_path / "in.json").write_text('{"prompt": "x"}')
    args = [a.replace("{in}", str(tmp_path / "in.json")) for a in args]
    assert_one_line_error(run_cli(fresh_settings, "task", "submit", "--model", "1", *args), message)
    assert contracts.w3.eth.get_transaction_count(requester.address) == nonce


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"prompt": 5}', '"prompt" must be a non-empty string, not 5'),
        (b'{"prompt": ""}', '"prompt" must be a non-empty string'),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"prompt": "a", "texts": ["b"]}', "exactly one of"),
        (b'{"texts": []}', '"texts" must be a non-empty list'),
        (b'{"texts": ["a", 3]}', '"texts" must be a non-empty list'),
        (b"not json", "is not JSON"),
    ],
)
def test_task_submit__input_file_of_the_wrong_shape__one_line_before_paying(
    fresh_settings, contracts, tmp_path, body, message
):
    (tmp_path / "in.json").write_bytes(body)
    assert_one_line_error(
        run_cli(fresh_settings, "task", "submit", "--model", "1", "--input", str(tmp_path / "in.json")), message
    )


def test_oracle_run__sigterm__both_processes_stop_within_5s_and_say_so(fresh_settings, contracts, tmp_path):
    import time

    from tributa.devnet import free_port
    from tributa.processes import start_oracle

    settings = fresh_settings.with_overrides(oracle_url=f"http://127.0.0.1:{free_port()}")
    oracle = start_oracle(settings, tmp_path / "oracle.log", ["--no-attribution", "--text-logs"])
    children = subprocess.run(["pgrep", "-g", str(oracle.process.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 3  # the supervisor, its worker and the job API

    began = time.monotonic()
    os.kill(oracle.process.pid, signal.SIGTERM)
    code = oracle.process.wait(timeout=30)
    took = time.monotonic() - began
    log = (tmp_path / "oracle.log").read_text()
    assert code == 0 and took < 5, (code, took, log[-2000:])
    assert "oracle stopping (SIGTERM): closing the job API" in log and "oracle stopped in " in log
    assert "Traceback" not in log
    assert subprocess.run(["pgrep", "-g", str(oracle.process.pid)], capture_output=True).returncode == 1  # none left


def test_ape_deploy__a_live_deployment_file__refused_without_force_and_left_as_it_was(deployed, anvil):
    from tributa.devnet import ape_deploy
    from tributa.errors import ConfigError

    path = next(deployed.deployments_dir.glob("*.json"))
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already names a live deployment on chain 31337 .* pass --force"):
        ape_deploy(anvil.rpc_url, deployed.deployments_dir)
    assert path.read_bytes() == before


def test_ape_deploy__an_ape_keyfile_account__one_confirmation_then_every_transaction_signed_unattended(anvil, tmp_path):
    """The testnet path, on Anvil: an encrypted ape account (imported offline), --yes for the one
    confirmation and the passphrase from APE_ACCOUNTS_<alias>_PASSPHRASE; no prompt per transaction
    (stdin is closed, so any prompt would fail the deploy)."""
    import json

    from tributa.chain.accounts import dev_account
    from tributa.devnet import ape_deploy

    env = {"APE_DATA_FOLDER": str(tmp_path / "ape"), "APE_ACCOUNTS_deployer-test_PASSPHRASE": "correct horse"}
    key = dev_account("deployer").key.hex()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ape_accounts import import_account_from_private_key as i; "
            "i('deployer-test', 'correct horse', sys.argv[1])",
            key,
        ],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    out = tmp_path / "deployments"
    roles = {r: dev_account(r).address for r in ("oracle", "treasury")}

    shown = ape_deploy(
        anvil.rpc_url,
        out,
        ["--account", "deployer-test", "--yes", "--oracle", roles["oracle"], "--treasury", roles["treasury"]],
        env=env,
    )

    assert f"12 transactions from {dev_account('deployer').address}" in shown
    deployment = json.loads(next(out.glob("*.json")).read_text())
    assert deployment["deployer"] == dev_account("deployer").address and deployment["oracle"] == roles["oracle"]
