"""PromptBoard on a real Anvil node with the ape deployment: tributa.prompt_board deploys it,
asks, and reads the answer the AIOracle delivers; and the AIOracle gas bench
(bench/ai_oracle_gas.py) runs and reports sane receipts."""

from __future__ import annotations

import pytest

from bench import ai_oracle_gas
from tests.helpers import ensure_agent, register_test_model
from tributa import prompt_board
from tributa.errors import ContractRevert

pytestmark = pytest.mark.anvil


def test_prompt_board__deploy_ask_and_read_the_delivered_answer(contracts, signers, chain_snapshot):
    model = register_test_model(contracts, signers["publisher"])
    signers["publisher"].transact(contracts.ai_oracle.functions.set_challenge_window(model, 0))
    ensure_agent(contracts, signers["agent"], [model])
    board = prompt_board.deploy(contracts, signers["deployer"], model)
    assert board.functions.gas_limit().call() == prompt_board.MIN_GAS_LIMIT
    assert prompt_board.at(contracts.w3, board.address).functions.model_id().call() == model

    asked = prompt_board.ask(board, signers["requester"], "What is the capital of France?")
    assert asked.fee == contracts.ai_oracle.functions.estimate_fee(model, prompt_board.MIN_GAS_LIMIT).call()
    assert prompt_board.question(board, asked.request_id) == b"What is the capital of France?"
    assert prompt_board.answer(board, asked.request_id) is None

    encoded = ai_oracle_gas.settlement_bytes(contracts, signers["agent"], asked.request_id, b"Paris")
    signers["oracle"].transact(contracts.ai_oracle.functions.fulfill(asked.request_id, b"Paris", False, encoded, b""))
    assert prompt_board.wait_for_answer(board, asked.request_id, timeout_s=10) == b"Paris"
    # the unspent fee (here the data share: no datasets) is the asker's, in the AIOracle
    assert contracts.ai_oracle.functions.balance_of(signers["requester"].address).call() > 0
    assert contracts.w3.eth.get_balance(board.address) == 0


def test_prompt_board__unknown_model__deploy_raises_the_oracles_reason(contracts, signers, chain_snapshot):
    with pytest.raises(ContractRevert, match="aioracle: unknown or inactive model"):
        prompt_board.deploy(contracts, signers["deployer"], 10**9)


def test_ai_oracle_gas_bench__runs_and_reports_sane_receipts(tmp_path):
    figures = ai_oracle_gas.run(tmp_path)
    assert set(figures) >= {
        "gas_request_callback",
        "gas_settle_with_callback",
        "gas_challenge",
        "gas_resolve_upheld",
        "gas_resolve_overturned",
    }
    assert all(v > 0 for v in figures.values())
    assert 150_000 < figures["gas_request_callback"] < 400_000
    own = figures["gas_settle_callback_own"]
    assert 40_000 < own < prompt_board.MIN_GAS_LIMIT  # the board stores a 5-byte answer: three fresh slots
    assert abs(figures["gas_settle_excluding_callback"] + own - figures["gas_settle_with_callback"]) < 1_000
    assert figures["gas_resolve_upheld"] < figures["gas_resolve_overturned"]
