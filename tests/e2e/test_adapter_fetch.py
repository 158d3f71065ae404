"""Adapters fetched by CID, end to end on Anvil: an agent started with only the base folder
serves tasks naming the model's registered adapters, fetched just in time from the oracle's job
API (block by block, each re-hashed), with the same bytes as an agent holding them locally; an
adapter altered on its way, or an unsafe one, is refused and never served.

Reuses the random Llama of tests/e2e/test_engine_flow.py. The fetching agent runs sandboxed
(bubblewrap), so the adapter cache its worker reads is bound after start-up too."""

from __future__ import annotations

import http.server
import json
import shutil
import sqlite3
import threading
import time

import httpx
import pytest

from tests.e2e.test_engine_flow import llama  # noqa: F401 (fixture)
from tests.helpers import signer_for
from tributa.chain.events import first_event
from tributa.processes import start_agent, start_oracle
from tributa.publish import register_model
from tributa.store import dag, open_store
from tributa.store.cid import Cid
from tributa.tasks import encode_input, post_task, read_task, wait_until_final

SETTLE_TIMEOUT_S = 300
AGENT_ARGS = ["--text-logs", "--capacity", "4", "--threads", "1"]


@pytest.fixture(scope="module")
def second_adapter(llama, tmp_path_factory):
    """Another LoRA adapter of the same base, so the model has two to fetch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(11)
    model = LlamaForCausalLM.from_pretrained(llama[0])
    peft = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    folder = tmp_path_factory.mktemp("second-adapter") / "adapter"
    peft.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())  # as the first: no path of this machine
    (folder / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": None}, indent=2, sort_keys=True)
    )
    return folder


@pytest.fixture(scope="module")
def network(contracts, deployed, llama, second_adapter, tmp_path_factory):
    """One oracle; agent "agent" holds the base and both adapters, agent "agent2" only the base
    (and an empty store of its own), so it must fetch the adapters from the oracle."""
    root = tmp_path_factory.mktemp("adapter-fetch")
    settings = deployed.with_overrides(data_dir=root / "oracle-data")
    store = open_store(settings.store_dir)
    base_dir, adapter_dir = llama
    publisher = signer_for(contracts, "publisher")
    model = register_model(
        contracts, publisher, store, "fetch-llama", base_dir, [adapter_dir, second_adapter], None, 10**15
    )
    oracle = start_oracle(settings, root / "oracle.log", ["--no-attribution", "--text-logs"])
    local = start_agent(
        settings.with_overrides(data_dir=root / "local-data"),
        root / "local.log",
        [
            *AGENT_ARGS,
            "--no-sandbox",
            "--account",
            "dev:agent",
            "--model-dir",
            str(base_dir),
            "--model-dir",
            str(adapter_dir),
            "--model-dir",
            str(second_adapter),
        ],
    )
    fetching = start_agent(
        settings.with_overrides(data_dir=root / "fetching-data"),
        root / "fetching.log",
        [
            *AGENT_ARGS,
            "--account",
            "dev:agent2",
            "--model-dir",
            str(base_dir),
        ],
    )
    yield {
        "root": root,
        "settings": settings,
        "store": store,
        "model": model,
        "oracle": oracle,
        "local": local,
        "fetching": fetching,
    }
    fetching.stop()
    local.stop()
    oracle.stop()


def test_e2e__agent_with_only_the_base__fetches_adapters_by_cid_and_matches_an_agent_holding_them(
    network,
    contracts,
    llama,
    second_adapter,
):
    from tributa.catalog import describe_folder
    from tributa.runtime.executor import Executor

    store = network["store"]
    base = describe_folder(store, llama[0])
    first, second = describe_folder(store, llama[1]), describe_folder(store, second_adapter)
    requester = signer_for(contracts, "requester")
    inputs = [
        encode_input(prompt="the moon", max_new_tokens=10, adapter=first.cid),
        encode_input(prompt="bread and", max_new_tokens=10, adapter=second.cid),
        encode_input(prompt="a star", max_new_tokens=10),  # no field: the model's first adapter
        json.dumps({"prompt": "the moon", "max_new_tokens": 10, "adapter": None}).encode(),  # the bare base
    ]
    # k = 2: each task runs on both agents, and both are paid only if both signed the settled bytes.
    tasks = [post_task(contracts, requester, store, network["model"].model_id, data, k=2) for data in inputs]

    views = wait_until_final(
        contracts,
        [t.task_id for t in tasks],
        SETTLE_TIMEOUT_S,
        (network["oracle"], network["local"], network["fetching"]),
    )

    assert [views[t.task_id].state for t in tasks] == ["settled"] * 4
    both = {signer_for(contracts, "agent").address, signer_for(contracts, "agent2").address}
    assert [set(views[t.task_id].settlement["agents"]) for t in tasks] == [both] * 4  # the same bytes from each
    outputs = [store.get_bytes(views[t.task_id].result_cid) for t in tasks]
    assert outputs == [Executor().run(base, [first, second], data) for data in inputs]
    assert [json.loads(o)["adapter"] for o in outputs] == [first.cid, second.cid, first.cid, None]
    # The fetching agent cached both folders under its data dir, every block from the oracle.
    cache = network["root"] / "fetching-data" / "adapters"
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.cid, second.cid])
    assert store.cid_of(cache / first.cid) == Cid.parse(first.cid)
    log = (network["root"] / "fetching.log").read_text()
    for adapter in (first, second):
        assert f"adapter {adapter.cid} fetched" in log
        assert log.count(f"adapter {adapter.cid} fetched") == 1  # once, however many jobs named it
    assert "0 blocks from this agent's store" in log
    assert not list((network["root"] / "local-data" / "adapters").iterdir())  # the other had them all


def test_e2e__blocks_endpoint__serves_stored_blocks_only(network, llama):
    from tributa.catalog import describe_folder

    url, store = network["settings"].oracle_url, network["store"]
    adapter = Cid.parse(describe_folder(store, llama[1]).cid)
    served = httpx.get(f"{url}/v1/blocks/{adapter}")
    assert served.status_code == 200 and served.content == store.read(adapter)
    unknown = Cid(0, "dag-pb", bytes(32))
    assert httpx.get(f"{url}/v1/blocks/{unknown}").status_code == 404
    assert httpx.get(f"{url}/v1/blocks/not-a-cid").status_code == 400


class TamperingProxy:
    """A real HTTP hop between an agent and the oracle that passes everything through, except
    that it flips the last byte of the blocks named in `tamper` (a gateway serving altered bytes)."""

    def __init__(self, upstream: str, tamper: set[str]) -> None:
        client = httpx.Client(timeout=60)
        base = upstream.rstrip("/")

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                skip = {"host", "content-length", "connection", "accept-encoding"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                try:
                    answer = client.request(self.command, base + self.path, content=body, headers=headers)
                except httpx.HTTPError:  # the oracle went away (or the proxy is closing)
                    self.send_error(502)
                    return
                data = answer.content
                if (
                    answer.status_code == 200
                    and self.path.startswith("/v1/blocks/")
                    and self.path.rsplit("/", 1)[-1] in tamper
                ):
                    data = data[:-1] + bytes([data[-1] ^ 1])
                self.send_response(answer.status_code)
                for name in ("content-type", "retry-after"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                if answer.status_code != 204:
                    self.send_header("content-length", str(len(data)))
                self.end_headers()
                if answer.status_code != 204:
                    self.wfile.write(data)

            do_GET = do_POST = forward

            def log_message(self, *args) -> None:
                pass

        self._client = client
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()


def _jobs_of(settings, task_id: int) -> list[tuple[str, str | None]]:
    """(state, error) of the oracle's jobs for a task, read from its database."""
    with sqlite3.connect(f"file:{settings.data_dir / 'oracle.sqlite'}?mode=ro", uri=True) as db:
        return db.execute("SELECT state, error FROM jobs WHERE task_id = ?", (task_id,)).fetchall()


