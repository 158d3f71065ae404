"""Crash safety and throughput of the oracle on a local network (automine, batched, MiniLM, several agents).

Crash run: post N tasks, then SIGKILL the oracle at random moments and restart it on the same
database, until every task is final. The chain is the judge: every task must be settled exactly
once or refunded, the escrow's books must balance, and every agent's credit must equal the
sum of its TaskSettled payments.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.network import local_network

CRASH_TASKS = 200
CRASH_KILLS = 6
THROUGHPUT_TASKS = 200
AGENTS = 3


@dataclass(frozen=True)
class Audit:
    tasks: int
    settled: int
    refunded: int
    lost: int
    double_settlements: int
    books_balance: bool
    agent_credits_match: bool


def audit(contracts, task_ids: list[int]) -> Audit:
    escrow = contracts.escrow
    start = contracts.deployment.block_number
    settled_logs = escrow.events.TaskSettled.get_logs(from_block=start)
    refunded_logs = escrow.events.TaskRefunded.get_logs(from_block=start)
    settles = Counter(e["args"]["task_id"] for e in settled_logs)
    refunds = Counter(e["args"]["task_id"] for e in refunded_logs)
    states = {t: escrow.functions.task(t).call().state for t in task_ids}
    lost = sum(1 for t in task_ids if states[t] not in (2, 4) or settles[t] + refunds[t] != 1)
    double = sum(1 for t in task_ids if settles[t] > 1 or refunds[t] > 1)
    f = escrow.functions
    held = contracts.w3.eth.get_balance(escrow.address)
    books = held == f.total_open_fees().call() + f.total_credited().call() + f.total_staked().call()
    paid: Counter = Counter()
    for e in settled_logs:
        agents = e["args"]["agents"]
        for agent in agents:
            paid[agent] += e["args"]["agent_fee"] // len(agents)
    credits_match = all(f.balance_of(agent).call() == amount for agent, amount in paid.items())
    return Audit(
        len(task_ids),
        sum(s == 2 for s in states.values()),
        sum(s == 4 for s in states.values()),
        lost,
        double,
        books,
        credits_match,
    )


def run_crash(
    workdir: Path, tasks: int = CRASH_TASKS, kills: int = CRASH_KILLS, agents: int = AGENTS, seed: int = 7
) -> Audit:
    rng = random.Random(seed)
    with local_network(workdir) as net:
        net.start_agents(agents)
        net.start_oracle()
        net.wait_agents_ready()
        task_ids = net.post(tasks)
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 2.5))
            net.oracle.kill9()
            net.start_oracle()
        net.wait_final(task_ids, timeout_s=600)
        return audit(net.contracts, task_ids)


def run_throughput(workdir: Path, tasks: int = THROUGHPUT_TASKS, agents: int = AGENTS) -> float:
    """Tasks settled per second: all posted while the oracle is down, timed from the moment its API
    answers to the last settlement, with the agents already warm."""
    with local_network(workdir) as net:
        net.start_agents(agents)
        net.start_oracle()
        net.wait_agents_ready()
        net.wait_final(net.post(1), timeout_s=300)  # warm-up: models loaded, caches primed
        net.oracle.stop()
        task_ids = net.post(tasks)
        net.start_oracle()  # returns once its API answers: the clock starts with a working oracle
        return tasks / net.wait_final(task_ids, timeout_s=600)


def run(workdir: Path) -> dict[str, float]:
    result = run_crash(workdir / "crash")
    rate = run_throughput(workdir / "throughput")
    return {
        "crash_test_tasks": float(result.tasks),
        "crash_test_tasks_lost": float(result.lost),
        "crash_test_double_settlements": float(result.double_settlements),
        "oracle_settled_tasks_per_s": round(rate, 2),
    }
