"""`make demo`: the whole protocol end to end on a fresh local Anvil node, with real models.

Starts Anvil, deploys with `ape run deploy`, registers the models, starts the oracle and
one compute agent (as the CLI would), posts tasks with escrowed ETH, waits for them to
settle, prints what happened and writes demo-report.json. It stops everything it started.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tributa.chain.accounts import dev_account
from tributa.chain.contracts import load_contracts
from tributa.chain.tx import Signer
from tributa.cli.format import eth
from tributa.config import REPO_ROOT
from tributa.devnet import AnvilNode, ape_deploy, free_port, port_in_use, settings_for
from tributa.errors import TributaError
from tributa.processes import start_agent, start_oracle
from tributa.publish import register_model
from tributa.store import open_store
from tributa.tasks import encode_input, post_task, wait_until_final

RUN_DIR = REPO_ROOT / ".tributa" / "demo"
REPORT = REPO_ROOT / "demo-report.json"
SETTLE_TIMEOUT_S = 300


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    port = 8545 if not port_in_use(8545) else free_port()
    step(f"starting a local Anvil node on port {port}")
    with AnvilNode(port=port, log_path=RUN_DIR / "anvil.log") as node:
        settings = settings_for(node, RUN_DIR / "data", REPO_ROOT / "deployments")
        step("deploying the contracts (ape run deploy)")
        ape_deploy(node.rpc_url, settings.deployments_dir)
        contracts = load_contracts(settings)
        for name, address in contracts.deployment.addresses.items():
            print(f"  {name:<20} {address}")
        store = open_store(settings.store_dir)

        step("building the demo models (cached after the first run)")
        from compute_agent.bootstrap import default_model_dirs
        from tributa.ml.embeddings import model_dir as minilm_dir
        from tributa.ml.models import ensure_demo_models

        demo = ensure_demo_models(progress=lambda msg: print(f"  {msg}"))
        model_dirs = default_model_dirs(progress=lambda msg: None)

        step("registering models in the DataRegistry")
        publisher = Signer(contracts.w3, dev_account("publisher"))
        fee = 10**15  # 0.001 ETH per task to the model's fee receiver
        models = {}
        first_adapter = sorted(demo.adapters)[0]
        gen = register_model(contracts, publisher, store, f"tributa-gpt2-{first_adapter}", demo.base_dir,
                             [demo.adapters[first_adapter]], None, fee)
        models["generate"] = gen.model_id
        emb = register_model(contracts, publisher, store, "all-MiniLM-L6-v2", minilm_dir(), [], None, fee)
        models["embed"] = emb.model_id
        for kind, model_id in models.items():
            print(f"  model {model_id}: {kind}")

        step("starting the oracle and one compute agent")
        oracle = start_oracle(settings, RUN_DIR / "oracle.log", ["--no-attribution"])
        agent = start_agent(settings, RUN_DIR / "agent.log", [*sum((["--model-dir", str(p)] for p in model_dirs), [])])
        try:
            step("posting tasks with escrowed ETH")
            requester = Signer(contracts.w3, dev_account("requester"))
            inputs = {
                "generate": encode_input(prompt="The stars", max_new_tokens=24),
                "embed": encode_input(texts=["How far away is the Moon?", "A recipe for bread"]),
            }
            posted = {}
            for kind, payload in inputs.items():
                p = post_task(contracts, requester, store, models[kind], payload, deadline_s=900)
                posted[kind] = p
                print(f"  task {p.task_id} ({kind}): fee {eth(p.fee)}, input {p.input_cid}")

            step("waiting for the agent to infer and the oracle to settle")
            views = wait_until_final(contracts, [p.task_id for p in posted.values()], SETTLE_TIMEOUT_S, (oracle, agent))
        finally:
            agent.stop()
            oracle.stop()

        step("results")
        report_tasks = []
        for kind, p in posted.items():
            v = views[p.task_id]
            s = v.settlement or {}
            receipt = contracts.w3.eth.get_transaction_receipt(s["tx"]) if s else None
            output = store.get_bytes(v.result_cid).decode() if v.result_cid else ""
            print(f"  task {v.task_id} ({kind}): {v.state}; agent {eth(s.get('agent_fee'))}, "
                  f"model {eth(s.get('model_fee'))}, protocol {eth(s.get('protocol_fee'))}, refund {eth(s.get('refund'))}")
            print(f"    result {v.result_cid}: {output[:160]}")
            report_tasks.append({
                "task_id": v.task_id,
                "kind": kind,
                "state": v.state,
                "model": v.model_id,
                "result_cid": v.result_cid,
                "settle_tx": s.get("tx"),
                "agent_paid_wei": s.get("agent_fee"),
                "model_fee_wei": s.get("model_fee"),
                "protocol_fee_wei": s.get("protocol_fee"),
                "data_share_wei": s.get("data_share"),
                "refund_wei": s.get("refund"),
                "gas_used": receipt.gasUsed if receipt else None,
            })

        step("pull payments: the agent withdraws its fees")
        agent_signer = Signer(contracts.w3, dev_account("agent"))
        owed = contracts.escrow.functions.balance_of(agent_signer.address).call()
        tx = agent_signer.transact(contracts.escrow.functions.withdraw(), action="withdraw")
        print(f"  agent {agent_signer.address} withdrew {eth(owed)} (gas {tx.gas_used})")

        report = {
            "chain_id": contracts.chain_id,
            "addresses": contracts.deployment.addresses,
            "tasks": report_tasks,
        }
        REPORT.write_text(json.dumps(report, indent=2))
        step(f"wrote {REPORT.relative_to(REPO_ROOT)}; stopping the node")
    settled = sum(t["state"] == "settled" for t in report_tasks)
    print(f"\ndemo done: {settled}/{len(report_tasks)} tasks settled")
    return 0 if settled == len(report_tasks) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TributaError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        sys.exit(1)