def test_e2e__adapter_altered_in_transit_or_unsafe__refused_and_never_served(
    network,
    contracts,
    llama,
    second_adapter,
    tmp_path_factory,
):
    """A model on another base (so only the third agent serves it) with two adapters: the first's
    weights block is altered by the gateway the agent uses; the second is registered content that
    hashes right but carries a pickle. The first job goes back to the pool, the second fails."""
    from tributa.catalog import describe_folder

    root = tmp_path_factory.mktemp("tampered")
    store, settings = network["store"], network["settings"]
    base = root / "base"
    shutil.copytree(llama[0], base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "initializer_range": 0.03}))  # another base digest
    adapter = describe_folder(store, llama[1])  # in the oracle's store since the model above registered
    unsafe = root / "unsafe"
    shutil.copytree(second_adapter, unsafe)  # other weights: no block shared with the altered one
    (unsafe / "training_args.bin").write_bytes(b"\x80\x04N.")  # a pickle, as HF's Trainer saves one
    unsafe_cid = str(store.put_dir(unsafe))  # registered below by a raw call: `model register` would refuse it
    publisher = signer_for(contracts, "publisher")
    call = contracts.registry.functions.register_model(
        "tampered-llama",
        describe_folder(store, base).digest,
        [adapter.digest, Cid.parse(unsafe_cid).digest],
        [],
        [],
        10**15,
        publisher.address,
    )
    model_id = first_event(contracts.registry, "ModelRegistered", publisher.transact(call).receipt)["model_id"]
    weights = dict(dag.list_dir(store, dag.load(store, Cid.parse(adapter.cid))))[b"adapter_model.safetensors"]
    proxy = TamperingProxy(settings.oracle_url, {str(weights)})
    agent = start_agent(
        settings.with_overrides(data_dir=root / "agent-data", oracle_url=proxy.url),
        root / "agent.log",
        [
            *AGENT_ARGS,
            "--no-sandbox",
            "--account",
            "dev:19",
            "--model-dir",
            str(base),
        ],
    )
    try:
        requester = signer_for(contracts, "requester")
        altered = post_task(
            contracts,
            requester,
            store,
            model_id,
            encode_input(prompt="the moon", max_new_tokens=8, adapter=adapter.cid),
        )
        refused = post_task(
            contracts, requester, store, model_id, encode_input(prompt="the moon", max_new_tokens=8, adapter=unsafe_cid)
        )

        views = wait_until_final(
            contracts, [refused.task_id], SETTLE_TIMEOUT_S, (network["oracle"], agent), final=("failed", "refunded")
        )
        deadline = time.monotonic() + 60
        while not _jobs_of(settings, altered.task_id) or _jobs_of(settings, altered.task_id)[0][0] == "leased":
            assert time.monotonic() < deadline, agent.log_tail()
            time.sleep(0.25)

        # Unsafe registered content: every agent would refuse it, so the task fails with the reason.
        assert "adapter refused: training_args.bin: pickle-based weights" in views[refused.task_id].failure
        # Altered bytes: this copy is at fault, not the task: a runtime error, and the task waits for
        # another agent (none serves this model), never settled with a substitute.
        [(state, error)] = _jobs_of(settings, altered.task_id)
        assert (
            state == "errored" and error.startswith("runtime: adapter refused") and "does not hash to its CID" in error
        )
        assert read_task(contracts, altered.task_id).state == "open"
        cache = root / "agent-data" / "adapters"
        assert list(cache.iterdir()) == []  # neither folder kept, no staging left
        log = (root / "agent.log").read_text()
        assert f"adapter {adapter.cid} refused: block {weights} as served does not hash to its CID" in log
        assert f"adapter {unsafe_cid} refused: training_args.bin: pickle-based weights" in log
    finally:
        agent.stop()
        proxy.close()
