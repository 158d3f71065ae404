"""End-to-end task latency on Anvil with one-second blocks: post mined -> settlement mined.

The oracle and one agent run as `tributa … run` processes serving MiniLM; one warm-up
task loads the model first, so the figures exclude model load.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.chain import deployed_chain
from tributa.devnet import settings_for
from tributa.processes import start_agent, start_oracle
from tributa.publish import register_model
from tributa.store import open_store
from tributa.tasks import encode_input, post_task, wait_until_final

SAMPLES = 20
OPEN, SETTLED = 1, 2


def _wait_settled(contracts, task_id: int, watch, timeout_s: float = 120.0) -> None:
    """A tight poll of the task's on-chain state, so the measurement is not quantised."""
    deadline = time.monotonic() + timeout_s
    while contracts.escrow.functions.task(task_id).call().state == OPEN:
        if time.monotonic() > deadline or not all(p.alive() for p in watch):
            view = wait_until_final(contracts, [task_id], 0, watch)[task_id]
            raise RuntimeError(f"bench task {task_id} not settled: {view.state} {view.failure}")
        time.sleep(0.02)
    if contracts.escrow.functions.task(task_id).call().state != SETTLED:
        raise RuntimeError(f"bench task {task_id} was not settled")


def run(workdir: Path) -> dict[str, float]:
    from tributa.ml.embeddings import model_dir as minilm_dir

    workdir.mkdir(parents=True, exist_ok=True)
    with deployed_chain(workdir, block_time=1) as (node, contracts, s):
        settings = settings_for(node, workdir / "data", workdir / "deployments")
        store = open_store(settings.store_dir)
        model = register_model(
            contracts, s["publisher"], store, "bench-minilm", minilm_dir(), [], None, 10**15
        ).model_id
        oracle = start_oracle(settings, workdir / "oracle.log", ["--no-attribution", "--text-logs"])
        agent = start_agent(settings, workdir / "agent.log", ["--text-logs", "--model-dir", str(minilm_dir())])
        try:
            latencies = []
            for i in range(SAMPLES + 1):
                posted = post_task(contracts, s["requester"], store, model, encode_input(texts=[f"sample {i}"]))
                started = time.perf_counter()
                _wait_settled(contracts, posted.task_id, (oracle, agent))
                if i:  # the first task is the warm-up that loads the model
                    latencies.append(time.perf_counter() - started)
        finally:
            agent.stop()
            oracle.stop()
    return {
        "e2e_task_latency_s_p50": round(float(np.percentile(latencies, 50)), 3),
        "e2e_task_latency_s_p99": round(float(np.percentile(latencies, 99)), 3),
    }
