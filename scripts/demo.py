"""`make demo`: the whole protocol end to end on a fresh local Anvil node, with real models.

Starts Anvil and deploys with `ape run deploy`; data creators register three datasets
with their contributors; SmolLM2-135M-Instruct (converted once from its GGUF) and one LoRA
adapter per dataset (trained once, cached) are registered with their provenance; the
publisher launches an IMO for one model and two accounts buy it; the oracle and one compute
agent run as `tributa … run` processes; requesters post generation and embedding tasks with
escrowed ETH; the oracle verifies, attributes and settles; a contract (the example PromptBoard)
asks a question on-chain through AIOracle and stores the answer its callback delivers. It then
shows the attribution,
the royalties each contributor can claim, the token holders' revenue growing and claimed,
and pull payments. It prints what happened, writes demo-report.json and stops everything it
started.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field

from tributa import imo, prompt_board
from tributa.chain.accounts import FIRST_CONTRIBUTOR_INDEX, dev_account
from tributa.chain.contracts import Contracts, load_contracts
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
# Plain continuations SmolLM2-135M-Instruct completes sensibly, one in each adapter's domain.
PROMPTS = {
    "astronomy": "The Sun is a star. It is a ball of hot gas,",
    "cooking": "The main ingredients of bread are",
    "fables": "The moral of the story of the tortoise and the hare is",
}
IMO_MODEL = "astronomy"
SECOND_PROMPT = "The Milky Way is"
MAX_NEW_TOKENS = 20  # greedy on the CPU: about a second or two per task once the model is warm
IMO_BUYS = {"buyer": 5 * 10**17, "buyer2": 3 * 10**17}  # together they reach the hard cap
# A contract's question through AIOracle, on the fables model, with a short challenge window.
BOARD_MODEL = "fables"
BOARD_QUESTION = {"prompt": "The capital of France is", "max_new_tokens": 8}
BOARD_WINDOW_S = 5


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


@dataclass
class Demo:
    contracts: Contracts
    store: object
    report: dict = field(default_factory=dict)

    def signer(self, role_or_index) -> Signer:
        return Signer(self.contracts.w3, dev_account(role_or_index))

    def contributor(self, offset: int) -> Signer:
        return self.signer(FIRST_CONTRIBUTOR_INDEX + offset)


def register_datasets(demo: Demo, settings) -> dict[str, int]:
    step("data creators register three datasets (stored, indexed for attribution, registered)")
    from oracle.attribution.service import default_indexes

    indexes = default_indexes(settings)
    creator = demo.signer("creator")
    ids = {}
    for name, members in CONTRIBUTORS.items():
        pairs = sorted(((demo.contributor(o).address, bps) for o, bps in members), key=lambda p: int(p[0], 16))
        registered = register_dataset(
            demo.contracts,
            creator,
            demo.store,
            DATASETS_DIR / name,
            [a for a, _ in pairs],
            [b for _, b in pairs],
            "CC0-1.0",
            name,
            lambda cid, text: indexes.build(cid, text).token_count,
        )
        ids[name] = registered.dataset_id
        print(
            f"  dataset {registered.dataset_id} '{name}': {registered.content_cid}, "
            f"{registered.tokens_indexed:,} tokens, {len(pairs)} contributors"
        )
    return ids


def register_models(demo: Demo, dataset_ids: dict[str, int]):
    step(
        "SmolLM2-135M-Instruct and one LoRA adapter per dataset (converted and trained on the first run, cached after)"
    )
    from tributa.ml.embeddings import model_dir as minilm_dir
    from tributa.ml.smollm_adapters import ensure_smollm2_demo

    built = ensure_smollm2_demo(progress=lambda msg: print(f"  {msg}"))
    step("the model publisher registers the models with their provenance")
    publisher = demo.signer("publisher")
    models = {}
    for name in CONTRIBUTORS:
        # SmolLM2 saw none of the demo datasets; each adapter is trained on its own dataset alone.
        provenance = {dataset_ids[name]: 10_000}
        published = register_model(
            demo.contracts,
            publisher,
            demo.store,
            f"smollm2-{name}",
            built.base_dir,
            [built.adapters[name]],
            provenance,
            MODEL_FEE,
        )
        models[name] = published.model_id
        print(f"  model {published.model_id}: smollm2-{name} (SmolLM2-135M-Instruct + {name} adapter)")
    models["embed"] = register_model(
        demo.contracts, publisher, demo.store, "all-MiniLM-L6-v2", minilm_dir(), [], None, MODEL_FEE
    ).model_id
    print(f"  model {models['embed']}: all-MiniLM-L6-v2 (embeddings)")
    return models, [built.base_dir, *built.adapters.values(), minilm_dir()]


def launch_imo(demo: Demo, model_id: int) -> tuple[int, str]:
    step(f"Initial Model Offering: the publisher tokenizes model {model_id}; two accounts buy")
    imo_id, token, tx = imo.launch(
        demo.contracts,
        demo.signer("publisher"),
        model_id,
        "Tributa Astronomy SmolLM2",
        "ASTRO",
        supply_tokens=1_000_000,
        price_wei=10**12,
        soft_cap_wei=5 * 10**17,
        hard_cap_wei=8 * 10**17,
        duration_s=3600,
        publisher_share_bps=2000,
        vesting_s=180 * 24 * 3600,
    )
    print(
        f"  IMO {imo_id}: token ASTRO at {token}, 0.000001 ETH per token, soft cap 0.5 ETH, hard cap 0.8 ETH (gas {tx.gas_used})"
    )
    for role, value in IMO_BUYS.items():
        tokens, _ = imo.buy(demo.contracts, demo.signer(role), imo_id, value)
        print(f"  {role} pays {eth(value)} for {tokens / imo.TOKEN_UNIT:,.0f} ASTRO")
    imo.finalize(demo.contracts, demo.signer("buyer"), imo_id)
    for role in IMO_BUYS:
        imo.claim(demo.contracts, demo.signer(role), imo_id)
    view = imo.read_imo(demo.contracts, imo_id)
    receiver = demo.contracts.registry.functions.model(model_id).call().fee_receiver
    print(
        f"  sale {view.state}: raised {eth(view.raised)}; model {model_id}'s fees now go to the token ({receiver == token})"
    )
    return imo_id, token


def holder_revenue(demo: Demo, token: str) -> dict[str, int]:
    imo.flush_fees(demo.contracts, demo.signer("buyer"), token)  # the escrow's credit moves into the token
    t = imo.token_contract(demo.contracts, token)
    return {role: t.functions.claimable_revenue(demo.signer(role).address).call() for role in IMO_BUYS}


def run_tasks(demo: Demo, inputs: dict, models: dict, watch) -> dict:
    requester = demo.signer("requester")
    posted = {}
    for kind, payload in inputs.items():
        p = post_task(demo.contracts, requester, demo.store, models[kind.split("#")[0]], payload, deadline_s=1800)
        posted[kind] = p
        print(f"  task {p.task_id} ({kind}): fee {eth(p.fee)}, input {p.input_cid}")
    views = wait_until_final(demo.contracts, [p.task_id for p in posted.values()], SETTLE_TIMEOUT_S, watch)
    return {kind: views[p.task_id] for kind, p in posted.items()}


def describe_task(demo: Demo, kind: str, v) -> dict:
    s = v.settlement or {}
    receipt = demo.contracts.w3.eth.get_transaction_receipt(s["tx"]) if s else None
    output = json.loads(demo.store.get_bytes(v.result_cid)) if v.result_cid else {}
    attribution = json.loads(demo.store.get_bytes(v.attribution_cid)) if v.attribution_cid else {}
    split = attribution.get("settlement", {})
    weights = dict(zip(split.get("dataset_ids", []), split.get("weights_bps", []), strict=False))
    print(
        f"  task {v.task_id} ({kind}): {v.state}; agent {eth(s.get('agent_fee'))}, model {eth(s.get('model_fee'))}, "
        f"data {eth(s.get('data_share'))}, protocol {eth(s.get('protocol_fee'))}, refund {eth(s.get('refund'))}"
    )
    if output.get("kind") == "generate":
        print(f"    prompt: {PROMPTS.get(kind, SECOND_PROMPT)!r}")
        print(f"    output: {output['text'][:150]!r}")
    if weights:
        shown = ", ".join(f"dataset {d} {bps / 100:.1f}%" for d, bps in weights.items())
        print(f"    attribution ({split.get('source')}): {shown}")
    for span in ((attribution.get("record") or {}).get("spans") or [])[:2]:
        print(
            f"      verbatim span from dataset {attribution['datasets'].get(span['dataset_id'])}: {span['text'][:80]!r}"
        )
    return {
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
    }


def ask_from_a_contract(demo: Demo, model_id: int) -> dict:
    """The example consumer (contracts/examples/PromptBoard.vy) asks on-chain; the answer comes
    back by callback once the result is final."""
    step(f"a smart contract asks: PromptBoard puts a question to model {model_id} through AIOracle")
    publisher = demo.signer("publisher")
    publisher.transact(
        demo.contracts.ai_oracle.functions.set_challenge_window(model_id, BOARD_WINDOW_S), action="set window"
    )
    board = prompt_board.deploy(demo.contracts, demo.signer("deployer"), model_id)
    question = json.dumps(BOARD_QUESTION)
    asked = prompt_board.ask(board, demo.signer("requester"), question)
    print(
        f"  PromptBoard {board.address}: request {asked.request_id}, fee {eth(asked.fee)} "
        f"(gas {asked.tx.gas_used}); the input travels on-chain, no upload"
    )
    answer = prompt_board.wait_for_answer(board, asked.request_id, SETTLE_TIMEOUT_S)
    text = json.loads(answer)["text"] if answer[:1] == b"{" else answer.hex()
    print(
        f"  the oracle posted the agent's result; final after the model's {BOARD_WINDOW_S}s challenge window; "
        f"delivered to aiOracleCallback once"
    )
    print(f"    question: {BOARD_QUESTION['prompt']!r}")
    print(f"    answer stored by the contract: {text!r}")
    return {
        "board": board.address,
        "request_id": asked.request_id,
        "question": BOARD_QUESTION["prompt"],
        "answer": text,
    }


def show_royalties(demo: Demo) -> dict:
    step("royalties: what each data contributor can claim (pull payments from the RoyaltyVault)")
    royalties = {}
    offsets = sorted({o for members in CONTRIBUTORS.values() for o, _ in members})
    for offset in offsets:
        account = demo.contributor(offset)
        shares = shares_of(demo.contracts, account.address)
        claimable = sum(x.claimable for x in shares)
        royalties[account.address] = {"claimable_wei": claimable, "datasets": [x.dataset_id for x in shares]}
        print(f"  contributor {account.address}: datasets {[x.dataset_id for x in shares]}, claimable {eth(claimable)}")
    first = demo.contributor(offsets[0])
    claimed, txs = claim_all(demo.contracts, first)
    royalties[first.address]["claimed_wei"] = claimed
    print(f"  contributor {first.address} claims {eth(claimed)} in one transaction (gas {txs[0].gas_used})")
    return royalties


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
        demo = Demo(contracts, open_store(settings.store_dir))

        dataset_ids = register_datasets(demo, settings)
        models, model_dirs = register_models(demo, dataset_ids)
        imo_id, token = launch_imo(demo, models[IMO_MODEL])

        step("starting the oracle and one compute agent (one base model serving three adapters, and MiniLM)")
        oracle = start_oracle(settings, RUN_DIR / "oracle.log", ["--text-logs"])
        agent = start_agent(
            settings, RUN_DIR / "agent.log", ["--text-logs", *[a for d in model_dirs for a in ("--model-dir", str(d))]]
        )
        try:
            step(
                "requesters post tasks with escrowed ETH; the agent infers; the oracle verifies, attributes and settles"
            )
            inputs = {
                name: encode_input(prompt=prompt, max_new_tokens=MAX_NEW_TOKENS) for name, prompt in PROMPTS.items()
            }
            inputs["embed"] = encode_input(texts=["How far away is the Moon?", "A recipe for bread"])
            views = run_tasks(demo, inputs, models, (oracle, agent))
            revenue_after_first = holder_revenue(demo, token)
            step("a second task on the IMO model, so the token holders' revenue grows")
            more = run_tasks(
                demo,
                {f"{IMO_MODEL}#2": encode_input(prompt=SECOND_PROMPT, max_new_tokens=MAX_NEW_TOKENS)},
                models,
                (oracle, agent),
            )
            views.update(more)
            board = ask_from_a_contract(demo, models[BOARD_MODEL])
        finally:
            agent.stop()
            oracle.stop()

        step("results and attribution")
        report_tasks = [describe_task(demo, kind, v) for kind, v in views.items()]
        royalties = show_royalties(demo)

        step(f"IMO {imo_id}: token holders' share of model {models[IMO_MODEL]}'s fees")
        revenue_after_second = holder_revenue(demo, token)
        holders = {}
        for role in IMO_BUYS:
            who = demo.signer(role)
            _, claimed = imo.claim(demo.contracts, who, imo_id)
            holders[who.address] = {
                "claimable_after_task_1_wei": revenue_after_first[role],
                "claimable_after_task_2_wei": revenue_after_second[role],
                "claimed_wei": claimed,
            }
            print(
                f"  {role} {who.address}: claimable {eth(revenue_after_first[role])} -> "
                f"{eth(revenue_after_second[role])}, claimed {eth(claimed)}"
            )

        step("pull payments: the agent withdraws its fees")
        agent_signer = demo.signer("agent")
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
            "imo": {"imo_id": imo_id, "model": models[IMO_MODEL], "token": token, "holders": holders},
            "prompt_board": board,
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
