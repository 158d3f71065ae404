"""A registered model's kind (generation or embedding), read from its base folder's config.json by
CID: `model show` prints it, and `task submit` refuses a prompt to an embedding model or texts to a
generation model before anything is paid or sent (issues 14 and 15). Real Anvil, real stores."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.helpers import register_test_model, registered_model, signer_for
from tributa.cli import cli
from tributa.store import open_store

NO_ORACLE = "http://127.0.0.1:9"  # nothing listens: the oracle's content API is unreachable


def run_cli(settings, *args, oracle_url=NO_ORACLE):
    base = [
        "--rpc-url",
        settings.rpc_url,
        "--data-dir",
        str(settings.data_dir),
        "--deployments",
        str(settings.deployments_dir),
        "--oracle-url",
        oracle_url,
    ]
    return CliRunner(mix_stderr=False).invoke(cli, [*base, *args], catch_exceptions=True)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)  # a ClickException, not a crash
    assert result.stdout == ""
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _registered_here(settings, contracts, name, folder) -> int:
    """The folder registered (or found registered by another test module), with its blocks in
    this data dir's store, as they are on the publisher's machine."""
    store = open_store(settings.store_dir)
    try:
        store.put_dir(folder)
        return registered_model(contracts, signer_for(contracts, "publisher"), store, name, folder)
    finally:
        store.close()


@pytest.fixture
def generation_model(fresh_settings, contracts, demo_models) -> int:
    return _registered_here(fresh_settings, contracts, "tiny-gpt2", demo_models.base_dir)


@pytest.fixture
def embedding_model(fresh_settings, contracts) -> int:
    from tributa.ml.embeddings import model_dir

    return _registered_here(fresh_settings, contracts, "minilm", model_dir())


def _requester_state(contracts) -> tuple[int, int]:
    requester = signer_for(contracts, "requester").address
    return contracts.escrow.functions.task_count().call(), contracts.w3.eth.get_balance(requester)


# -- model show --------------------------------------------------------------------------------


def test_model_show__generation_and_minilm__kind_from_the_base_folders_config(
    fresh_settings, generation_model, embedding_model
):
    for model_id, kind in ((generation_model, "generation"), (embedding_model, "embedding")):
        shown = run_cli(fresh_settings, "model", "show", str(model_id))
        assert shown.exit_code == 0, (shown.stdout, shown.stderr)
        assert f"kind: {kind} (config.json from the local store)" in shown.stdout
        assert "fees to 0x" in shown.stdout  # issue 15: kind, fee receiver and adapters
        doc = run_cli(fresh_settings, "model", "show", str(model_id), "--json")
        assert doc.exit_code == 0, (doc.stdout, doc.stderr)
        assert json.loads(doc.stdout)["kind"] == kind


def test_model_show__weights_in_no_store_and_no_oracle__unknown_with_the_reason(
    fresh_settings, contracts, chain_snapshot
):
    model_id = register_test_model(contracts, signer_for(contracts, "publisher"))  # a random weights digest
    shown = run_cli(fresh_settings, "model", "show", str(model_id))
    assert shown.exit_code == 0, (shown.stdout, shown.stderr)
    line = next(line for line in shown.stdout.splitlines() if "kind:" in line)
    assert "kind: unknown (its weights Qm" in line and "not in this machine's store" in line
    assert f"cannot reach the oracle's content API at {NO_ORACLE}" in line
    doc = json.loads(run_cli(fresh_settings, "model", "show", str(model_id), "--json").stdout)
    assert (
        doc["kind"] == "unknown"
        and doc["kind_source"] is None
        and "not in this machine's store" in doc["kind_unknown_because"]
    )


def test_kind_of_weights__blocks_only_at_the_oracle__reads_config_json_and_never_the_weights(
    contracts, signers, tmp_path, chain_snapshot
):
    from tests.oracle.test_content_api import Oracle
    from tributa.catalog import describe_folder
    from tributa.ml.embeddings import model_dir
    from tributa.model_kind import kind_of_weights

    oracle = Oracle(contracts, signers, tmp_path)
    folder = model_dir()
    oracle.parts.store.put_dir(folder)
    digest = describe_folder(oracle.parts.store, folder).digest
    weights_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    class Counted:  # the real client, counting what it reads
        def __init__(self, api):
            self.api, self.bytes = api, 0

        def read(self, cid, deadline=None):
            data = self.api.read(cid, deadline)
            self.bytes += len(data)
            return data

    remote = Counted(oracle.client(None))
    kind = kind_of_weights(digest, open_store(tmp_path / "requester" / "store"), remote)
    assert (kind.kind, kind.source) == ("embedding", "oracle")
    assert 0 < remote.bytes < 64 * 1024 < weights_bytes  # the directory node and config.json only


# -- task submit -------------------------------------------------------------------------------


def test_task_submit__prompt_to_an_embedding_model__refused_in_one_line_nothing_posted(
    fresh_settings, contracts, embedding_model
):
    before = _requester_state(contracts)
    result = run_cli(fresh_settings, "task", "submit", "--model", str(embedding_model), "--prompt", "hello", "--yes")
    assert_one_line_error(result, f"model {embedding_model} is an embedding model", "give --text", "not --prompt")
    assert _requester_state(contracts) == before


def test_task_submit__texts_to_a_generation_model__refused_in_one_line_nothing_posted(
    fresh_settings, contracts, generation_model, tmp_path
):
    before = _requester_state(contracts)
    result = run_cli(fresh_settings, "task", "submit", "--model", str(generation_model), "--text", "hello", "--yes")
    assert_one_line_error(result, f"model {generation_model} is a generation model", "give --prompt", "not --text")
    input_file = tmp_path / "input.json"
    input_file.write_text(json.dumps({"texts": ["hello"]}))
    result = run_cli(
        fresh_settings, "task", "submit", "--model", str(generation_model), "--input", str(input_file), "--yes"
    )
    assert_one_line_error(result, "is a generation model", 'give "prompt" in --input, not "texts"')
    assert _requester_state(contracts) == before


def test_task_submit__unknown_kind__posted_as_given(fresh_settings, contracts, chain_snapshot):
    model_id = register_test_model(contracts, signer_for(contracts, "publisher"))
    count, _ = _requester_state(contracts)
    result = run_cli(
        fresh_settings,
        "task",
        "submit",
        "--model",
        str(model_id),
        "--prompt",
        "hello",
        "--yes",
        "--no-upload",
        "--json",
    )
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert json.loads(result.stdout)["model_id"] == model_id
    assert _requester_state(contracts)[0] == count + 1


def test_task_submit__input_over_what_agents_run__refused_in_one_line_nothing_posted(
    fresh_settings, contracts, chain_snapshot, tmp_path
):
    from tributa.cli.task import AGENT_MAX_INPUT_BYTES
    from tributa.runtime.jobs import MAX_INPUT_BYTES

    assert AGENT_MAX_INPUT_BYTES == MAX_INPUT_BYTES
    model_id = register_test_model(contracts, signer_for(contracts, "publisher"))
    before = _requester_state(contracts)
    input_file = tmp_path / "big.json"
    input_file.write_text(json.dumps({"prompt": "x" * MAX_INPUT_BYTES}))
    result = run_cli(fresh_settings, "task", "submit", "--model", str(model_id), "--input", str(input_file), "--yes")
    assert_one_line_error(result, "agents run inputs of at most 65,536 bytes")
    assert _requester_state(contracts) == before


# --- a hostile oracle or publisher: every answer bounded, no traceback ------------------------------


class _Hostile:
    """An HTTP server on loopback answering every GET with `answer(handler)`."""

    def __init__(self, answer):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    answer(self)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _answer(status: int, body: bytes, chunks: int = 1, pause_s: float = 0.0):
    import time

    def answer(handler):
        handler.send_response(status)
        handler.send_header("content-length", str(len(body) * chunks))
        handler.end_headers()
        for _ in range(chunks):
            handler.wfile.write(body)
            handler.wfile.flush()
            time.sleep(pause_s)

    return answer


@pytest.mark.parametrize(
    "answer, expected",
    [
        (_answer(404, b"[]"), "nor the oracle's"),  # a JSON body that is no object
        (_answer(404, b"[" * 60_000), "nor the oracle's"),  # nested past what CPython's parser survives
        (_answer(500, b"x" * 65_536, chunks=64), "block limit"),  # a 4 MiB error body: read up to 64 KiB
        (_answer(200, b"y" * 4096, chunks=400, pause_s=0.01), "too slow"),  # a trickle past the deadline
    ],
    ids=["404-list", "404-deep", "500-huge", "trickle"],
)
def test_kind_of_weights__hostile_oracle__unknown_with_why_and_bounded(tmp_path, answer, expected):
    import time

    from tributa.content_api import ContentApi
    from tributa.model_kind import kind_of_weights

    hostile = _Hostile(answer)
    try:
        started = time.monotonic()
        with ContentApi(hostile.url, 31337, "0x" + "11" * 20, timeout_s=5) as remote:
            kind = kind_of_weights(b"\x42" * 32, open_store(tmp_path / "store"), remote, total_s=2)
        assert time.monotonic() - started < 15
    finally:
        hostile.close()
    assert not kind.known and expected in kind.reason, kind.reason


def test_json_input__nested_past_the_parser__refused_as_a_value_error_strings_not_counted():
    """What model_kind, the content API client and task submit parse with: a '[' * 100000
    config.json or input segfaulted json.loads under a deep call stack (seen in this module)."""
    from tributa import json_input

    with pytest.raises(ValueError, match="deeper than 256"):
        json_input.loads(b"[" * 100_000)
    assert json_input.loads(b'{"prompt": "[[[[ not nesting \\" [[", "texts": null}') == {
        "prompt": '[[[[ not nesting " [[',
        "texts": None,
    }
    assert json_input.depth_ok(b"[" * 256 + b"]" * 256, 256) and not json_input.depth_ok(b"[" * 257 + b"]" * 257, 256)
    deepest = json_input.loads(b"[" * 256 + b"]" * 256)  # parses: 256 lists, each holding the next
    for _ in range(255):
        (deepest,) = deepest
    assert deepest == []
    assert not json_input.depth_ok(b"[" * 300, 256)  # unbalanced: no


def test_task_list__model_out_of_range_and_deep_input__usage_error_and_one_line(fresh_settings, tmp_path):
    bad = run_cli(fresh_settings, "task", "list", "--model", "-1")
    assert bad.exit_code == 2 and "--model" in bad.stderr and "Traceback" not in bad.stderr
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100_000)
    assert_one_line_error(
        run_cli(fresh_settings, "task", "submit", "--model", "1", "--input", str(deep)), "is not JSON"
    )
