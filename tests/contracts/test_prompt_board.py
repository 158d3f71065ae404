"""PromptBoard (contracts/examples/PromptBoard.vy): an AIOracle consumer that stores
each question and, once the AIOracle delivers it, its answer."""

import boa
import pytest

from tests.contracts import ai_oracle_helpers as x
from tests.contracts import helpers as h

ANSWER = b"Paris"
GAS_LIMIT = 800_000  # PromptBoard.MIN_GAS_LIMIT


def deploy_board(oracle, model_id: int = 1, gas_limit: int = GAS_LIMIT):
    return h.partial("examples/PromptBoard").deploy(oracle, model_id, gas_limit)


@pytest.fixture(scope="module")
def ao_world(world):
    ao = x.deploy(world)
    return ao, deploy_board(ao.oracle.address)


@pytest.fixture
def ao(ao_world):
    with boa.env.anchor():
        yield ao_world


def ask(ao, board, prompt: bytes = b"What is the capital of France?", asker=None, extra: int = 0) -> int:
    with boa.env.prank(asker or ao.w.requester):
        return board.ask(prompt, value=board.estimate_fee() + extra)


def answer(ao, board, rid: int, output: bytes = ANSWER):
    """The oracle's W = 0 fulfilment: settled and delivered in one transaction."""
    x.fulfill(ao, rid, output, x.settlement_for(ao, rid, output), data=b"", gas=3_000_000)
    (delivered,) = x.events(ao.oracle, "CallbackDelivered")
    return delivered


def callback(ao, board, rid: int, output: bytes = ANSWER, sender=None):
    with boa.env.prank(sender or ao.oracle.address):
        board.aiOracleCallback(rid, output, b"")


# ------------------------------------------------------------ deployment


def test_deploy__keeps_oracle_model_and_gas_limit(ao):
    ao, board = ao
    assert (board.oracle(), board.model_id(), board.gas_limit()) == (ao.oracle.address, 1, GAS_LIMIT)
    assert board.MIN_GAS_LIMIT() == GAS_LIMIT and board.MAX_PROMPT_BYTES() == ao.oracle.MAX_INPUT_BYTES()
    assert board.estimate_fee() == ao.oracle.estimate_fee(1, GAS_LIMIT)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"gas_limit": GAS_LIMIT - 1}, "board: gas limit too low to store an answer"),
        ({"gas_limit": 5_000_001}, "board: gas limit above maximum"),
        ({"oracle": "eoa"}, "board: oracle is not a contract"),
        ({"model_id": 99}, "aioracle: unknown or inactive model"),
    ],
)
def test_deploy__bad_parameters__revert_with_their_reason(ao, change, reason):
    ao, _ = ao
    oracle = ao.w.stranger if change.get("oracle") == "eoa" else ao.oracle.address
    with boa.reverts(reason):
        deploy_board(oracle, change.get("model_id", 1), change.get("gas_limit", GAS_LIMIT))


# ------------------------------------------------------------------ ask


def test_ask__requests_the_boards_model_with_its_gas_and_records_question_and_asker(ao):
    ao, board = ao
    rid = ask(ao, board)
    (req,) = x.events(board, "AICallbackRequest")
    assert (
        req.account,
        req.request_id,
        req.model_id,
        req.input,
        req.callback_contract,
        req.gas_limit,
        req.callback_data,
    ) == (board.address, rid, 1, b"What is the capital of France?", board.address, GAS_LIMIT, b"")
    (asked,) = x.events(board, "Asked")
    assert (asked.request_id, asked.asker) == (rid, ao.w.requester)
    assert board.question_of(rid) == b"What is the capital of France?" and board.asker_of(rid) == ao.w.requester
    assert not board.answered(rid) and board.answer_of(rid) == b""
    # the board holds no ETH: refunds are credited in the AIOracle to the asker (tx.origin)
    assert boa.env.get_balance(board.address) == 0 and ao.oracle.request(rid).refund_to == ao.w.requester
    x.assert_conserved(ao, [rid])


