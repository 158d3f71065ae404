"""Faults while tasks flow, on a real stack: Anvil (`--state`, so a stopped node comes back with
its chain), a `tributa oracle run` process and `tributa agent run` processes on the project's tiny
GPT-2. Every task ends settled or refunded exactly once, the escrow balances, every process lives.

- a node outage: Anvil stopped for 20 s and restarted from its state file; the oracle logs the
  outage once per part that noticed it, and how long it lasted, with no traceback;
- chaos: the oracle restarted, the node stopped and brought back, an agent SIGSTOPped past its
  lease, all while tasks are posted and served.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from bench.crash_bench import audit
from bench.network import AGENT_ACCOUNTS, Network
from oracle.db import Job, JobState, database_url
from tributa.chain.accounts import dev_account
from tributa.chain.contracts import load_contracts
from tributa.chain.tx import Signer
from tributa.devnet import AnvilNode, anvil_binary, ape_deploy, port_in_use, settings_for
from tributa.errors import ConfigError
from tributa.publish import register_model
from tributa.store import open_store

STOPPED_AGENT = dev_account(AGENT_ACCOUNTS[0]).address  # net.agents[0]'s account
LEASE_S = "5"  # an unaccepted lease (the tiny model answers in ms, so none is accepted) lasts 5 s


class StatefulAnvil(AnvilNode):
    """Anvil with `--state FILE`: it dumps its chain (blocks included) on SIGTERM and loads it on
    start, so a restart keeps every block hash the oracle has ingested."""

    def __init__(self, state_path: Path, log_path: Path) -> None:
        super().__init__(log_path=log_path)
        self.state_path = state_path

    def start(self, timeout_s: float = 30.0) -> "StatefulAnvil":
        if port_in_use(self.port):
            raise ConfigError(f"port {self.port} is already in use")
        cmd = [anvil_binary(), "--port", str(self.port), "--host", "127.0.0.1", "--accounts", "20", "--balance", "10000",
               "--state", str(self.state_path)]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not port_in_use(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(f"anvil did not start (code {self.process.poll()})")
            time.sleep(0.05)
        return self


@contextmanager
def stateful_network(workdir: Path):
    from tributa.ml.models import ensure_demo_models

    base = ensure_demo_models(progress=lambda msg: None).base_dir
    node = StatefulAnvil(workdir / "anvil-state.json", workdir / "anvil.log").start()
    net = None
    try:
        settings = settings_for(node, workdir / "data", workdir / "deployments")
        ape_deploy(node.rpc_url, settings.deployments_dir)
        contracts = load_contracts(settings)
        roles = ("deployer", "oracle", "agent", "agent2", "requester", "creator", "publisher", "buyer", "buyer2")
        signers = {r: Signer(contracts.w3, dev_account(r)) for r in roles}
        store = open_store(settings.store_dir)
        model_id = register_model(contracts, signers["publisher"], store, "chaos-gpt2", base, [], None, 10**15).model_id
        net = Network(workdir, settings, contracts, store, signers, model_id, base,
                      ["--no-attribution", "--text-logs", "--lease-s", LEASE_S])
        net.node = node
        yield net
    finally:
        if net is not None:
            net.stop()
        node.stop()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with stateful_network(tmp_path_factory.mktemp("chaos")) as network:
        network.start_agents(2)
        network.start_oracle()
        network.wait_agents_ready()
        yield network


def _alive(net) -> None:
    for proc in [net.oracle, *net.agents]:
        assert proc.alive(), f"{proc.name} died:\n{proc.log_tail()}"


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _jobs_of(net, agent: str, state: str) -> int:
    """Jobs of `agent` in `state`, read from the oracle's own database."""
    engine = create_engine(database_url(net.settings.data_dir))
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(Job).where(func.lower(Job.agent) == agent.lower(), Job.state == state)
            ).scalar_one()
    finally:
        engine.dispose()


def _node_down(net, seconds: float) -> None:
    net.node.stop()  # SIGTERM: it writes its state file
    assert not port_in_use(net.node.port)
    time.sleep(seconds)
    net.node.start()


def test_node_outage__anvil_stopped_20s__oracle_logs_it_once_with_its_length_and_tasks_settle_after(net):
    assert net.wait_final(net.post(2), timeout_s=90) > 0
    oracle_log = net.oracle.log_path
    mark = len(oracle_log.read_text(errors="replace"))
    head = net.contracts.w3.eth.block_number

    _node_down(net, 20)

    assert net.contracts.w3.eth.block_number == head  # the chain came back, blocks and all
    assert net.wait_final(net.post(3), timeout_s=90) > 0
    time.sleep(1)
    _alive(net)
    during = oracle_log.read_text(errors="replace")[mark:]
    assert "Traceback" not in during, during
    warnings = [line for line in during.splitlines() if " WARNING " in line]
    # One line per part of the oracle that noticed (the ingestor, the chain clock, …), not one per pass.
    assert 1 <= len(warnings) <= 6, "\n".join(warnings)
    ended = re.findall(r"after an outage of ([0-9.]+)s|again after ([0-9.]+)s", during)
    assert ended and max(float(a or b) for a, b in ended) >= 15, during


def test_chaos__oracle_restart_node_outage_and_a_stopped_agent__every_task_final_once_and_books_balance(net):
    started = time.monotonic()
    stopped = net.agents[0]
    mark = len(stopped.log_path.read_text(errors="replace"))
    tasks = net.post(6)
    time.sleep(1.0)
    net.oracle.stop()  # a restart with tasks in flight
    net.start_oracle()
    tasks += net.post(6)
    time.sleep(0.5)
    _node_down(net, 8)  # settlements and leases in flight while the node is away

    def polling() -> bool:  # back from its backoff: a fresh oracle knows no agent until the node answers
        since = stopped.log_path.read_text(errors="replace")[mark:]
        return "poll failed" not in since or "polling again after" in since

    _wait_for(polling, 30, "the agent to poll again")
    time.sleep(1.0)  # inside its next long-poll, not between two
    os.kill(stopped.process.pid, signal.SIGSTOP)  # past its lease: its jobs expire and go to the other agent, or back to it
    tasks += net.post(6)
    _wait_for(lambda: _jobs_of(net, STOPPED_AGENT, JobState.LEASED) > 0, 20, "the stopped agent's open poll to lease a job")
    _wait_for(lambda: _jobs_of(net, STOPPED_AGENT, JobState.EXPIRED) > 0, 30, "the stopped agent's lease to expire")
    os.kill(stopped.process.pid, signal.SIGCONT)  # it hands in a result for an expired job: refused, dropped
    tasks += net.post(4)

    net.wait_final(tasks, timeout_s=150)

    result = audit(net.contracts, tasks)
    assert result.lost == 0 and result.double_settlements == 0
    assert result.settled + result.refunded == len(tasks)
    assert result.books_balance and result.agent_credits_match
    time.sleep(1)
    _alive(net)
    assert "dropped: oracle refused (409)" in stopped.log_path.read_text(errors="replace")
    print(f"chaos: {len(tasks)} tasks, {result.settled} settled, {result.refunded} refunded in {time.monotonic() - started:.0f}s")
