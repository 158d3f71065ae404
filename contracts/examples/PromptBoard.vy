# pragma version ~=0.4.3
"""
@title Tributa PromptBoard (example AIOracle consumer)
@custom:contract-name PromptBoard
@license MIT
@notice A public board of questions and AI answers: anyone `ask`s a prompt,
        paying `estimate_fee()`; the board asks the AIOracle for its model
        with `requestCallback` and records the question and who asked; the
        AIOracle calls `aiOracleCallback` once the answer is final and the
        board stores it, once. The model and the callback gas are fixed by
        the deployer.
@dev Money: the board never holds ETH. The whole msg.value goes to the
     AIOracle with the request; the AIOracle credits what comes back (an
     overpayment at once, the unspent task fee at settlement, everything if
     the request expires) to the request's refund address, which is
     tx.origin because the board names no payee (`set_payee`): the asker, in
     the usual case of an EOA asking directly. The asker withdraws it from
     the AIOracle (`withdraw`). A contract that asks through the board gets
     no refunds (they go to its transaction's origin); crediting the board
     instead would only leave the money here with nobody to pass it on.
     Answers: at most MAX_ANSWER_BYTES (the AIOracle's output bound); a
     longer answer arrives as a binary sha2-256 CID (see the AIOracle's
     `request(id).output_is_cid`).
@custom:security Only the AIOracle may call back (ORA OAO's
                 onlyAIOracleCallback), only for a request the board made, and
                 only once per request. The callback gas is at least
                 MIN_GAS_LIMIT, measured to store a 1 KiB answer in fresh
                 slots, so a delivered answer is never lost to out-of-gas.
"""


# @dev The part of the AIOracle the board uses (contracts/AIOracle.vy); the
#      byte bounds are what the board sends (no callback data), the ABI types
#      and selectors are the AIOracle's.
interface IAIOracle:
    def requestCallback(modelId: uint256, input: Bytes[MAX_PROMPT_BYTES], callbackContract: address, gasLimit: uint64, callbackData: Bytes[1]) -> uint256: payable
    def estimateFee(modelId: uint256, gasLimit: uint256) -> uint256: view


# @dev The AIOracle's input and output bounds.
MAX_PROMPT_BYTES: public(constant(uint256)) = 4_096
MAX_ANSWER_BYTES: public(constant(uint256)) = 1_024
# @dev Twice the accepted prompt, so an oversized prompt gets a reason
#      instead of a bare ABI decoding revert.
_PROMPT_ABI: constant(uint256) = 8_192
# @dev Callback gas bounds: the least that stores a 1 KiB answer in fresh
#      slots (measured: 757,394 gas for 1,024 non-zero bytes, 33 fresh slots
#      and the flag; tests/contracts/test_prompt_board.py), and the
#      AIOracle's maximum.
MIN_GAS_LIMIT: public(constant(uint256)) = 800_000
MAX_GAS_LIMIT: public(constant(uint256)) = 5_000_000


event Asked:
    request_id: indexed(uint256)
    asker: indexed(address)

event Answered:
    request_id: indexed(uint256)


oracle: public(immutable(IAIOracle))
model_id: public(immutable(uint256))
gas_limit: public(immutable(uint64))

_asker: HashMap[uint256, address]
_question: HashMap[uint256, Bytes[MAX_PROMPT_BYTES]]
_answer: HashMap[uint256, Bytes[MAX_ANSWER_BYTES]]
_answered: HashMap[uint256, bool]


@deploy
def __init__(oracle_: IAIOracle, model_id_: uint256, gas_limit_: uint64):
    """
    @notice Deploys a board asking `model_id_` through `oracle_`, each answer
            delivered with `gas_limit_` gas. Reverts if the AIOracle does not
            know the model (its estimateFee reason).
    @param oracle_ The AIOracle.
    @param model_id_ The registered, active model (DataRegistry id).
    @param gas_limit_ Callback gas, MIN_GAS_LIMIT..MAX_GAS_LIMIT.
    """
    assert oracle_.address.is_contract, "board: oracle is not a contract"
    assert convert(gas_limit_, uint256) >= MIN_GAS_LIMIT, "board: gas limit too low to store an answer"
    assert convert(gas_limit_, uint256) <= MAX_GAS_LIMIT, "board: gas limit above maximum"
    fee: uint256 = staticcall oracle_.estimateFee(model_id_, convert(gas_limit_, uint256))  # reverts for an unknown model
    oracle = oracle_
    model_id = model_id_
    gas_limit = gas_limit_


@external
@payable
def ask(prompt: Bytes[_PROMPT_ABI]) -> uint256:
    """
    @notice Asks the board's model `prompt`, paying msg.value (at least
            `estimate_fee()`) to the AIOracle; the excess and later refunds
            are credited there to tx.origin.
    @param prompt The question, 1..MAX_PROMPT_BYTES bytes.
    @return uint256 The request id (the AIOracle's, and its escrow task's).
    """
    assert len(prompt) != 0, "board: empty prompt"
    assert len(prompt) <= MAX_PROMPT_BYTES, "board: prompt too long"
    question: Bytes[MAX_PROMPT_BYTES] = convert(prompt, Bytes[MAX_PROMPT_BYTES])
    request_id: uint256 = extcall oracle.requestCallback(model_id, question, self, gas_limit, b"", value=msg.value)
    self._asker[request_id] = msg.sender
    self._question[request_id] = question
    log Asked(request_id=request_id, asker=msg.sender)
    return request_id


@external
def aiOracleCallback(request_id: uint256, output: Bytes[MAX_ANSWER_BYTES], callback_data: Bytes[MAX_ANSWER_BYTES]):
    """
    @notice The AIOracle's delivery of a final answer: stored once.
    @param request_id A request the board made.
    @param output The answer (or a binary CID of a longer one).
    @param callback_data Unused (the board asks with none).
    """
    assert msg.sender == oracle.address, "board: caller is not the oracle"
    assert self._asker[request_id] != empty(address), "board: unknown request"
    assert not self._answered[request_id], "board: already answered"
    self._answered[request_id] = True
    self._answer[request_id] = output
    log Answered(request_id=request_id)


@external
@view
def estimate_fee() -> uint256:
    """
    @notice What `ask` must pay now (the AIOracle's fee for the board's model
            and callback gas).
    @return uint256 Wei.
    """
    return staticcall oracle.estimateFee(model_id, convert(gas_limit, uint256))


@external
@view
def question_of(request_id: uint256) -> Bytes[MAX_PROMPT_BYTES]:
    """
    @notice A question asked on the board (empty if unknown).
    @param request_id The request.
    @return Bytes[MAX_PROMPT_BYTES] The prompt.
    """
    return self._question[request_id]


@external
@view
def asker_of(request_id: uint256) -> address:
    """
    @notice Who asked (empty if unknown).
    @param request_id The request.
    @return address The asker (msg.sender of `ask`).
    """
    return self._asker[request_id]


@external
@view
def answer_of(request_id: uint256) -> Bytes[MAX_ANSWER_BYTES]:
    """
    @notice The stored answer (empty until answered).
    @param request_id The request.
    @return Bytes[MAX_ANSWER_BYTES] The answer.
    """
    return self._answer[request_id]


@external
@view
def answered(request_id: uint256) -> bool:
    """
    @notice Whether the answer has arrived.
    @param request_id The request.
    @return bool True once stored.
    """
    return self._answered[request_id]
