"""PromptBoard, the example AIOracle consumer (contracts/examples/PromptBoard.vy), from Python.

Deploy a board on a bound deployment, ask it a question, read or wait for the answer:

    from tributa import prompt_board

    board = prompt_board.deploy(contracts, deployer, model_id)          # a web3 Contract
    asked = prompt_board.ask(board, requester, "What is the capital of France?")
    answer = prompt_board.wait_for_answer(board, asked.request_id, timeout_s=120)

`ask` pays the board's `estimate_fee()` (the AIOracle's fee for the board's model and callback
gas) unless told another value; the AIOracle credits the overpayment, the unspent task fee and,
for a request nobody answers, everything to the asker (the transaction's origin), who takes it
with `AIOracle.withdraw()`. The answer arrives when the oracle's result is final: at once for a
model whose publisher set a challenge window of 0, else after the window (docs/AI_ORACLE.md).

The board is compiled from its source with the pinned vyper (the same compiler ape uses), so no
ape project build is needed; `ape compile` builds it too (contracts/ is ape's contracts folder).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.contract import Contract

from tributa.chain.contracts import Contracts
from tributa.chain.events import first_event
from tributa.chain.tx import Signer, TxResult
from tributa.config import REPO_ROOT
from tributa.errors import ChainError, ConfigError

SOURCE = REPO_ROOT / "contracts" / "examples" / "PromptBoard.vy"
# PromptBoard.MIN_GAS_LIMIT: the least callback gas a board takes (stores a 1 KiB answer).
MIN_GAS_LIMIT = 800_000


@dataclass(frozen=True)
class Asked:
    request_id: int  # the AIOracle's request id (and its escrow task id)
    fee: int  # the wei sent with the question
    tx: TxResult


@functools.cache
def artifact() -> tuple[list[dict[str, Any]], str]:
    """The board's (ABI, deploy bytecode), compiled once per process."""
    import vyper

    out = vyper.compile_code(
        SOURCE.read_text(), contract_path=str(SOURCE.relative_to(REPO_ROOT)), output_formats=["abi", "bytecode"]
    )
    return out["abi"], out["bytecode"]


def deploy(contracts: Contracts, deployer: Signer, model_id: int, gas_limit: int = MIN_GAS_LIMIT) -> Contract:
    """Deploy a PromptBoard asking `model_id` through the deployment's AIOracle, each answer
    delivered with `gas_limit` gas (MIN_GAS_LIMIT..5,000,000). A bad model or gas limit raises
    ContractRevert with the contract's reason (e.g. "aioracle: unknown or inactive model")."""
    if contracts.ai_oracle is None:
        raise ConfigError(
            f"the deployment for chain {contracts.chain_id} has no AIOracle; redeploy with `ape run deploy`"
        )
    abi, bytecode = artifact()
    factory = contracts.w3.eth.contract(abi=abi, bytecode=bytecode)
    result = deployer.transact(
        factory.constructor(contracts.ai_oracle.address, model_id, gas_limit), action="deploy PromptBoard"
    )
    return at(contracts.w3, result.receipt.contractAddress)


def at(w3: Web3, address: str) -> Contract:
    """A board already deployed at `address`."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact()[0])


def ask(board: Contract, asker: Signer, prompt: str | bytes, value: int | None = None) -> Asked:
    """Ask the board `prompt` (1..4096 bytes; a str is sent as UTF-8), paying `value` wei
    (default: the board's estimate_fee() now)."""
    data = prompt.encode() if isinstance(prompt, str) else bytes(prompt)
    fee = board.functions.estimate_fee().call() if value is None else value
    result = asker.transact(board.functions.ask(data), value=fee, action="ask the PromptBoard")
    request_id = first_event(board, "Asked", result.receipt)["request_id"]
    return Asked(request_id, fee, result)


def answer(board: Contract, request_id: int) -> bytes | None:
    """The stored answer, or None while it has not arrived. (An answer over 1 KiB arrives as
    its binary CID: AIOracle.request(id).output_is_cid says so.)"""
    if not board.functions.answered(request_id).call():
        return None
    return bytes(board.functions.answer_of(request_id).call())


def question(board: Contract, request_id: int) -> bytes:
    """The prompt asked under `request_id` (empty if the board made no such request)."""
    return bytes(board.functions.question_of(request_id).call())


def wait_for_answer(board: Contract, request_id: int, timeout_s: float = 120.0, poll_s: float = 0.5) -> bytes:
    """Poll until the answer is stored; ChainError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = answer(board, request_id)
        if got is not None:
            return got
        if time.monotonic() >= deadline:
            raise ChainError(f"PromptBoard {board.address}: no answer to request {request_id} after {timeout_s:.0f}s")
        time.sleep(poll_s)