def test_ask__overpayment_is_credited_to_the_asker_in_the_oracle(ao):
    ao, board = ao
    rid = ask(ao, board, extra=12345)
    assert ao.oracle.balance_of(ao.w.requester) == 12345 and ao.oracle.balance_of(board.address) == 0
    x.assert_conserved(ao, [rid])


@pytest.mark.parametrize(
    "prompt, underpay, reason",
    [
        (b"", 0, "board: empty prompt"),
        (b"x" * 4097, 0, "board: prompt too long"),
        (b"q", 1, "aioracle: fee below estimate"),
    ],
)
def test_ask__bad_input__reverts_with_its_reason(ao, prompt, underpay, reason):
    ao, board = ao
    count = ao.escrow.task_count()
    with boa.env.prank(ao.w.requester), boa.reverts(reason):
        board.ask(prompt, value=board.estimate_fee() - underpay)
    assert ao.escrow.task_count() == count


def test_ask__the_longest_prompt_is_accepted(ao):
    ao, board = ao
    rid = ask(ao, board, prompt=b"x" * 4096)
    assert board.question_of(rid) == b"x" * 4096


# ------------------------------------------------------------- callback


def test_callback__stores_the_final_answer(ao):
    ao, board = ao
    x.set_window(ao, 0)
    rid = ask(ao, board)
    delivered = answer(ao, board, rid)
    assert delivered.success and delivered.callback == board.address
    assert board.answered(rid) and board.answer_of(rid) == ANSWER
    (answered,) = x.events(ao.oracle, "Answered")  # the board's event, in the oracle's transaction
    assert answered.request_id == rid
    x.assert_conserved(ao, [rid])


def test_callback__a_1_kib_answer_fits_the_least_gas_limit(ao):
    """MIN_GAS_LIMIT is enough to store the longest answer in fresh slots."""
    ao, board = ao
    x.set_window(ao, 0)
    rid = ask(ao, board)
    longest = bytes(i % 251 for i in range(1024))
    assert answer(ao, board, rid, longest).success
    assert board.answer_of(rid) == longest


def test_callback__own_gas_for_a_1_kib_answer__is_under_the_least_gas_limit(ao):
    ao, board = ao
    rid = ask(ao, board)
    boa.env.evm.vm.state._account_db._journal_accessed_state.clear()  # cold slots, as in a delivery
    callback(ao, board, rid, b"\xff" * 1024)
    used = board._computation.get_gas_used()
    print(f"\nPromptBoard.aiOracleCallback storing a 1 KiB answer: {used:,} gas")
    assert 700_000 < used < board.MIN_GAS_LIMIT() - 20_000


def test_callback__only_from_the_oracle(ao):
    ao, board = ao
    rid = ask(ao, board)
    with boa.reverts("board: caller is not the oracle"):
        callback(ao, board, rid, sender=ao.w.stranger)
    assert not board.answered(rid)


def test_callback__stores_once(ao):
    ao, board = ao
    rid = ask(ao, board)
    callback(ao, board, rid)
    with boa.reverts("board: already answered"):
        callback(ao, board, rid, b"Lyon")
    assert board.answer_of(rid) == ANSWER


def test_callback__for_a_request_the_board_did_not_make__is_refused(ao):
    """Someone else's request naming the board as callback is delivered (and fails) without touching it."""
    ao, board = ao
    with boa.reverts("board: unknown request"):
        callback(ao, board, 12345)
    x.set_window(ao, 0)
    fee = ao.oracle.estimate_fee(1, GAS_LIMIT)
    with boa.env.prank(ao.w.stranger):
        rid = ao.oracle.request_callback(1, b"q", board.address, GAS_LIMIT, b"", value=fee)
    assert not answer(ao, board, rid).success
    assert not board.answered(rid) and ao.oracle.is_finalized(rid)
