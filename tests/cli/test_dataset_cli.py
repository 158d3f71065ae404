"""`tributa dataset register` commits, waits a block and reveals (issue 10, finding 5);
`tributa dataset transfer` / `accept` hand a dataset over in two steps. Real Anvil."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.helpers import signer_for
from tributa import datasets as ds
from tributa.cli import cli
from tributa.errors import TributaError
from tributa.store import cid as cidlib


def run_cli(settings, *args):
    base = [
        "--rpc-url",
        settings.rpc_url,
        "--data-dir",
        str(settings.data_dir),
        "--deployments",
        str(settings.deployments_dir),
    ]
    return CliRunner().invoke(cli, [*base, *args], catch_exceptions=True)


def test_dataset_register__commits_then_reveals_a_block_later_and_shows_each_step(
    fresh_settings, contracts, tmp_path, chain_snapshot
):
    data = tmp_path / "notes.txt"
    data.write_text("a small dataset of notes\n")
    creator = signer_for(contracts, "creator")
    nonce = contracts.w3.eth.get_transaction_count(creator.address)

    result = run_cli(
        fresh_settings, "dataset", "register", str(data), "--contributor", f"{creator.address}=10000", "--no-index"
    )

    assert result.exit_code == 0, result.output
    assert (
        "step 1 of 2" in result.output
        and "step 2 of 2" in result.output
        and "waiting for the next block" in result.output
    )
    assert "commit tx 0x" in result.output and "reveal tx 0x" in result.output
    assert contracts.w3.eth.get_transaction_count(creator.address) == nonce + 2  # commit + reveal
    count = contracts.registry.functions.dataset_count().call()
    assert f"dataset {count} registered" in result.output
    assert contracts.registry.functions.dataset_owner(count).call() == creator.address


def test_register_dataset__someone_registers_the_content_between_commit_and_reveal__one_line_error(
    contracts, tmp_path, chain_snapshot
):
    # The residual risk: a squatter who knew the digest beforehand and committed first.
    data = tmp_path / "leaked.txt"
    data.write_text("content the squatter saw before it was registered\n")
    creator, squatter = signer_for(contracts, "creator"), signer_for(contracts, "publisher")
    store = _store(tmp_path)
    content_digest = cidlib.cid_to_digest(str(store.put_file(data)))

    def squat(message: str) -> None:
        if "waiting for the next block" in message:
            ds.commit_and_register(contracts, squatter, content_digest, b"\x00" * 32, [squatter.address], [10_000], "")

    with pytest.raises(TributaError) as err:
        ds.register_dataset(contracts, creator, store, data, [creator.address], [10_000], "CC0", on_step=squat)
    message = str(err.value)
    assert "\n" not in message and squatter.address in message and "resolve the dispute" in message


def test_commit_and_register__invalid_contributors__rejected_before_any_transaction(contracts, chain_snapshot):
    creator = signer_for(contracts, "creator")
    nonce = contracts.w3.eth.get_transaction_count(creator.address)
    with pytest.raises(TributaError, match="contributors rejected by the registry: registry: shares must sum to 10000"):
        ds.commit_and_register(contracts, creator, b"\x01" * 32, b"\x00" * 32, [creator.address], [9_000], "")
    assert contracts.w3.eth.get_transaction_count(creator.address) == nonce


def test_dataset_commitment__python_matches_the_registry(contracts):
    creator = signer_for(contracts, "creator")
    args = (b"\x01" * 32, b"\x02" * 32, creator.address, b"\x03" * 32)
    assert ds.dataset_commitment(*args) == contracts.registry.functions.dataset_commitment(*args).call()


def test_dataset_transfer_and_accept__hand_the_dataset_over(fresh_settings, contracts, chain_snapshot):
    creator, buyer = signer_for(contracts, "creator"), signer_for(contracts, "buyer")
    *_, dataset_id = ds.commit_and_register(
        contracts, creator, b"\x0a" * 32, b"\x00" * 32, [creator.address], [10_000], ""
    )

    refused = run_cli(fresh_settings, "dataset", "accept", str(dataset_id), "--account", "dev:buyer")
    assert refused.exit_code == 1 and "is not offered to" in refused.output

    offered = run_cli(fresh_settings, "dataset", "transfer", str(dataset_id), buyer.address)
    assert offered.exit_code == 0, offered.output
    assert contracts.registry.functions.dataset_pending_owner(dataset_id).call() == buyer.address
    taken = run_cli(fresh_settings, "dataset", "accept", str(dataset_id), "--account", "dev:buyer")
    assert taken.exit_code == 0, taken.output
    assert contracts.registry.functions.dataset_owner(dataset_id).call() == buyer.address


def _store(tmp_path):
    from tributa.store import open_store

    return open_store(tmp_path / "store")


def test_model_register__same_weights_twice__one_line_error_before_any_transaction(
    fresh_settings, contracts, tmp_path, chain_snapshot
):
    import json

    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "tag": "dup-check"}))
    first = run_cli(fresh_settings, "model", "register", str(folder), "--name", "original")
    assert first.exit_code == 0, first.output
    publisher = signer_for(contracts, "publisher")
    nonce = contracts.w3.eth.get_transaction_count(publisher.address)

    again = run_cli(fresh_settings, "model", "register", str(folder), "--name", "copy")

    lines = [line for line in again.output.strip().splitlines() if line]
    assert again.exit_code == 1 and len(lines) == 1 and "already registered as model" in lines[0], again.output
    assert contracts.w3.eth.get_transaction_count(publisher.address) == nonce


def test_model_register__pickle_weights__one_line_naming_the_file_before_any_transaction(
    fresh_settings, contracts, tmp_path, chain_snapshot
):
    import json
    import pickle

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "tag": "pickle-check"}))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}))
    publisher = signer_for(contracts, "publisher")
    nonce = contracts.w3.eth.get_transaction_count(publisher.address)

    result = run_cli(fresh_settings, "model", "register", str(folder), "--name", "pickled")

    lines = [line for line in result.output.strip().splitlines() if line]
    assert (
        result.exit_code == 1 and len(lines) == 1 and "pytorch_model.bin" in lines[0] and "safetensors" in lines[0]
    ), result.output
    assert contracts.w3.eth.get_transaction_count(publisher.address) == nonce


def test_model_register__fee_receiver_not_an_address__one_line_before_any_transaction(
    fresh_settings, contracts, tmp_path, chain_snapshot
):
    import json

    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "tag": "receiver-check"}))
    publisher = signer_for(contracts, "publisher")
    nonce = contracts.w3.eth.get_transaction_count(publisher.address)

    result = run_cli(fresh_settings, "model", "register", str(folder), "--name", "m", "--fee-receiver", "0x12")

    lines = [line for line in result.output.strip().splitlines() if line]
    assert result.exit_code == 1 and lines == ["Error: '0x12' is not an Ethereum address (0x and 40 hex digits)"], (
        result.output
    )
    assert contracts.w3.eth.get_transaction_count(publisher.address) == nonce


# -- unsafe model folders: refused in one line naming the file, before anything is sent ------------


def _folder_with(tmp_path, poison):
    import json

    folder = tmp_path / "unsafe"
    folder.mkdir()
    config = {"architectures": ["GPT2LMHeadModel"], "tag": f"unsafe-{poison}"}
    if poison == "auto_map":
        config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    if poison == "auto_map":
        return folder, "config.json"
    if poison == "symlink out":
        (folder / "vocab.txt").symlink_to("/etc/passwd")
        return folder, "vocab.txt"
    if poison == "pyc":
        (folder / "tributa").mkdir()
        (folder / "tributa" / "__init__.pyc").write_bytes(b"\x00" * 16)
        return folder, "__init__.pyc"
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "vocab_file": "/proc/self/environ"})
    )
    return folder, "tokenizer_config.json"


UNSAFE = ["auto_map", "symlink out", "pyc", "vocab_file"]


@pytest.mark.parametrize("poison", UNSAFE)
def test_model_register__unsafe_folder__one_line_naming_the_file_before_any_transaction(
    fresh_settings, contracts, tmp_path, chain_snapshot, poison
):
    folder, culprit = _folder_with(tmp_path, poison)
    publisher = signer_for(contracts, "publisher")
    nonce = contracts.w3.eth.get_transaction_count(publisher.address)
    count = contracts.registry.functions.model_count().call()

    result = run_cli(fresh_settings, "model", "register", str(folder), "--name", "unsafe")

    lines = [line for line in result.output.strip().splitlines() if line]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and culprit in lines[0], (
        result.output
    )
    assert contracts.w3.eth.get_transaction_count(publisher.address) == nonce
    assert contracts.registry.functions.model_count().call() == count


@pytest.mark.parametrize("poison", UNSAFE)
def test_agent_run__unsafe_model_dir__one_line_naming_the_file_at_start_up(
    fresh_settings, contracts, tmp_path, chain_snapshot, poison
):
    # The catalog checks every --model-dir before anything is loaded, registered or polled.
    folder, culprit = _folder_with(tmp_path, poison)
    agent = signer_for(contracts, "agent")
    nonce = contracts.w3.eth.get_transaction_count(agent.address)
    registered = contracts.escrow.functions.agent(agent.address).call()

    result = run_cli(fresh_settings, "agent", "run", "--model-dir", str(folder), "--max-jobs", "0", "--text-logs")

    lines = [line for line in result.output.strip().splitlines() if line]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and culprit in lines[0], (
        result.output
    )
    assert contracts.w3.eth.get_transaction_count(agent.address) == nonce
    assert contracts.escrow.functions.agent(agent.address).call() == registered
