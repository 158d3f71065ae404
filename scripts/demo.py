"""`make demo`: the whole protocol end to end on a fresh local Anvil node, with real models.

Starts Anvil, deploys with `ape run deploy`, registers three datasets with their
contributors, trains the demo model and one LoRA adapter per dataset, registers the
models with their provenance, starts the oracle and one compute agent (as the CLI
would), posts generation and embedding tasks with escrowed ETH, waits for settlement,
then shows the attribution, the royalties each contributor can claim, and pull payments.
It prints what happened, writes demo-report.json and stops everything it started.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tributa.chain.accounts import FIRST_CONTRIBUTOR_INDEX, dev_account
from tributa.chain.contracts import load_contracts
from tributa.chain.tx import Signer
from tributa.cli.format import eth
from tributa.config import REPO_ROOT
from tributa.datasets import register_dataset
from tributa.devnet import AnvilNode, ape_deploy, free_port, port_in_use, settings_for
from tributa.errors import TributaError
from tributa.processes import start_agent, start_oracle
from tributa.publish import register_model
from tributa.royalties import claim_all, shares_of
from tributa.store import open_store
from tributa.tasks import encode_input, post_task, wait_until_final

RUN_DIR = REPO_ROOT / ".tributa" / "demo"
REPORT = REPO_ROOT / "demo-report.json"
DATASETS_DIR = REPO_ROOT / "data" / "datasets"
SETTLE_TIMEOUT_S = 600
MODEL_FEE = 10**15  # 0.001 ETH per task to the model's fee receiver
# Contributors of each demo dataset (dev account offsets from FIRST_CONTRIBUTOR_INDEX) and their shares.
CONTRIBUTORS = {
    "astronomy": [(0, 5000), (1, 3000), (2, 2000)],
    "cooking": [(2, 4000), (3, 4000), (4, 2000)],
    "fables": [(4, 2500), (5, 7500)],
}
PROMPTS = {
    "astronomy": "The Sun is a star. It is a ball of hot gas,",
    "cooking": "Step one. Mix the flour, yeast and salt",
    "fables": "One hot summer day a hungry Fox",
}


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def contributor(offset: int) -> Signer:
    return dev_account(FIRST_CONTRIBUTOR_INDEX + offset)


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
        w3 = contracts.w3

        step("data creators register three datasets (stored, indexed for attribution, registered)")
        from oracle.attribution.service import default_indexes

        indexes = default_indexes(settings)
        creator = Signer(w3, dev_account("creator"))
        dataset_ids = {}
        for name, members in CONTRIBUTORS.items():
            pairs = sorted(((contributor(o).address, bps) for o, bps in members), key=lambda p: int(p[0], 16))
            registered = register_dataset(
                contracts, creator, store, DATASETS_DIR / name, [a for a, _ in pairs], [b for _, b in pairs],
                "CC-BY-4.0", name, lambda cid, text: indexes.build(cid, text).token_count,
            )
            dataset_ids[name] = registered.dataset_id
            print(f"  dataset {registered.dataset_id} '{name}': {registered.content_cid}, "
                  f"{registered.tokens_indexed:,} tokens, {len(pairs)} contributors")

        step("training the demo model and one LoRA adapter per dataset (cached after the first run)")
        from tributa.ml.embeddings import model_dir as minilm_dir
        from tributa.ml.models import ensure_demo_models

        demo = ensure_demo_models(progress=lambda msg: print(f"  {msg}"))

        step("the model publisher registers the models with their provenance")
        publisher = Signer(w3, dev_account("publisher"))
        models = {}
        for name in CONTRIBUTORS:
            # The base saw every dataset; the adapter specialises on its own.
            provenance = {dataset_ids[n]: (6000 if n == name else 2000) for n in CONTRIBUTORS}
            published = register_model(contracts, publisher, store, f"tributa-gpt2-{name}", demo.base_dir,
                                        [demo.adapters[name]], provenance, MODEL_FEE)
            models[name] = published.model_id
            print(f"  model {published.model_id}: tributa-gpt2-{name} (base + {name} adapter)")
        models["embed"] = register_model(contracts, publisher, store, "all-MiniLM-L6-v2", minilm_dir(), [], None, MODEL_FEE).model_id
        print(f"  model {models['embed']}: all-MiniLM-L6-v2 (embeddings)")

        step("starting the oracle and one compute agent (serving one base model with three adapters)")
        model_dirs = [demo.base_dir, *demo.adapters.values(), minilm_dir()]
        oracle = start_oracle(settings, RUN_DIR / "oracle.log", ["--text-logs"])
        agent = start_agent(settings, RUN_DIR / "agent.log", ["--text-logs", *[a for d in model_dirs for a in ("--model-dir", str(d))]])
        try:
            step("requesters post tasks with escrowed ETH")
            requester = Signer(w3, dev_account("requester"))
            inputs = {name: encode_input(prompt=prompt, max_new_tokens=32) for name, prompt in PROMPTS.items()}
            inputs["embed"] = encode_input(texts=["How far away is the Moon?", "A recipe for bread"])
            posted = {}
            for kind, payload in inputs.items():
                p = post_task(contracts, requester, store, models[kind], payload, deadline_s=1800)
                posted[kind] = p
                print(f"  task {p.task_id} (model {models[kind]}, {kind}): fee {eth(p.fee)}, input {p.input_cid}")

            step("the agent infers, the oracle verifies, attributes and settles")
            views = wait_until_final(contracts, [p.task_id for p in posted.values()], SETTLE_TIMEOUT_S, (oracle, agent))
        finally:
            agent.stop()
            oracle.stop()

        step("results and attribution")
        report_tasks = []
        for kind, p in posted.items():
            v = views[p.task_id]
            s = v.settlement or {}
            receipt = w3.eth.get_transaction_receipt(s["tx"]) if s else None
            output = json.loads(store.get_bytes(v.result_cid)) if v.result_cid else {}
            attribution = json.loads(store.get_bytes(v.attribution_cid)) if v.attribution_cid else {}
            split = attribution.get("settlement", {})
            weights = dict(zip(split.get("dataset_ids", []), split.get("weights_bps", [])))
            print(f"  task {v.task_id} ({kind}): {v.state}; agent {eth(s.get('agent_fee'))}, model {eth(s.get('model_fee'))}, "
                  f"data {eth(s.get('data_share'))}, protocol {eth(s.get('protocol_fee'))}, refund {eth(s.get('refund'))}")
            if output.get("kind") == "generate":
                print(f"    prompt: {PROMPTS[kind]!r}")
                print(f"    output: {output['text'][:150]!r}")
            if weights:
                shown = ", ".join(f"dataset {d} {bps / 100:.1f}%" for d, bps in weights.items())
                print(f"    attribution ({split.get('source')}): {shown}")
            for span in ((attribution.get("record") or {}).get("spans") or [])[:2]:
                print(f"      verbatim span from dataset {attribution['datasets'].get(span['dataset_id'])}: {span['text'][:80]!r}")
            report_tasks.append({
                "task_id": v.task_id,
                "kind": kind,
                "state": v.state,
                "model": v.model_id,
                "result_cid": v.result_cid,
                "attribution_cid": v.attribution_cid,
                "attribution_weights_bps": {str(k): w for k, w in weights.items()},
                "settle_tx": s.get("tx"),
                "agent_paid_wei": s.get("agent_fee"),
                "model_fee_wei": s.get("model_fee"),
                "data_share_wei": s.get("data_share"),
                "protocol_fee_wei": s.get("protocol_fee"),
                "refund_wei": s.get("refund"),
                "gas_used": receipt.gasUsed if receipt else None,
            })

        step("royalties: what each data contributor can claim (pull payments from the RoyaltyVault)")
        royalties = {}
        offsets = sorted({o for members in CONTRIBUTORS.values() for o, _ in members})
        for offset in offsets:
            account = contributor(offset)
            shares = shares_of(contracts, account.address)
            claimable = sum(x.claimable for x in shares)
            royalties[account.address] = {"claimable_wei": claimable, "datasets": [x.dataset_id for x in shares]}
            print(f"  contributor {account.address}: datasets {[x.dataset_id for x in shares]}, claimable {eth(claimable)}")
        first = Signer(w3, contributor(offsets[0]))
        claimed, txs = claim_all(contracts, first)
        royalties[first.address]["claimed_wei"] = claimed
        print(f"  contributor {first.address} claims {eth(claimed)} in one transaction (gas {txs[0].gas_used})")

        step("pull payments: the agent withdraws its fees")
        agent_signer = Signer(w3, dev_account("agent"))
        owed = contracts.escrow.functions.balance_of(agent_signer.address).call()
        tx = agent_signer.transact(contracts.escrow.functions.withdraw(), action="withdraw")
        print(f"  agent {agent_signer.address} withdrew {eth(owed)} (gas {tx.gas_used})")

        report = {
            "chain_id": contracts.chain_id,
            "addresses": contracts.deployment.addresses,
            "datasets": {str(i): name for name, i in dataset_ids.items()},
            "models": {str(i): name for name, i in models.items()},
            "tasks": report_tasks,
            "royalties": royalties,
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
