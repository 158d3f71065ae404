"""AIOracle gas from real Anvil receipts (the ape deployment; medians over repeats).

* gas_request_callback: an EOA calls AIOracle.requestCallback with a 50-byte input, gas limit
  100,000 and 3 bytes of callback data (the boa figure's call, docs/AI_ORACLE.md);
  gas_prompt_board_ask: the same 50-byte question through PromptBoard.ask (the board also
  stores the question and its asker; no callback data).
* gas_settle_with_callback: the oracle's fulfill of a W = 0 request (k = 1, one agent paid, no
  datasets), which settles the escrow task and calls PromptBoard back (storing a 5-byte
  answer); gas_settle_callback_own is the callback's own gas (the CALL's gasUsed in a
  callTracer trace) and gas_settle_excluding_callback the rest.
* gas_challenge (W = 600 s, a roster of 4, so all 4 candidates are drawn), gas_resolve_upheld
  (2 verdicts) and gas_resolve_overturned (3 verdicts, the original agent slashed), each with
  the board's callback; their _excluding_callback twins subtract the callback's own gas.
* gas_post_verdict: a committee member posting its own verdict (AICommittee.post_verdict), as
  agents do for each duty (compute_agent/duties.py), paid from the member's balance.

Every figure is in steady state: a request was settled before, and another one stays open, so
no running total goes from zero to non-zero in a measured transaction.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.chain import deployed_chain, median, register_agent, register_model
from compute_agent.registration import join_committees
from tributa import prompt_board
from tributa.chain.accounts import FIRST_CONTRIBUTOR_INDEX, dev_account
from tributa.chain.eip712 import sign_result
from tributa.chain.events import first_event
from tributa.chain.tx import Signer, TxResult
from tributa.store import cid_of_bytes, cid_to_digest

REPEATS = 3
PROMPT = b"What is the capital of France? Answer in one word."  # 50 bytes
ANSWER, WRONG = b"Paris", b"Lyon"
EOA_GAS_LIMIT = 100_000
AGENT_FEE = 10**15
COMMITTEE = 4  # roster members: COMMITTEE_SIZE (3) + 1 original agent, all drawn


def file_digest(data: bytes) -> bytes:
    """What AIOracle names an output by: the digest of its `ipfs add` CID."""
    return cid_to_digest(cid_of_bytes(data))


def callback_gas(contracts, tx: TxResult, callback: str) -> int:
    """The callee's own gas of the delivery CALL to `callback` (callTracer's gasUsed)."""
    trace = contracts.w3.provider.make_request("debug_traceTransaction", [tx.tx_hash, {"tracer": "callTracer"}])[
        "result"
    ]
    found = []

    def walk(frame):
        if frame.get("to", "").lower() == callback.lower():
            found.append(int(frame["gasUsed"], 16))
        for sub in frame.get("calls", []):
            walk(sub)

    walk(trace)
    if len(found) != 1:
        raise RuntimeError(f"expected one call to {callback} in {tx.tx_hash}, found {len(found)}")
    return found[0]


def settlement_bytes(contracts, agent: Signer, rid: int, output: bytes, agent_fee: int = AGENT_FEE) -> bytes:
    """A k = 1 settlement of request `rid` (no datasets) whose result is `output`, signed and paid
    to `agent`, as AIOracle.fulfill takes it: abi_encode(s), escrow.settle's calldata without its
    selector."""
    digest = file_digest(output)
    sig = sign_result(agent.account, contracts.chain_id, contracts.escrow.address, rid, digest)
    s = (rid, digest, os.urandom(32), [agent.address], [sig], agent_fee, [], [], [])
    return bytes.fromhex(contracts.escrow.encode_abi("settle", args=[s])[10:])


class Bench:
    def __init__(self, contracts, s: dict[str, Signer]) -> None:
        self.c = contracts
        self.s = s
        self.oracle = contracts.ai_oracle.functions
        self.agent = s["agent"]
        self.fast = register_model(contracts, s["publisher"])  # W = 0
        self.slow = register_model(contracts, s["publisher"])  # the default W = 600 s
        s["publisher"].transact(self.oracle.set_challenge_window(self.fast, 0))
        # the original agent is slashed once per overturn: stake well above the minimum
        register_agent(contracts, self.agent, [self.fast, self.slow])
        self.agent.transact(
            contracts.escrow.functions.add_stake(), value=10 * contracts.escrow.functions.min_stake().call()
        )
        self.members = [Signer(contracts.w3, dev_account(FIRST_CONTRIBUTOR_INDEX + i)) for i in range(COMMITTEE)]
        for m in self.members:
            register_agent(contracts, m, [self.slow])
            join_committees(contracts, m, [self.slow])
        self.boards = {model: prompt_board.deploy(contracts, s["deployer"], model) for model in (self.fast, self.slow)}

    def ask(self, model: int) -> tuple[int, TxResult]:
        asked = prompt_board.ask(self.boards[model], self.s["requester"], PROMPT)
        return asked.request_id, asked.tx

    def fulfill(self, rid: int, output: bytes = ANSWER) -> tuple[bytes, TxResult]:
        encoded = settlement_bytes(self.c, self.agent, rid, output)
        return encoded, self.s["oracle"].transact(self.oracle.fulfill(rid, output, False, encoded, b""))

    def challenge(self, rid: int) -> tuple[list[str], TxResult]:
        tx = self.s["buyer"].transact(self.oracle.challenge(rid), value=self.oracle.challenge_bond().call())
        return list(first_event(self.c.ai_oracle, "Challenged", tx.receipt)["candidates"]), tx

    def resolve(
        self, rid: int, candidates: list[str], encoded: bytes, digest: bytes, n: int, output: bytes
    ) -> TxResult:
        committee = self.c.committee.functions.committee_of(candidates, [self.agent.address]).call()
        by_address = {m.address.lower(): m for m in self.members}
        verdicts = []
        for address in committee[:n]:
            account = by_address[address.lower()].account
            verdicts.append(
                (address, digest, sign_result(account, self.c.chain_id, self.c.escrow.address, rid, digest))
            )
        return self.s["buyer2"].transact(self.oracle.resolve(rid, candidates, encoded, verdicts, output, False, b""))


def run(workdir: Path) -> dict[str, float]:
    workdir.mkdir(parents=True, exist_ok=True)
    with deployed_chain(workdir) as (_node, contracts, s):
        b = Bench(contracts, s)
        fast_board, slow_board = b.boards[b.fast].address, b.boards[b.slow].address
        # steady state: one request settled before, one left open throughout
        rid, _ = b.ask(b.fast)
        b.fulfill(rid)
        b.ask(b.fast)

        fee = b.oracle.estimate_fee(b.fast, EOA_GAS_LIMIT).call()
        requests = [
            s["requester"]
            .transact(b.oracle.requestCallback(b.fast, PROMPT, fast_board, EOA_GAS_LIMIT, b"ctx"), value=fee)
            .gas_used
            for _ in range(REPEATS)
        ]
        asks, settles, settle_cb = [], [], []
        for _ in range(REPEATS):
            rid, tx = b.ask(b.fast)
            asks.append(tx.gas_used)
            _, tx = b.fulfill(rid)
            settles.append(tx.gas_used)
            settle_cb.append(callback_gas(contracts, tx, fast_board))
            assert prompt_board.answer(b.boards[b.fast], rid) == ANSWER

        def challenged(outcome: str) -> tuple[int, int, int]:
            """A provisional request challenged and resolved: (challenge gas, resolve gas, its callback's)."""
            rid, _ = b.ask(b.slow)
            encoded, _ = b.fulfill(rid)
            candidates, challenge_tx = b.challenge(rid)
            output, n = (ANSWER, 2) if outcome == "upheld" else (WRONG, 3)
            tx = b.resolve(rid, candidates, encoded, file_digest(output), n, output)
            if outcome == "overturned":
                assert first_event(contracts.escrow, "AgentSlashed", tx.receipt)["agent"] == b.agent.address
            assert prompt_board.answer(b.boards[b.slow], rid) == output
            return challenge_tx.gas_used, tx.gas_used, callback_gas(contracts, tx, slow_board)

        # warm-up: every member, the original agent and the challenger credited once before
        for outcome in ("upheld", "overturned") * 2:
            challenged(outcome)
        rounds = {outcome: [challenged(outcome) for _ in range(REPEATS)] for outcome in ("upheld", "overturned")}

        def posted_verdict() -> int:
            """A committee member posting its own verdict (what an agent pays per duty)."""
            rid, _ = b.ask(b.slow)
            b.fulfill(rid)
            candidates, _ = b.challenge(rid)
            first = b.c.committee.functions.committee_of(candidates, [b.agent.address]).call()[0]
            member = next(m for m in b.members if m.address.lower() == first.lower())
            signature = sign_result(
                member.account, contracts.chain_id, contracts.escrow.address, rid, file_digest(ANSWER)
            )
            return member.transact(
                contracts.committee.functions.post_verdict(rid, file_digest(ANSWER), signature)
            ).gas_used

        verdicts = [posted_verdict() for _ in range(REPEATS)]

    figures = {
        "gas_request_callback": median(requests),
        "gas_prompt_board_ask": median(asks),
        "gas_settle_with_callback": median(settles),
        "gas_settle_callback_own": median(settle_cb),
        "gas_settle_excluding_callback": median([t - c for t, c in zip(settles, settle_cb, strict=False)]),
        "gas_challenge": median([r[0] for rs in rounds.values() for r in rs]),
        "gas_post_verdict": median(verdicts),
    }
    for outcome, rs in rounds.items():
        figures[f"gas_resolve_{outcome}"] = median([r[1] for r in rs])
        figures[f"gas_resolve_{outcome}_excluding_callback"] = median([r[1] - r[2] for r in rs])
    return figures
