"""Every role on its own machine (issue 14): each role is its own `tributa` process with its own
data dir and key, and reaches only the RPC URL (Anvil) and the oracle's URL. Nothing is shared
but the public deployments file and the model folders an agent or publisher holds.

The operator (this test process) funds fresh accounts and moves chain time. On the oracle's
machine, `oracle run` with attribution. A data creator registers a dataset (uploaded, then
indexed by the oracle); a publisher registers the tiny demo GPT-2 with one adapter trained on
that dataset (the adapter uploaded); three agents holding only the base weights fetch the
adapter by CID; the publisher launches an IMO, a buyer buys, the sale ends and is finalized; a
requester posts a public task with `--k 3` and a `--private` one, reads both results from its
own dir through the oracle's API; a contributor claims its royalties, a creator claims for a
contributor holding no ETH, the buyer claims the token's revenue. Balances are checked to the wei.

Network: where the test runs as root with iproute2 (`ip netns`), each role's process sits in its
own network namespace on a bridge, so it cannot reach another machine's loopback: Anvil (this
host's loopback) is reached through a TCP relay on the bridge, the oracle at its namespace's
address. Elsewhere the same flow runs on this host's loopback, with a warning saying so.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
from eth_account import Account

from tests.helpers import advance_time, signer_for
from tributa.cli.format import parse_eth
from tributa.devnet import free_port
from tributa.imo import token_contract
from tributa.processes import start_agent, start_oracle
from tributa.tasks import wait_until_final

SETTLE_TIMEOUT_S = 240
CLI_TIMEOUT_S = 180
MODEL_FEE = "0.001"
ROLES = ("oracle", "agent1", "agent2", "agent3", "creator", "publisher", "requester", "contributor", "buyer")
FUNDING = {
    "agent1": 1,
    "agent2": 1,
    "agent3": 1,
    "creator": 1,
    "publisher": 1,
    "requester": 2,
    "contributor": 1,
    "buyer": 2,
}
SHARES = {"contributor": 7000, "unfunded": 3000}  # the dataset's contributors; "unfunded" holds no ETH and runs nothing
IMO = {"supply": 1_000_000, "price": "0.000001", "soft_cap": "0.1", "hard_cap": "0.5", "duration_s": 60, "buy": "0.2"}


# -- the network: a namespace per role, or this host's loopback ------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Loopback:
    """Every role on this host's loopback (no network namespaces here)."""

    isolated = False
    host_ip = "127.0.0.1"

    def prefix(self, role: str) -> list[str]:
        return []

    def address(self, role: str) -> str:
        return "127.0.0.1"

    def close(self) -> None:
        pass


