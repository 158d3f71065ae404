"""A local network for load and crash runs: Anvil, contracts, a trivial model, one oracle, several agents.

The model is the project's 0.7M-parameter GPT-2 asked for one new token (about 10 ms), so the
figures measure the oracle, not inference. Each agent is its own `tributa agent run` process
with its own dev account, running jobs in-process (`--no-sandbox`: the sandbox's fork per job
is measured by the agent tests); the oracle is a `tributa oracle run` process that can be
killed with SIGKILL and restarted on the same state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.chain import deployed_chain
from tributa.chain.accounts import DEV_ROLES
from tributa.config import Settings
from tributa.devnet import settings_for
from tributa.processes import ManagedProcess, start_agent, start_oracle
from tributa.publish import register_model
from tributa.store import open_store
from tributa.tasks import encode_input, post_task

AGENT_ACCOUNTS = (2, 3, 16, 17, 18, 19)  # funded dev accounts that play no other part
FINAL = (2, 4)  # on-chain SETTLED, REFUNDED


@dataclass
class Network:
    workdir: Path
    settings: Settings
    contracts: object
    store: object
    signers: dict
    model_id: int
    model_dir: Path
    oracle_args: list[str]
    poll_interval_s: float = 0.05
    oracle: ManagedProcess | None = None
    agents: list[ManagedProcess] = field(default_factory=list)
    oracle_starts: int = 0

    def start_oracle(self) -> ManagedProcess:
        self.oracle_starts += 1
        self.oracle = start_oracle(
            self.settings,
            self.workdir / f"oracle-{self.oracle_starts}.log",
            self.oracle_args,
            env={"TRIBUTA_POLL_INTERVAL": str(self.poll_interval_s)},
        )
        return self.oracle

    def start_agents(self, count: int) -> None:
        for index in AGENT_ACCOUNTS[:count]:
            self.agents.append(
                start_agent(
                    self.settings,
                    self.workdir / f"agent-{index}.log",
                    [
                        "--text-logs",
                        "--no-sandbox",
                        "--threads",
                        "1",
                        "--account",
                        f"dev:{index}",
                        "--model-dir",
                        str(self.model_dir),
                    ],
                )
            )

    def post(self, count: int, deadline_s: int = 1800) -> list[int]:
        requester = self.signers["requester"]
        return [
            post_task(
                self.contracts,
                requester,
                self.store,
                self.model_id,
                encode_input(prompt=f"task {i} {time.time()}", max_new_tokens=1),
                deadline_s=deadline_s,
            ).task_id
            for i in range(count)
        ]

    def states(self, task_ids: list[int]) -> dict[int, int]:
        escrow = self.contracts.escrow.functions
        return {t: escrow.task(t).call().state for t in task_ids}

    def wait_final(self, task_ids: list[int], timeout_s: float) -> float:
        """Seconds until every task is settled or refunded (raises on timeout).

        Follows TaskSettled / TaskRefunded logs block by block (one getLogs per event and pass:
        asking every pending task's state each pass would load the same two cores the oracle and
        agents share), then confirms every task's final state with the contract itself."""
        started = time.monotonic()
        pending = set(task_ids)
        escrow = self.contracts.escrow
        cursor = self.contracts.deployment.block_number
        while pending:
            head = self.contracts.w3.eth.block_number
            if head >= cursor:
                for event in (escrow.events.TaskSettled, escrow.events.TaskRefunded):
                    pending -= {e["args"]["task_id"] for e in event.get_logs(from_block=cursor, to_block=head)}
                cursor = head + 1
            if time.monotonic() - started > timeout_s:
                tail = self.oracle.log_tail() if self.oracle else ""
                raise RuntimeError(f"{len(pending)} tasks not final after {timeout_s:.0f}s; oracle log:\n{tail}")
            if pending:
                time.sleep(0.1)
        elapsed = time.monotonic() - started
        unfinished = {t: s for t, s in self.states(task_ids).items() if s not in FINAL}
        if unfinished:
            raise RuntimeError(f"tasks with a final event but not final on-chain: {unfinished}")
        return elapsed

    def wait_agents_ready(self, timeout_s: float = 180) -> None:
        """Agents are up once each has polled the oracle (they register first, then poll)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all("polling" in a.log_tail(200) for a in self.agents):
                return
            time.sleep(0.5)
        raise RuntimeError("agents did not start: " + "\n".join(a.log_tail() for a in self.agents))

    def stop(self) -> None:
        for proc in [*self.agents, *([self.oracle] if self.oracle else [])]:
            proc.stop()


@contextmanager
def local_network(workdir: Path, oracle_args: list[str] = ("--no-attribution", "--text-logs")) -> Iterator[Network]:
    from tributa.ml.models import ensure_demo_models

    workdir.mkdir(parents=True, exist_ok=True)
    base = ensure_demo_models(progress=lambda msg: None).base_dir
    with deployed_chain(workdir) as (node, contracts, signers):
        settings = settings_for(node, workdir / "data", workdir / "deployments")
        store = open_store(settings.store_dir)
        model_id = register_model(
            contracts, signers["publisher"], store, "trivial-gpt2", base, [], None, 10**15
        ).model_id
        net = Network(workdir, settings, contracts, store, signers, model_id, base, list(oracle_args))
        try:
            yield net
        finally:
            net.stop()


def oracle_healthy(settings: Settings) -> bool:
    try:
        return httpx.get(settings.oracle_url + "/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


assert "agent" in DEV_ROLES  # AGENT_ACCOUNTS starts at the dev 'agent' role's index