class Lan(Loopback):
    """A bridge on this host (its address: `host_ip`) and one network namespace per role, each
    joined to the bridge by a veth pair; `prefix(role)` runs a command inside that role's."""

    isolated = True

    def __init__(self, roles: tuple[str, ...]) -> None:
        tag = f"{os.getpid() % 0x10000:04x}"
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
        third = next(n for n in [os.getpid() % 200 + 20, *range(20, 250)] if f"10.231.{n}." not in routes)
        self.net, self.bridge, self.names = f"10.231.{third}", f"tb{tag}", {}
        self.host_ip = f"{self.net}.1"
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, role in enumerate(roles, start=2):
                ns, host_end, ns_end = f"tributa-{tag}-{role}", f"{self.bridge}h{i}", f"{self.bridge}n{i}"
                _ip("netns", "add", ns)
                self.names[role] = (ns, f"{self.net}.{i}")
                _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
                _ip("link", "set", host_end, "master", self.bridge, "up")
                _ip("link", "set", ns_end, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{self.net}.{i}/24", "dev", ns_end)
                _ip("-n", ns, "link", "set", ns_end, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def prefix(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.names[role][0]]

    def address(self, role: str) -> str:
        return self.names[role][1]

    def close(self) -> None:
        for i, (ns, _) in enumerate(self.names.values(), start=2):
            subprocess.run(["ip", "link", "del", f"{self.bridge}h{i}"], capture_output=True, timeout=30)  # and its peer
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)


def open_network(roles: tuple[str, ...]) -> Loopback:
    reason = "not root, or no iproute2"
    if os.geteuid() == 0 and shutil.which("ip"):
        try:
            return Lan(roles)
        except (subprocess.SubprocessError, OSError, StopIteration) as exc:
            reason = str(getattr(exc, "stderr", None) or exc).strip()
    warnings.warn(f"roles share this host's loopback, not network namespaces: {reason}", stacklevel=2)
    return Loopback()


class Relay:
    """A TCP relay from `listen` to `upstream`: Anvil listens on this host's loopback only, which
    the roles' namespaces cannot reach; they reach it at the bridge's address instead."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(upstream, timeout=10) as up:
                    up.settimeout(None)
                    ends = {self.request: up, up: self.request}
                    while True:
                        for end in select.select(list(ends), [], [], 300)[0]:
                            data = end.recv(1 << 16)
                            if not data:
                                return
                            ends[end].sendall(data)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = daemon_threads = True

        self.server = Server(listen, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the roles' machines ----------------------------------------------------------------------------


class Machine:
    """One role: its own data dir, key and (where the network allows) network namespace. It acts
    through `tributa` processes given only --rpc-url, --oracle-url, --data-dir and --deployments."""

    def __init__(self, name: str, settings, net: Loopback, account) -> None:
        self.name, self.settings, self.net, self.account = name, settings, net, account
        self.address = account.address
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {"TRIBUTA_KEY": account.key.hex()}

    def cli(self, *args: str, account: bool = True, check: bool = True) -> subprocess.CompletedProcess:
        """`tributa [globals] ARGS [--account env:TRIBUTA_KEY]` in this machine's namespace and dir."""
        s = self.settings
        cmd = [
            *self.net.prefix(self.name),
            sys.executable,
            "-m",
            "tributa.cli.__main__",
            "--rpc-url",
            s.rpc_url,
            "--oracle-url",
            s.oracle_url,
            "--data-dir",
            str(s.data_dir),
            "--deployments",
            str(s.deployments_dir),
            *args,
            *(["--account", "env:TRIBUTA_KEY"] if account else []),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTA_")}
        env.update(self.env, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        done = subprocess.run(cmd, cwd=s.data_dir, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        with open(s.data_dir / "cli.log", "a") as log:  # what this machine's user saw, for a failure's post-mortem
            log.write(f"$ tributa {' '.join(args)}\n{done.stdout}{done.stderr}[exit {done.returncode}]\n")
        if check and done.returncode != 0:
            raise AssertionError(
                f"{self.name}: `tributa {' '.join(args)}` exited {done.returncode}:\n{done.stderr}{done.stdout}"
            )
        return done

    def json(self, *args: str) -> dict:
        return json.loads(self.cli(*args, "--json").stdout)

    def start_oracle(self, args: list[str]):
        return start_oracle(
            self.settings, self.settings.data_dir / "oracle.log", args, self.env, prefix=self.net.prefix(self.name)
        )  # inside this role's network namespace

    def start_agent(self, args: list[str]):
        return start_agent(
            self.settings,
            self.settings.data_dir / "agent.log",
            [*args, "--account", "env:TRIBUTA_KEY"],
            self.env,
            prefix=self.net.prefix(self.name),
        )


def gas_paid(w3, address: str, after_block: int, to_block: int) -> int:
    """Wei `address` paid for gas in blocks (after_block, to_block]."""
    total = 0
    for n in range(after_block + 1, to_block + 1):
        for tx in w3.eth.get_block(n, full_transactions=True).transactions:
            if tx["from"] == address:
                receipt = w3.eth.get_transaction_receipt(tx["hash"])
                total += receipt.gasUsed * receipt.effectiveGasPrice
    return total


@contextmanager
def wallet_change(w3, address: str):
    """Yields a dict that holds, after the block, {"received": wallet delta + gas paid, "gas": …}."""
    before_block = w3.eth.block_number
    before = w3.eth.get_balance(address, before_block)
    seen: dict[str, int] = {}
    yield seen
    after_block = w3.eth.block_number
    seen["gas"] = gas_paid(w3, address, before_block, after_block)
    seen["received"] = w3.eth.get_balance(address, after_block) - before + seen["gas"]


def _match(pattern: str, text: str) -> re.Match:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return found


# -- the flow ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def machines(anvil, deployed, contracts, tmp_path_factory):
    """The roles' machines, their accounts funded by the operator; the oracle running on its own."""
    from tributa.chain.accounts import dev_account

    root = tmp_path_factory.mktemp("machines")
    net = open_network(ROLES)
    relay = Relay((net.host_ip, anvil.port), ("127.0.0.1", anvil.port)) if net.isolated else None
    rpc_url = f"http://{net.host_ip}:{anvil.port}" if net.isolated else anvil.rpc_url
    oracle_url = f"http://{net.address('oracle')}:{free_port()}"
    public = deployed.with_overrides(rpc_url=rpc_url, oracle_url=oracle_url)  # what every machine is told
    operator = signer_for(contracts, "deployer")
    accounts = {role: Account.create() for role in ROLES if role != "oracle"}
    accounts["oracle"] = dev_account("oracle")  # the escrow's oracle, set at deployment
    for role, eth in FUNDING.items():
        operator.send_value(accounts[role].address, eth * 10**18)
    found = {role: Machine(role, public.with_overrides(data_dir=root / role), net, accounts[role]) for role in ROLES}
    found["unfunded"] = Account.create()  # a contributor with no machine and no ETH
    if net.isolated:  # from a role's namespace, this host's loopback (where Anvil listens) is out of reach
        probe = f"import socket; socket.create_connection(('127.0.0.1', {anvil.port}), 2)"
        assert (
            subprocess.run([*net.prefix("requester"), sys.executable, "-c", probe], capture_output=True).returncode != 0
        )
    processes = []
    try:
        processes.append(
            found["oracle"].start_oracle(["--host", net.address("oracle"), "--text-logs", "--account", "dev:oracle"])
        )
        found["processes"] = processes
        yield found
    finally:
        for proc in reversed(processes):
            proc.stop()
        if relay:
            relay.close()
        net.close()


def _adapter_folder(root: Path, demo_models) -> Path:
    """The demo astronomy adapter with a scaling of its own, so the weights set (base, adapter) is
    new to the chain (a set registers once; tests/e2e/test_full_flow.py registers the original)."""
    folder = root / "astronomy-adapter"
    shutil.copytree(demo_models.adapters["astronomy"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["lora_alpha"] += int.from_bytes(os.urandom(2), "big") / 2**20  # below 0.07: the same adapter, near enough
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder


def _dataset_folder(root: Path) -> Path:
    """The demo astronomy text (the demo adapter's training data), with a line of its own so its
    CID is new to the chain whatever else this session registered."""
    from tributa.config import REPO_ROOT

    folder = root / "astronomy-notes"
    folder.mkdir()
    for src in sorted((REPO_ROOT / "data" / "datasets" / "astronomy").glob("*.txt")):
        (folder / src.name).write_text(src.read_text())
    (folder / "provenance.txt").write_text(f"Collected for the separate-machines test, batch {os.urandom(6).hex()}.\n")
    return folder


def test_e2e__every_role_on_its_own_machine__full_flow_pays_everyone_to_the_wei(
    machines, contracts, demo_models, tmp_path
):
    m = machines
    w3, escrow, vault = contracts.w3, contracts.escrow.functions, contracts.vault.functions
    oracle, creator, publisher, requester, buyer = (
        m[r] for r in ("oracle", "creator", "publisher", "requester", "buyer")
    )
    agents = [m["agent1"], m["agent2"], m["agent3"]]
    watch = m["processes"]  # the fixture stops them all

    # The data creator registers a dataset from its own store; it reaches the oracle by upload.
    folder = _dataset_folder(tmp_path)
    out = creator.cli(
        "dataset",
        "register",
        str(folder),
        "--no-index",
        "--name",
        "astronomy-notes",
        "--contributor",
        f"{m['contributor'].address}={SHARES['contributor']}",
        "--contributor",
        f"{m['unfunded'].address}={SHARES['unfunded']}",
    )
    assert "warning" not in out.stderr, out.stderr
    dataset_id, dataset_cid = _match(r"dataset (\d+) registered: (\S+)", out.stdout).groups()
    dataset_id = int(dataset_id)

    # The publisher registers the base with one adapter, trained on that dataset; the adapter is uploaded.
    adapter_dir = _adapter_folder(tmp_path, demo_models)
    out = publisher.cli(
        "model",
        "register",
        str(demo_models.base_dir),
        "--name",
        "separate-gpt2",
        "--adapter",
        str(adapter_dir),
        "--dataset",
        f"{dataset_id}=10000",
        "--fee",
        MODEL_FEE,
    )
    assert "warning" not in out.stderr, out.stderr
    model_id = int(_match(r"model (\d+) registered", out.stdout).group(1))
    adapter_cid = _match(r"adapter astronomy-adapter: (\S+)", out.stdout).group(1)

    # Three agents, each holding only the base weights in its own dir, register for the model.
    for agent in agents:
        watch.append(agent.start_agent(["--model-dir", str(demo_models.base_dir), "--text-logs", "--threads", "1"]))

    # The publisher sells the model's revenue in an IMO; the buyer buys, the sale ends, the buyer finalizes.
    out = publisher.cli(
        "imo",
        "launch",
        "--model",
        str(model_id),
        "--name",
        "Separate GPT-2",
        "--symbol",
        "SEP",
        "--supply",
        str(IMO["supply"]),
        "--price",
        IMO["price"],
        "--soft-cap",
        IMO["soft_cap"],
        "--hard-cap",
        IMO["hard_cap"],
        "--duration-s",
        str(IMO["duration_s"]),
    )
    imo_id, token_address = _match(r"IMO (\d+) launched .* at (0x[0-9a-fA-F]{40})", out.stdout).groups()
    buyer.cli("imo", "buy", imo_id, "--eth", IMO["buy"])
    advance_time(w3, IMO["duration_s"] + 1)
    buyer.cli("imo", "finalize", imo_id)
    assert "claimed 200,000 tokens" in buyer.cli("imo", "claim", imo_id).stdout  # 0.2 ETH at 0.000001 each
    token = token_contract(contracts, token_address)
    # fees now go to the holders
    assert contracts.registry.functions.model(model_id).call().fee_receiver == token_address

    # The requester posts a public k=3 task and a private one once the three agents serve the model.
    deadline = time.monotonic() + 120
    while not all(model_id in escrow.agent_models(a.address).call() for a in agents):
        assert time.monotonic() < deadline and all(p.alive() for p in watch), "\n".join(p.log_tail() for p in watch)
        time.sleep(0.5)
    requester_credit = escrow.balance_of(requester.address).call()
    agent_credit = {a.address: escrow.balance_of(a.address).call() for a in agents}
    public = requester.json(
        "task",
        "submit",
        "--model",
        str(model_id),
        "--prompt",
        "The Sun is a star. It is",
        "--max-new-tokens",
        "16",
        "--k",
        "3",
        "-y",
    )
    private = requester.json(
        "task",
        "submit",
        "--model",
        str(model_id),
        "--prompt",
        "The Milky Way is",
        "--max-new-tokens",
        "16",
        "--private",
        "-y",
    )
    assert public["input_uploaded"] is True and private["input_uploaded"] is True
    task_ids = [public["task_id"], private["task_id"]]
    views = wait_until_final(contracts, task_ids, SETTLE_TIMEOUT_S, watch)
    assert [views[t].state for t in task_ids] == ["settled", "settled"], {t: views[t].failure for t in task_ids}
    pub, priv = views[public["task_id"]], views[private["task_id"]]
    assert set(pub.settlement["agents"]) == {a.address for a in agents}  # three distinct agents agreed
    assert len(priv.settlement["agents"]) == 1

    # The requester reads both results from its own dir: through the oracle's API, the sealed one opened with its key.
    shown = requester.json("task", "show", str(pub.task_id))
    assert shown["result_error"] is None and shown["result"]["kind"] == "generate" and shown["result"]["text"]
    assert shown["attribution"]["record_error"] is None
    assert shown["attribution"]["weights"] == [{"dataset_id": dataset_id, "weight_bps": 10_000}]
    opened = requester.json("task", "show", str(priv.task_id), "--private")
    assert opened["result_error"] is None and opened["result"]["kind"] == "generate"
    assert not _holds(requester, pub.result_cid)  # read through the API, not from a shared disk

    # Money: every settlement adds up; the agents and the requester were credited exactly that.
    for v in (pub, priv):
        s = v.settlement
        assert s["agent_fee"] + s["model_fee"] + s["data_share"] + s["protocol_fee"] + s["refund"] == v.fee
        assert s["model_fee"] == 10**15 and s["data_share"] > 0
    credited = sum(escrow.balance_of(a.address).call() - agent_credit[a.address] for a in agents)
    assert credited == pub.settlement["agent_fee"] + priv.settlement["agent_fee"]
    assert (
        escrow.balance_of(requester.address).call() - requester_credit
        == pub.settlement["refund"] + priv.settlement["refund"]
    )

    # Royalties: the whole data share went to the dataset; each contributor claims its share.
    data_share = pub.settlement["data_share"] + priv.settlement["data_share"]
    assert vault.revenue(dataset_id, 1).call() == data_share
    expected = {who: data_share * bps // 10_000 for who, bps in SHARES.items()}
    contributor = m["contributor"]
    shares = contributor.json("royalties", "show")
    assert shares["total_claimable_wei"] == str(expected["contributor"])
    with wallet_change(w3, contributor.address) as got:
        contributor.cli("royalties", "claim")
    assert got["received"] == expected["contributor"] and got["gas"] > 0
    unfunded = m["unfunded"].address
    assert w3.eth.get_balance(unfunded) == 0
    out = creator.cli("royalties", "claim", "--for", unfunded)
    assert "gas paid by" in out.stdout
    assert w3.eth.get_balance(unfunded) == expected["unfunded"]  # paid in full, no gas of its own

    # IMO revenue: both tasks' model fees went to the token; the buyer claims its pro-rata part.
    supply, held = token.functions.totalSupply().call(), token.functions.balanceOf(buyer.address).call()
    revenue = pub.settlement["model_fee"] + priv.settlement["model_fee"]
    with wallet_change(w3, buyer.address) as got:
        out = buyer.cli("imo", "claim", imo_id)
    assert token.functions.total_revenue_in().call() == revenue
    assert abs(got["received"] - revenue * held // supply) <= 1, (got, revenue, held, supply)
    assert got["received"] > 0

    # The publisher takes the sale's proceeds; an agent withdraws its fees, from their own machines.
    with wallet_change(w3, publisher.address) as got:
        publisher.cli("imo", "withdraw-proceeds", imo_id)
    assert got["received"] == parse_eth(IMO["buy"])
    first = agents[0]
    owed = escrow.balance_of(first.address).call()
    with wallet_change(w3, first.address) as got:
        first.cli("account", "withdraw")
    assert owed > 0 and got["received"] == owed and escrow.balance_of(first.address).call() == 0

    # The oracle's own store got everything by upload, and it indexed the dataset on arrival.
    pins = set(oracle.cli("store", "pins", account=False).stdout.split())
    assert {dataset_cid, adapter_cid, pub.input_cid, priv.input_cid} <= pins
    log = (oracle.settings.data_dir / "oracle.log").read_text()
    upload_line = _match(rf".*upload of {dataset_cid} for dataset:{dataset_id} by {creator.address}.*", log).group(0)
    assert f"indexed dataset {dataset_id} ({dataset_cid})" in log.split(upload_line, 1)[1]  # built from the upload
    # `dataset register` registers, then uploads: within the indexer's upload grace a registration
    # seen first is looked for again on every pass, without a warning. Nothing goes missing.
    missing = [
        line
        for line in log.splitlines()
        if "not in the" in line or "NotFound" in line
        if any(cid in line for cid in (dataset_cid, adapter_cid, pub.input_cid, priv.input_cid))
    ]
    assert missing == []
    assert "Traceback" not in log, log[-3000:]
    record = json.loads(_oracle_bytes(oracle, contracts, pub.attribution_cid))  # read as anyone reads it
    assert record["datasets"].get(dataset_cid) == dataset_id and dataset_id not in record["unindexed"]
    assert record["settlement"]["source"] in (
        "engine",
        "model_training_datasets",
    )  # no verbatim span: its training data
    # Each agent fetched the adapter from the oracle by CID, into its own dir.
    for agent in agents:
        assert (agent.settings.data_dir / "adapters" / adapter_cid).is_dir()
        assert f"adapter {adapter_cid} fetched" in (agent.settings.data_dir / "agent.log").read_text()


def _holds(machine: Machine, cid: str) -> bool:
    from tributa.store import open_store

    return open_store(machine.settings.store_dir).has(cid)


def _oracle_bytes(oracle: Machine, contracts, cid: str) -> bytes:
    """Content as anyone reads it from the oracle's API (each block re-hashed here)."""
    from tributa.content_api import ContentApi

    with ContentApi(oracle.settings.oracle_url, contracts.chain_id, contracts.escrow.address) as api:
        return api.get_bytes(cid)
