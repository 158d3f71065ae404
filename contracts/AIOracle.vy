# pragma version ~=0.4.3
"""
@title Tributa AIOracle
@custom:contract-name AIOracle
@license MIT
@notice Inference for smart contracts, after ORA's OAO: a contract asks with
        `request_callback` (alias `requestCallback`), paying `estimate_fee`
        (alias `estimateFee`); the input travels in calldata and in the
        `AICallbackRequest` event. Each request is a TaskEscrow task (posted
        by this contract, request id == task id). The oracle posts the output
        bytes (<= 1 KiB, or a CID) with the task's settlement; the result is
        provisional for the model's challenge window W (set by the model's
        publisher, snapshotted per request); payouts AND the callback wait
        until it is final (one delivery per request, never a correction).
        During the window anyone may `challenge` with a bond; a committee of
        staked agents serving the model, drawn from prevrandao and the request
        id, re-executes and signs the escrow's EIP-712 Result(task_id, digest);
        `resolve` counts those signatures: a quorum for the posted digest
        upholds it (the bond goes half to the committee, half to the original
        agents), a quorum for another digest replaces the result (the original
        agents are slashed in the escrow on their own Result signatures, the
        committee is paid the agents' fee, the challenger gets the bond back
        plus the requester's half of the slash), no quorum by the committee
        deadline leaves the result standing and returns the bond.
        Request states: 1 REQUESTED, 2 PROVISIONAL, 3 CHALLENGED, 4 FINAL,
        5 EXPIRED.
@dev Money: the task fee sits in the escrow; the callback reserve (gas_limit x
     gas_price), bonds and credits sit here. Whatever the escrow credits this
     contract (refunds, the requester's half of slashes) is measured as the
     change of `escrow.balance_of(self)` around the escrow call and credited
     on here. Invariant (with no direct escrow settlement of a callback task):
       self.balance + escrow.balance_of(self) + (fees of this contract's OPEN
       or FAILED escrow tasks) == total_credited + total_held + total_open_fees
     where total_held covers undelivered callback reserves and open bonds and
     total_open_fees the task fees of requests not yet closed.
@custom:security The callback is a raw_call with exactly `gas_limit` gas (the
                 caller must bring gas_limit * 64/63 + CALLBACK_GAS_RESERVE, or
                 the delivery reverts and is retried), no returndata copied
                 (max_outsize=0) and revert_on_failure=False, made last, after
                 every state change, under the reentrancy lock. ETH leaves only
                 by `withdraw`, `withdraw_for` and `sweep`.
"""

from snekmate.auth import ownable

import interfaces.IAICommittee as IAICommittee
import interfaces.IDataRegistry as IDataRegistry
import interfaces.ITaskEscrow as ITaskEscrow

initializes: ownable
exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


struct Request:
    refund_to: address
    callback: address
    gas_limit: uint256
    model_id: uint256
    state: uint256
    challenge_window: uint256
    # REQUESTED: fulfil by; PROVISIONAL: final at; CHALLENGED: resolve by
    due: uint256
    escrow_deadline: uint256
    reserve: uint256
    output_is_cid: bool
    original_agents: uint256
    challenger: address
    bond: uint256


# @dev Request states.
REQUESTED: constant(uint256) = 1
PROVISIONAL: constant(uint256) = 2
CHALLENGED: constant(uint256) = 3
FINAL: constant(uint256) = 4
EXPIRED: constant(uint256) = 5

# @dev Escrow task states (TaskEscrow).
_T_OPEN: constant(uint256) = 1
_T_SETTLED: constant(uint256) = 2
_T_FAILED: constant(uint256) = 3
_T_REFUNDED: constant(uint256) = 4

# @dev Challenge outcomes (ChallengeResolved.outcome).
UPHELD: constant(uint256) = 1
OVERTURNED: constant(uint256) = 2
NO_QUORUM: constant(uint256) = 3

BPS: constant(uint256) = 10_000
MAX_INPUT_BYTES: public(constant(uint256)) = 4_096
MAX_OUTPUT_BYTES: public(constant(uint256)) = 1_024
MAX_CALLBACK_DATA_BYTES: public(constant(uint256)) = 1_024
# @dev ABI bounds of the request's byte arguments: twice the accepted sizes,
#      so an oversized input gets a reason instead of a bare ABI revert.
_INPUT_ABI: constant(uint256) = 8_192
_DATA_ABI: constant(uint256) = 2_048
MAX_GAS_LIMIT: public(constant(uint256)) = 5_000_000
# @dev Gas a delivery must have beyond gas_limit * 64/63: the CALL's cold
#      account access (2,600) and what follows the callback.
CALLBACK_GAS_RESERVE: public(constant(uint256)) = 10_000
# @dev Escrow tasks are posted with k = 5: at most 2 original agents (paid or
#      slashed) + a committee of 3, so a corrected settlement fits.
TASK_K: constant(uint256) = 5
MAX_ORIGINAL_AGENTS: public(constant(uint256)) = 2
COMMITTEE_SIZE: public(constant(uint256)) = 3
COMMITTEE_QUORUM: public(constant(uint256)) = 2
MAX_CHALLENGE_WINDOW: public(constant(uint256)) = 7 * 86_400
MAX_RESPONSE_WINDOW: public(constant(uint256)) = 7 * 86_400
MAX_COMMITTEE_WINDOW: public(constant(uint256)) = 7 * 86_400
# @dev A model whose publisher never set a window gets this one.
DEFAULT_CHALLENGE_WINDOW: public(constant(uint256)) = 600
# @dev Time after the committee deadline for a final settlement to reach the
#      escrow before its task deadline.
SETTLE_GRACE: public(constant(uint256)) = 86_400
# @dev TaskEscrow.settle(Settlement): settlements travel here as their ABI
#      encoding (`abi_encode(s)`, the calldata of settle after its selector),
#      are hashed as such and forwarded as such.
SETTLE_SELECTOR: constant(bytes4) = method_id("settle((uint256,bytes32,bytes32,address[],bytes[],uint256,(address,bytes32,uint256,bytes)[],uint256[],uint16[]))", output_type=bytes4)
# @dev The largest ABI encoding of a Settlement (5 agents and signatures, 5
#      slash proofs, 16 datasets).
SETTLEMENT_ABI_BYTES: public(constant(uint256)) = 3_904
CALLBACK_SELECTOR: public(constant(bytes4)) = method_id("aiOracleCallback(uint256,bytes,bytes)", output_type=bytes4)

# @dev Packed request word A: refund_to (160) | gas_limit (64) | state (8) |
#      original agents (8) | output is a CID (1).
_GAS_SHIFT: constant(uint256) = 160
_STATE_SHIFT: constant(uint256) = 224
_NORIG_SHIFT: constant(uint256) = 232
_CID_SHIFT: constant(uint256) = 240
# @dev Packed request word B: callback (160) | challenge window (32) | model id (64).
_WINDOW_SHIFT: constant(uint256) = 160
_MODEL_SHIFT: constant(uint256) = 192
# @dev Packed request word C: reserve (96) | due (40) | escrow deadline (40).
_DUE_SHIFT: constant(uint256) = 96
_EDL_SHIFT: constant(uint256) = 136
# @dev Packed challenge word: challenger (160) | bond (96).
_BOND_SHIFT: constant(uint256) = 160
_MASK_8: constant(uint256) = 2**8 - 1
_MASK_32: constant(uint256) = 2**32 - 1
_MASK_40: constant(uint256) = 2**40 - 1
_MASK_64: constant(uint256) = 2**64 - 1
_MASK_96: constant(uint256) = 2**96 - 1
_MASK_160: constant(uint256) = 2**160 - 1


# @dev ORA OAO's request event (same topic: AICallbackRequest(address,uint256,uint256,bytes,address,uint64,bytes)).
event AICallbackRequest:
    account: indexed(address)
    request_id: indexed(uint256)
    model_id: uint256
    input: Bytes[_INPUT_ABI]
    callback_contract: address
    gas_limit: uint64
    callback_data: Bytes[_DATA_ABI]

# @dev ORA OAO's result event (same topic), emitted once, at delivery of the
#      final result; `account` is the callback contract.
event AICallbackResult:
    account: indexed(address)
    request_id: indexed(uint256)
    invoker: address
    output: Bytes[1024]

event RequestTerms:
    request_id: indexed(uint256)
    refund_to: indexed(address)
    task_fee: uint256
    reserve: uint256
    fulfil_by: uint256
    challenge_window: uint256
    escrow_deadline: uint256

event ResultPosted:
    request_id: indexed(uint256)
    result_digest: bytes32
    output: Bytes[1024]
    output_is_cid: bool
    final_at: uint256
    settlement_hash: bytes32

event CallbackDelivered:
    request_id: indexed(uint256)
    callback: indexed(address)
    success: bool
    settled: bool

event Challenged:
    request_id: indexed(uint256)
    challenger: indexed(address)
    bond: uint256
    candidates: DynArray[address, 5]
    resolve_by: uint256

event ChallengeResolved:
    request_id: indexed(uint256)
    outcome: uint256
    result_digest: bytes32
    to_challenger: uint256

event RequestExpired:
    request_id: indexed(uint256)
    refunded: uint256

event Credited:
    account: indexed(address)
    request_id: indexed(uint256)
    amount: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256

event ChallengeWindowSet:
    model_id: indexed(uint256)
    seconds: uint256

event ParamsSet:
    gas_price: uint256
    agent_fee: uint256
    challenge_bond: uint256
    response_window: uint256
    committee_window: uint256

event PayeeSet:
    requester: indexed(address)
    payee: indexed(address)

event Swept:
    to: indexed(address)
    amount: uint256


escrow: public(immutable(ITaskEscrow))
registry: public(immutable(IDataRegistry))
committee: public(immutable(IAICommittee))

# @dev Owner parameters.
gas_price: public(uint256)
agent_fee: public(uint256)
challenge_bond: public(uint256)
response_window: public(uint256)
committee_window: public(uint256)

# @dev Per model, set by its publisher: window + 1 (0: never set, the default).
_window_plus_one: HashMap[uint256, uint256]

# @dev Where a requester's refunds go (empty: tx.origin of the request).
payee_of: public(HashMap[address, address])

_req_a: HashMap[uint256, uint256]
_req_b: HashMap[uint256, uint256]
_req_c: HashMap[uint256, uint256]
_data_hash: HashMap[uint256, bytes32]
_settlement_hash: HashMap[uint256, bytes32]
_output_hash: HashMap[uint256, bytes32]
_challenge: HashMap[uint256, uint256]
_candidates_hash: HashMap[uint256, bytes32]

balance_of: public(HashMap[address, uint256])
total_credited: public(uint256)
total_held: public(uint256)
total_open_fees: public(uint256)


@deploy
def __init__(
    escrow_: ITaskEscrow,
    committee_: IAICommittee,
    gas_price_: uint256,
    agent_fee_: uint256,
    challenge_bond_: uint256,
    response_window_: uint256,
    committee_window_: uint256,
):
    """
    @notice Deploys the oracle front of `escrow_`; the deployer becomes the
            owner. The escrow's owner must then grant it the oracle role
            (`escrow.set_oracle(this, True)`): it settles, fails and refunds
            its own tasks.
    @param escrow_ The TaskEscrow.
    @param committee_ The AICommittee (rosters, draw, verdict count) of the same escrow.
    @param gas_price_ Wei per gas of callback gas (the reserve's price).
    @param agent_fee_ Wei per request for the agents, on top of the model fee.
    @param challenge_bond_ Least bond of a challenge, in wei.
    @param response_window_ Seconds the oracle has to post a result.
    @param committee_window_ Seconds a committee has to sign its verdicts.
    """
    assert escrow_.address != empty(address), "aioracle: zero escrow"
    assert staticcall committee_.escrow() == escrow_.address, "aioracle: committee of another escrow"
    committee = committee_
    ownable.__init__()
    escrow = escrow_
    registry = IDataRegistry(staticcall escrow_.registry())
    self._set_params(gas_price_, agent_fee_, challenge_bond_, response_window_, committee_window_)


@external
@payable
def __default__():
    """
    @notice Takes ETH from the escrow only (its `withdraw` of this contract's credits).
    """
    assert msg.sender == escrow.address, "aioracle: only the escrow pays in"


# ----------------------------------------------------------------- requests


@external
@payable
def request_callback(model_id: uint256, input: Bytes[_INPUT_ABI], callback: address, gas_limit: uint64, callback_data: Bytes[_DATA_ABI]) -> uint256:
    """
    @notice Asks for `model_id` to run on `input` and for the final output to
            be delivered to `callback.aiOracleCallback(request_id, output,
            callback_data)` with exactly `gas_limit` gas. msg.value must be at
            least `estimate_fee(model_id, gas_limit)`; any excess is credited
            to the refund address at once. Refunds (unspent fee, an
            unanswered request) go to `payee_of[msg.sender]`, or to tx.origin
            if the requester named none.
    @param model_id The registered, active model.
    @param input The model's input (at most 4096 bytes), emitted in
           AICallbackRequest; its `ipfs add` CID digest (_file_digest) is the escrow task's input digest.
    @param callback The contract to call back.
    @param gas_limit Gas for the callback (1..5,000,000).
    @param callback_data Bytes handed back to the callback (at most 1024).
    @return uint256 The request id (the escrow task id).
    """
    return self._request(model_id, input, callback, gas_limit, callback_data, msg.value)


@external
@payable
def requestCallback(modelId: uint256, input: Bytes[_INPUT_ABI], callbackContract: address, gasLimit: uint64, callbackData: Bytes[_DATA_ABI]) -> uint256:
    """
    @notice ORA OAO's name for `request_callback`.
    """
    return self._request(modelId, input, callbackContract, gasLimit, callbackData, msg.value)


@external
@view
def estimate_fee(model_id: uint256, gas_limit: uint256) -> uint256:
    """
    @notice What a request must pay: the escrow task fee (the model fee plus
            `agent_fee`, grossed up for the escrow's protocol and data shares)
            plus gas_limit * gas_price for the callback.
    @param model_id The model.
    @param gas_limit The callback's gas.
    @return uint256 The fee in wei.
    """
    task_fee: uint256 = 0
    model_fee: uint256 = 0
    task_fee, model_fee = self._task_fee(model_id)
    return task_fee + gas_limit * self.gas_price


@external
@view
def estimateFee(modelId: uint256, gasLimit: uint256) -> uint256:
    """
    @notice ORA OAO's name for `estimate_fee`.
    """
    task_fee: uint256 = 0
    model_fee: uint256 = 0
    task_fee, model_fee = self._task_fee(modelId)
    return task_fee + gasLimit * self.gas_price


@external
def set_payee(payee: address):
    """
    @notice Names where the caller's refunds of its later requests go (empty:
            tx.origin of each request).
    @param payee The account credited.
    """
    self.payee_of[msg.sender] = payee
    log PayeeSet(requester=msg.sender, payee=payee)


# ------------------------------------------------------------------ results


@external
@nonreentrant
def fulfill(request_id: uint256, output: Bytes[MAX_OUTPUT_BYTES], output_is_cid: bool, settlement: Bytes[SETTLEMENT_ABI_BYTES], callback_data: Bytes[MAX_CALLBACK_DATA_BYTES]):
    """
    @notice Posts a request's result (escrow oracle only): the output and the
            escrow settlement that pays for it. With a challenge window of 0
            the task settles and the callback runs now; otherwise both wait
            for `finalize` (or `resolve`) and the output is provisional.
    @param request_id The request.
    @param output The output bytes, whose `ipfs add` CID digest (_file_digest) is s.result_digest; or, with
           output_is_cid, a binary sha2-256 CID (v0: 0x1220 + digest, v1:
           0x01 0x70 0x1220 + digest) naming it.
    @param output_is_cid Whether `output` is a CID.
    @param settlement abi_encode(s) of the TaskEscrow Settlement s paying for
           it (what escrow.settle takes after its selector): at most 2 agents
           paid or slashed.
    @param callback_data The request's callback data (as in AICallbackRequest).
    """
    assert staticcall escrow.is_oracle(msg.sender), "aioracle: caller is not the oracle"
    a: uint256 = self._req_a[request_id]
    c: uint256 = self._req_c[request_id]
    assert (a >> _STATE_SHIFT) & _MASK_8 == REQUESTED, "aioracle: not awaiting a result"
    assert block.timestamp <= (c >> _DUE_SHIFT) & _MASK_40, "aioracle: response window closed"
    # the few fields needed, read where the ABI decoder reads them (the
    # escrow decodes and validates the whole when it settles)
    assert extract32(settlement, 0, output_type=uint256) == 32, "aioracle: settlement not canonical"
    assert extract32(settlement, 32, output_type=uint256) == request_id, "aioracle: settlement of another task"
    result_digest: bytes32 = extract32(settlement, 64)
    n_orig: uint256 = extract32(settlement, 32 + extract32(settlement, 128, output_type=uint256), output_type=uint256)
    n_slashed: uint256 = extract32(settlement, 32 + extract32(settlement, 224, output_type=uint256), output_type=uint256)
    assert n_orig + n_slashed <= MAX_ORIGINAL_AGENTS, "aioracle: too many agents"
    self._check_output(output, output_is_cid, result_digest)
    assert self._hash_data(callback_data) == self._data_hash[request_id], "aioracle: wrong callback data"

    window: uint256 = (self._req_b[request_id] >> _WINDOW_SHIFT) & _MASK_32
    a = a & ~((_MASK_8 << _NORIG_SHIFT) | (1 << _CID_SHIFT)) | (n_orig << _NORIG_SHIFT)
    if output_is_cid:
        a = a | (1 << _CID_SHIFT)
    final_at: uint256 = block.timestamp + window
    h: bytes32 = keccak256(settlement)
    log ResultPosted(request_id=request_id, result_digest=result_digest, output=output, output_is_cid=output_is_cid, final_at=final_at, settlement_hash=h)

    if window == 0:
        # final at once: settle exactly `s` (else revert: the escrow's reason
        # is in an eth_call of escrow.settle from this contract) and deliver
        delta: uint256 = 0
        applied: uint256 = 0
        delta, applied = self._end_task(request_id, [settlement], False)
        assert applied == 1, "aioracle: escrow rejected the settlement"
        self._close_fees(request_id, a, delta)
        self._deliver(request_id, a, output, callback_data, True)
        return
    self._req_a[request_id] = self._with_state(a, PROVISIONAL)
    self._req_c[request_id] = self._with_due(c, final_at)
    self._settlement_hash[request_id] = h
    # the exact bytes delivered later (a CID form of the same digest is another output)
    self._output_hash[request_id] = keccak256(output)


@external
@nonreentrant
def finalize(request_id: uint256, output: Bytes[MAX_OUTPUT_BYTES], settlement: Bytes[SETTLEMENT_ABI_BYTES], callback_data: Bytes[MAX_CALLBACK_DATA_BYTES]):
    """
    @notice Makes an unchallenged result final once its window has passed
            (anyone): settles the escrow task with the posted settlement (if
            the escrow now rejects it, e.g. an agent's stake fell below the
            minimum, the task is refunded whole), credits the refund, pays the
            caller the callback reserve and delivers the output.
    @param request_id The request.
    @param output The posted output (see ResultPosted).
    @param settlement The posted settlement bytes (fulfill's calldata; see settlement_hash).
    @param callback_data The request's callback data.
    """
    a: uint256 = self._req_a[request_id]
    state: uint256 = (a >> _STATE_SHIFT) & _MASK_8
    assert state != CHALLENGED, "aioracle: challenged"
    assert state == PROVISIONAL, "aioracle: no provisional result"
    assert block.timestamp >= (self._req_c[request_id] >> _DUE_SHIFT) & _MASK_40, "aioracle: challenge window open"
    self._check_posted(request_id, a, output, settlement, callback_data)
    delta: uint256 = 0
    applied: uint256 = 0
    delta, applied = self._end_task(request_id, [settlement], True)
    self._close_fees(request_id, a, delta)
    self._deliver(request_id, a, output, callback_data, applied != 0)


# --------------------------------------------------------------- challenges


@external
@payable
@nonreentrant
def challenge(request_id: uint256):
    """
    @notice Challenges a provisional result during its window, staking
            msg.value (at least `challenge_bond`) as the bond. Draws the
            committee candidates from the model's roster with prevrandao and
            the request id (AICommittee.draw): COMMITTEE_SIZE + the number of
            original agents, distinct, serving the model, never the
            challenger; the committee is the first COMMITTEE_SIZE of them that
            are not original agents (AICommittee.committee_of).
    @param request_id The request.
    """
    a: uint256 = self._req_a[request_id]
    state: uint256 = (a >> _STATE_SHIFT) & _MASK_8
    assert state != CHALLENGED, "aioracle: already challenged"
    assert state == PROVISIONAL, "aioracle: no provisional result"
    c: uint256 = self._req_c[request_id]
    assert block.timestamp < (c >> _DUE_SHIFT) & _MASK_40, "aioracle: challenge window closed"
    assert msg.value >= self.challenge_bond and msg.value != 0, "aioracle: bond below minimum"
    assert msg.value <= _MASK_96, "aioracle: bond too large"

    model_id: uint256 = self._req_b[request_id] >> _MODEL_SHIFT
    need: uint256 = COMMITTEE_SIZE + ((a >> _NORIG_SHIFT) & _MASK_8)
    edl: uint256 = (c >> _EDL_SHIFT) & _MASK_40
    resolve_by: uint256 = min(block.timestamp + self.committee_window, edl - SETTLE_GRACE)
    picked: DynArray[address, 5] = extcall committee.draw(model_id, request_id, need, msg.sender, resolve_by, edl)
    assert len(picked) == need, "aioracle: too few committee members"

    self._req_a[request_id] = self._with_state(a, CHALLENGED)
    self._req_c[request_id] = self._with_due(c, resolve_by)
    self._challenge[request_id] = convert(msg.sender, uint256) | (msg.value << _BOND_SHIFT)
    self._candidates_hash[request_id] = keccak256(abi_encode(picked))
    self.total_held += msg.value
    log Challenged(request_id=request_id, challenger=msg.sender, bond=msg.value, candidates=picked, resolve_by=resolve_by)


@external
@nonreentrant
def resolve(
    request_id: uint256,
    candidates: DynArray[address, 5],
    settlement: Bytes[SETTLEMENT_ABI_BYTES],
    verdicts: DynArray[IAICommittee.Verdict, COMMITTEE_SIZE],
    output: Bytes[MAX_OUTPUT_BYTES],
    output_is_cid: bool,
    callback_data: Bytes[MAX_CALLBACK_DATA_BYTES],
):
    """
    @notice Resolves a challenge from the committee's signed verdicts (anyone).
            A verdict is a member's EIP-712 Result(task_id, digest) signature
            under the escrow's domain. COMMITTEE_QUORUM verdicts for the posted
            digest: UPHELD (the posted settlement settles; the bond goes half
            to the committee members who signed it, half to the original
            agents). COMMITTEE_QUORUM for one other digest: OVERTURNED (the
            escrow settles that digest paying its signers the agents' fee and
            slashing the original agents on their Result signatures; the
            challenger gets its bond back plus the requester's half of the
            slash; `output` must be the new result). No quorum after the
            committee deadline: NO_QUORUM (the posted result stands, the bond
            is returned). The final output is then delivered.
    @param request_id The request.
    @param candidates The candidates drawn (the Challenged event).
    @param settlement The posted settlement bytes.
    @param verdicts Signed verdicts of distinct committee members.
    @param output The final output: the posted one unless OVERTURNED.
    @param output_is_cid Whether an OVERTURNED output is a CID (else unused).
    @param callback_data The request's callback data.
    """
    a: uint256 = self._req_a[request_id]
    assert (a >> _STATE_SHIFT) & _MASK_8 == CHALLENGED, "aioracle: not challenged"
    assert keccak256(abi_encode(candidates)) == self._candidates_hash[request_id], "aioracle: wrong candidates"
    assert keccak256(settlement) == self._settlement_hash[request_id], "aioracle: wrong settlement"
    assert self._hash_data(callback_data) == self._data_hash[request_id], "aioracle: wrong callback data"
    t: IAICommittee.Tally = extcall committee.tally(request_id, candidates, settlement, verdicts)
    posted: bytes32 = t.posted
    upheld: uint256 = len(t.upholders)
    best_count: uint256 = len(t.signers)

    ch: uint256 = self._challenge[request_id]
    challenger: address = convert(convert(ch & _MASK_160, uint160), address)
    bond: uint256 = ch >> _BOND_SHIFT
    self.total_held -= bond
    outcome: uint256 = 0
    final_digest: bytes32 = posted
    to_challenger: uint256 = 0

    if upheld >= COMMITTEE_QUORUM or (best_count < COMMITTEE_QUORUM and block.timestamp > (self._req_c[request_id] >> _DUE_SHIFT) & _MASK_40):
        assert keccak256(output) == self._output_hash[request_id], "aioracle: not the posted output"
        delta: uint256 = 0
        applied: uint256 = 0
        delta, applied = self._end_task(request_id, [settlement], True)
        self._close_fees(request_id, a, delta)
        if upheld >= COMMITTEE_QUORUM:
            outcome = UPHELD
            self._split_bond(request_id, bond, t.upholders, t.originals)
        else:
            outcome = NO_QUORUM
            to_challenger = bond
            self._credit(challenger, request_id, bond)
    else:
        assert best_count >= COMMITTEE_QUORUM, "aioracle: no quorum yet"
        outcome = OVERTURNED
        final_digest = t.best
        # only the oracle, which holds the replacement, may deliver it as a CID instead of its bytes
        assert not output_is_cid or staticcall escrow.is_oracle(msg.sender), "aioracle: only the oracle delivers a CID"
        self._check_output(output, output_is_cid, t.best)
        if output_is_cid:
            a = a | (1 << _CID_SHIFT)
        else:
            a = a & ~(1 << _CID_SHIFT)
        reward: uint256 = self._settle_overturn(request_id, a, settlement, t)
        to_challenger = bond + reward
        self._credit(challenger, request_id, to_challenger)

    log ChallengeResolved(request_id=request_id, outcome=outcome, result_digest=final_digest, to_challenger=to_challenger)
    self._deliver(request_id, a, output, callback_data, True)


# ---------------------------------------------------------------- expiry


@external
@nonreentrant
def expire(request_id: uint256):
    """
    @notice Ends a request that nobody brought to its end in time (anyone):
            no result by its fulfil-by time, or no finalize / resolve by its
            escrow deadline. The escrow task is failed and refunded, the whole
            task fee and the callback reserve are credited to the refund
            address, an open bond to its challenger. Nothing is delivered.
    @param request_id The request.
    """
    a: uint256 = self._req_a[request_id]
    state: uint256 = (a >> _STATE_SHIFT) & _MASK_8
    assert state != 0, "aioracle: unknown request"
    c: uint256 = self._req_c[request_id]
    if state == REQUESTED:
        assert block.timestamp > (c >> _DUE_SHIFT) & _MASK_40, "aioracle: not expired"
    else:
        assert state == PROVISIONAL or state == CHALLENGED, "aioracle: request closed"
        assert block.timestamp > (c >> _EDL_SHIFT) & _MASK_40, "aioracle: not expired"
    self._req_a[request_id] = self._with_state(a, EXPIRED)
    delta: uint256 = 0
    applied: uint256 = 0
    delta, applied = self._end_task(request_id, [], True)
    reserve: uint256 = c & _MASK_96
    refund_to: address = self._refund_to(a)
    self.total_open_fees -= self._task_fee_of(request_id)
    self.total_held -= reserve
    self._credit(refund_to, request_id, delta + reserve)
    if state == CHALLENGED:
        ch: uint256 = self._challenge[request_id]
        self.total_held -= ch >> _BOND_SHIFT
        self._credit(convert(convert(ch & _MASK_160, uint160), address), request_id, ch >> _BOND_SHIFT)
    log RequestExpired(request_id=request_id, refunded=delta + reserve)


# --------------------------------------------------------------- withdrawals


@external
@nonreentrant
def withdraw() -> uint256:
    """
    @notice Sends the caller its whole credited balance.
    @return uint256 The wei sent.
    """
    return self._withdraw(msg.sender)


@external
@nonreentrant
def withdraw_for(account: address) -> uint256:
    """
    @notice Sends `account` its whole credited balance (anyone may call).
    @param account The account to pay.
    @return uint256 The wei sent.
    """
    return self._withdraw(account)


# -------------------------------------------------------------------- admin


@external
def set_challenge_window(model_id: uint256, seconds: uint256):
    """
    @notice Sets a model's challenge window (its publisher in the
            DataRegistry only); requests posted from now on use it.
    @param model_id The model.
    @param seconds The window, 0 (final at once) to MAX_CHALLENGE_WINDOW.
    """
    publisher: address = staticcall registry.model_publisher(model_id)
    assert publisher != empty(address), "aioracle: unknown model"
    assert msg.sender == publisher, "aioracle: caller is not the publisher"
    assert seconds <= MAX_CHALLENGE_WINDOW, "aioracle: challenge window too long"
    self._window_plus_one[model_id] = seconds + 1
    log ChallengeWindowSet(model_id=model_id, seconds=seconds)


@external
def set_params(gas_price: uint256, agent_fee: uint256, challenge_bond: uint256, response_window: uint256, committee_window: uint256):
    """
    @notice Sets the pricing and timing parameters (owner only); open requests
            keep their reserve, fee and deadlines.
    @param gas_price Wei per gas of callback gas.
    @param agent_fee Wei per request for the agents.
    @param challenge_bond Least bond of a challenge.
    @param response_window Seconds to post a result (1..MAX_RESPONSE_WINDOW).
    @param committee_window Seconds for the committee (1..MAX_COMMITTEE_WINDOW).
    """
    ownable._check_owner()
    self._set_params(gas_price, agent_fee, challenge_bond, response_window, committee_window)


@external
@nonreentrant
def sweep(to: address) -> uint256:
    """
    @notice Sends what this contract holds beyond everything it owes (owner
            only): ETH forced in, or refunds of a callback task the oracle
            settled directly in the escrow. Never touches what is owed.
    @param to The recipient.
    @return uint256 The wei sent.
    """
    ownable._check_owner()
    amount: uint256 = self._surplus()
    assert amount != 0, "aioracle: nothing to sweep"
    self._pull_escrow(amount)
    log Swept(to=to, amount=amount)
    self._send(to, amount)
    return amount


# -------------------------------------------------------------------- views


@external
@view
def request(request_id: uint256) -> Request:
    """
    @notice A request (all zero if unknown).
    @param request_id The request.
    @return Request Its record.
    """
    a: uint256 = self._req_a[request_id]
    b: uint256 = self._req_b[request_id]
    c: uint256 = self._req_c[request_id]
    ch: uint256 = self._challenge[request_id]
    return Request(
        refund_to=self._refund_to(a),
        callback=convert(convert(b & _MASK_160, uint160), address),
        gas_limit=(a >> _GAS_SHIFT) & _MASK_64,
        model_id=b >> _MODEL_SHIFT,
        state=(a >> _STATE_SHIFT) & _MASK_8,
        challenge_window=(b >> _WINDOW_SHIFT) & _MASK_32,
        due=(c >> _DUE_SHIFT) & _MASK_40,
        escrow_deadline=(c >> _EDL_SHIFT) & _MASK_40,
        reserve=c & _MASK_96,
        output_is_cid=(a >> _CID_SHIFT) & 1 == 1,
        original_agents=(a >> _NORIG_SHIFT) & _MASK_8,
        challenger=convert(convert(ch & _MASK_160, uint160), address),
        bond=ch >> _BOND_SHIFT,
    )


@external
@view
def is_finalized(request_id: uint256) -> bool:
    """
    @notice Whether the request's result is final and was delivered.
    @param request_id The request.
    @return bool True once delivered.
    """
    return (self._req_a[request_id] >> _STATE_SHIFT) & _MASK_8 == FINAL


@external
@view
def isFinalized(requestId: uint256) -> bool:
    """
    @notice ORA OAO's name for `is_finalized`.
    """
    return (self._req_a[requestId] >> _STATE_SHIFT) & _MASK_8 == FINAL


@external
@view
def settlement_hash(request_id: uint256) -> bytes32:
    """
    @notice keccak256(abi_encode(settlement)) of the posted settlement.
    @param request_id The request.
    @return bytes32 The hash (empty before a provisional result).
    """
    return self._settlement_hash[request_id]


@external
@view
def challenge_window(model_id: uint256) -> uint256:
    """
    @notice The challenge window a request for `model_id` gets now.
    @param model_id The model.
    @return uint256 Seconds.
    """
    return self._window(model_id)


@external
@view
def surplus() -> uint256:
    """
    @notice What `sweep` would send now.
    @return uint256 Wei.
    """
    return self._surplus()


# ----------------------------------------------------------------- internal


@internal
def _request(model_id: uint256, input: Bytes[_INPUT_ABI], callback: address, gas_limit: uint64, callback_data: Bytes[_DATA_ABI], paid: uint256) -> uint256:
    assert len(input) != 0, "aioracle: empty input"
    assert len(input) <= MAX_INPUT_BYTES, "aioracle: input too long"
    assert len(callback_data) <= MAX_CALLBACK_DATA_BYTES, "aioracle: callback data too long"
    assert gas_limit != 0, "aioracle: zero gas limit"
    assert convert(gas_limit, uint256) <= MAX_GAS_LIMIT, "aioracle: gas limit above maximum"
    assert callback.is_contract, "aioracle: callback is not a contract"
    task_fee: uint256 = 0
    model_fee: uint256 = 0
    task_fee, model_fee = self._task_fee(model_id)
    # <= 2**96 - 1: gas_limit <= MAX_GAS_LIMIT and set_params bounds gas_price
    reserve: uint256 = convert(gas_limit, uint256) * self.gas_price
    assert paid >= task_fee + reserve, "aioracle: fee below estimate"

    window: uint256 = self._window(model_id)
    fulfil_by: uint256 = block.timestamp + self.response_window
    deadline: uint256 = fulfil_by + window + self.committee_window + SETTLE_GRACE
    request_id: uint256 = extcall escrow.post_task(model_id, self._file_digest(input), deadline, TASK_K, model_fee, value=task_fee)

    refund_to: address = self.payee_of[msg.sender]
    if refund_to == empty(address):
        refund_to = tx.origin
    self._req_a[request_id] = convert(refund_to, uint256) | (convert(gas_limit, uint256) << _GAS_SHIFT) | (REQUESTED << _STATE_SHIFT)
    self._req_b[request_id] = convert(callback, uint256) | (window << _WINDOW_SHIFT) | (model_id << _MODEL_SHIFT)
    self._req_c[request_id] = reserve | (fulfil_by << _DUE_SHIFT) | (deadline << _EDL_SHIFT)
    if len(callback_data) != 0:
        self._data_hash[request_id] = keccak256(callback_data)
    self.total_held += reserve
    self.total_open_fees += task_fee
    excess: uint256 = paid - task_fee - reserve
    if excess != 0:
        self._credit(refund_to, request_id, excess)
    log AICallbackRequest(
        account=msg.sender,
        request_id=request_id,
        model_id=model_id,
        input=input,
        callback_contract=callback,
        gas_limit=gas_limit,
        callback_data=callback_data,
    )
    log RequestTerms(
        request_id=request_id,
        refund_to=refund_to,
        task_fee=task_fee,
        reserve=reserve,
        fulfil_by=fulfil_by,
        challenge_window=window,
        escrow_deadline=deadline,
    )
    return request_id


@internal
@view
def _task_fee(model_id: uint256) -> (uint256, uint256):
    """
    @dev The least escrow fee f with f - f*pbps//BPS - f*dbps//BPS >= model fee
         + agent_fee (what the escrow leaves the agents), and the model fee.
    """
    active: bool = False
    model_fee: uint256 = 0
    receiver: address = empty(address)
    active, model_fee, receiver = staticcall registry.model_pricing(model_id)
    assert active, "aioracle: unknown or inactive model"
    shares: uint256 = staticcall escrow.protocol_fee_bps() + staticcall escrow.data_share_bps()
    need: uint256 = model_fee + self.agent_fee
    fee: uint256 = (need * BPS + BPS - shares - 1) // (BPS - shares)
    return max(fee, 1), model_fee


@internal
@view
def _window(model_id: uint256) -> uint256:
    w: uint256 = self._window_plus_one[model_id]
    if w == 0:
        return DEFAULT_CHALLENGE_WINDOW
    return w - 1


@internal
@pure
def _hash_data(data: Bytes[MAX_CALLBACK_DATA_BYTES]) -> bytes32:
    if len(data) == 0:
        return empty(bytes32)
    return keccak256(data)


@internal
@pure
def _check_output(output: Bytes[MAX_OUTPUT_BYTES], is_cid: bool, digest: bytes32):
    """
    @dev The output must name `digest`: the digest of its `ipfs add` CID (see
         _file_digest), or its binary CID (v0 0x1220 || digest, or v1 dag-pb
         0x01 0x70 0x1220 || digest; a raw-codec CID would name other bytes).
    """
    ok: bool = False
    if is_cid:
        ok = output == concat(b"\x12\x20", digest) or output == concat(b"\x01\x70\x12\x20", digest)
    else:
        ok = self._file_digest(output) == digest
    assert ok, "aioracle: output does not match the result digest"


@internal
@pure
def _varint(n: uint256) -> Bytes[2]:
    # protobuf varint of n < 16,384 (every length here is at most 8,203)
    if n < 128:
        return slice(convert(n, bytes32), 31, 1)
    return concat(slice(convert((n & 127) | 128, bytes32), 31, 1), slice(convert(n >> 7, bytes32), 31, 1))


@internal
@pure
def _file_digest(data: Bytes[_INPUT_ABI]) -> bytes32:
    """
    @dev The sha2-256 inside the CIDv0 `ipfs add` gives a file of one chunk
         (<= 256 KiB): its dag-pb node PBNode{Data: UnixFS{Type: File, Data:
         data, filesize}}. Inputs and outputs are then named on-chain exactly
         as every other task's content, so the oracle's store and the agents
         need no second kind of CID.
    """
    n: uint256 = len(data)
    unixfs: Bytes[_INPUT_ABI + 8] = b"\x08\x02\x18\x00"
    if n != 0:
        unixfs = concat(b"\x08\x02\x12", self._varint(n), data, b"\x18", self._varint(n))
    return sha256(concat(b"\x0a", self._varint(len(unixfs)), unixfs))


@internal
@view
def _check_posted(request_id: uint256, a: uint256, output: Bytes[MAX_OUTPUT_BYTES], settlement: Bytes[SETTLEMENT_ABI_BYTES], callback_data: Bytes[MAX_CALLBACK_DATA_BYTES]):
    assert keccak256(settlement) == self._settlement_hash[request_id], "aioracle: wrong settlement"
    assert keccak256(output) == self._output_hash[request_id], "aioracle: not the posted output"
    assert self._hash_data(callback_data) == self._data_hash[request_id], "aioracle: wrong callback data"


@internal
def _end_task(request_id: uint256, settlements: DynArray[Bytes[SETTLEMENT_ABI_BYTES], 3], refund: bool) -> (uint256, uint256):
    """
    @dev Brings the escrow task to an end: the first of `settlements` that
         escrow.settle accepts, else (with `refund`) a refund of the whole fee
         (failing the task first if open and before its deadline). Returns the
         wei the escrow credited this contract for it, and which settlement
         applied (1-based; 0: none). A task refunded by someone else already
         (the escrow's refund is open to anyone past the deadline) counts its
         fee; one the oracle settled in the escrow directly counts nothing
         (its refund is left to `sweep`).
    """
    before: uint256 = staticcall escrow.balance_of(self)
    applied: uint256 = 0
    for i: uint256 in range(len(settlements), bound=3):
        if raw_call(escrow.address, concat(SETTLE_SELECTOR, settlements[i]), max_outsize=0, revert_on_failure=False):
            applied = i + 1
            break
    credited: uint256 = 0
    if applied == 0 and refund:
        t: ITaskEscrow.Task = staticcall escrow.task(request_id)
        if t.state == _T_OPEN:
            if block.timestamp <= t.deadline:
                extcall escrow.fail_task(request_id, "aioracle: request ended without a final settlement", [])
            extcall escrow.refund(request_id)
        elif t.state == _T_FAILED:
            extcall escrow.refund(request_id)
        elif t.state == _T_REFUNDED:
            credited = t.fee
    return staticcall escrow.balance_of(self) - before + credited, applied


@internal
def _close_fees(request_id: uint256, a: uint256, delta: uint256):
    """
    @dev The request's task is over: its refund goes to the refund address, its
         reserve to whoever delivers (msg.sender), and it becomes FINAL.
    """
    self._req_a[request_id] = self._with_state(a, FINAL)
    reserve: uint256 = self._req_c[request_id] & _MASK_96
    self.total_open_fees -= self._task_fee_of(request_id)
    self.total_held -= reserve
    if delta != 0:
        self._credit(self._refund_to(a), request_id, delta)
    if reserve != 0:
        self._credit(msg.sender, request_id, reserve)


@internal
def _deliver(request_id: uint256, a: uint256, output: Bytes[MAX_OUTPUT_BYTES], callback_data: Bytes[MAX_CALLBACK_DATA_BYTES], settled: bool):
    """
    @dev The one delivery: state is FINAL before this runs (exactly once); the
         callback gets exactly gas_limit (the 63/64 rule: the caller must bring
         gas_limit + gas_limit/63 + CALLBACK_GAS_RESERVE at the check, else
         the whole delivery reverts and can be retried with more gas). A
         reverting or gas-hungry callback costs only its own gas_limit; its
         returndata is never copied.
    """
    callback: address = convert(convert(self._req_b[request_id] & _MASK_160, uint160), address)
    gas_limit: uint256 = (a >> _GAS_SHIFT) & _MASK_64
    log AICallbackResult(account=callback, request_id=request_id, invoker=msg.sender, output=output)
    payload: Bytes[4 + 32 * 5 + MAX_OUTPUT_BYTES + MAX_CALLBACK_DATA_BYTES] = abi_encode(request_id, output, callback_data, method_id=CALLBACK_SELECTOR)
    assert msg.gas >= gas_limit + gas_limit // 63 + CALLBACK_GAS_RESERVE, "aioracle: not enough gas for the callback"
    success: bool = raw_call(callback, payload, gas=gas_limit, max_outsize=0, revert_on_failure=False)
    log CallbackDelivered(request_id=request_id, callback=callback, success=success, settled=settled)


@internal
def _settle_overturn(request_id: uint256, a: uint256, settlement: Bytes[SETTLEMENT_ABI_BYTES], t: IAICommittee.Tally) -> uint256:
    """
    @dev Settles the committee's digest: its signers paid the whole agents'
         share, the original agents slashed on their Result signatures over
         the posted digest (if the task is slashable); falling back to no
         agents paid, then to no slashes. Credits the refund to the refund
         address and returns the requester's half of the slash (the
         challenger's reward): what the escrow credited beyond the refund the
         settlement implies.
    """
    task: ITaskEscrow.Task = staticcall escrow.task(request_id)
    pbps: uint256 = 0
    dbps: uint256 = 0
    pbps, dbps = staticcall escrow.task_fee_shares(request_id)
    protocol: uint256 = task.fee * pbps // BPS
    left: uint256 = task.fee - protocol - task.fee * dbps // BPS - task.model_fee

    full: Bytes[SETTLEMENT_ABI_BYTES] = b""
    no_agents: Bytes[SETTLEMENT_ABI_BYTES] = b""
    bare: Bytes[SETTLEMENT_ABI_BYTES] = b""
    full, no_agents, bare = staticcall committee.corrections(settlement, t.best, t.signers, t.signatures, left, staticcall escrow.task_slashable(request_id))
    n_paid: uint256 = len(t.signers)
    delta: uint256 = 0
    applied: uint256 = 0
    delta, applied = self._end_task(request_id, [full, no_agents, bare], True)
    reward: uint256 = 0
    if applied != 0:
        # the refund the applied settlement implies (no datasets: the data
        # share is refunded); the rest of what the escrow credited is the
        # requester's half of the slash
        active: bool = False
        price: uint256 = 0
        receiver: address = empty(address)
        active, price, receiver = staticcall registry.model_pricing(task.model_id)
        model_paid: uint256 = task.model_fee
        if receiver == empty(address):
            model_paid = 0
        agents_paid: uint256 = 0
        if applied == 1 and n_paid != 0:
            agents_paid = left // n_paid * n_paid
        refund: uint256 = task.fee - protocol - model_paid - agents_paid
        reward = delta - min(delta, refund)
    self._close_fees(request_id, a, delta - reward)
    return reward


@internal
def _split_bond(request_id: uint256, bond: uint256, upholders: DynArray[address, COMMITTEE_SIZE], agents: DynArray[address, 5]):
    """
    @dev A frivolous challenge's bond: half to the original agents (equally),
         the rest to the committee members who upheld the result (equally,
         the last one taking the rounding remainder).
    """
    to_agents: uint256 = 0
    if len(agents) != 0:
        each: uint256 = bond // 2 // len(agents)
        for x: address in agents:
            self._credit(x, request_id, each)
        to_agents = each * len(agents)
    rest: uint256 = bond - to_agents
    each_member: uint256 = rest // len(upholders)
    for i: uint256 in range(len(upholders), bound=COMMITTEE_SIZE):
        amount: uint256 = each_member
        if i == len(upholders) - 1:
            amount = rest - each_member * (len(upholders) - 1)
        self._credit(upholders[i], request_id, amount)


@internal
def _credit(account: address, request_id: uint256, amount: uint256):
    if amount == 0:
        return
    self.balance_of[account] += amount
    self.total_credited += amount
    log Credited(account=account, request_id=request_id, amount=amount)


@internal
def _withdraw(account: address) -> uint256:
    amount: uint256 = self.balance_of[account]
    assert amount != 0, "aioracle: nothing to withdraw"
    self.balance_of[account] = 0
    self.total_credited -= amount
    self._pull_escrow(amount)
    log Withdrawn(account=account, amount=amount)
    self._send(account, amount)
    return amount


@internal
def _pull_escrow(amount: uint256):
    """
    @dev Withdraws this contract's escrow credits if its own ETH falls short.
    """
    if self.balance < amount and staticcall escrow.balance_of(self) != 0:
        extcall escrow.withdraw()


@internal
def _send(to: address, amount: uint256):
    success: bool = raw_call(to, b"", value=amount, revert_on_failure=False)
    assert success, "aioracle: transfer failed"


@internal
@view
def _surplus() -> uint256:
    held: uint256 = self.balance + staticcall escrow.balance_of(self)
    owed: uint256 = self.total_credited + self.total_held + self.total_open_fees
    if held <= owed:
        return 0
    return held - owed


@internal
@view
def _task_fee_of(request_id: uint256) -> uint256:
    return (staticcall escrow.task(request_id)).fee


@internal
def _set_params(gas_price: uint256, agent_fee: uint256, challenge_bond: uint256, response_window: uint256, committee_window: uint256):
    assert gas_price * MAX_GAS_LIMIT <= _MASK_96, "aioracle: gas price too high"
    assert agent_fee <= _MASK_96, "aioracle: agent fee too large"
    assert challenge_bond <= _MASK_96, "aioracle: bond too large"
    assert response_window != 0 and response_window <= MAX_RESPONSE_WINDOW, "aioracle: response window out of range"
    assert committee_window != 0 and committee_window <= MAX_COMMITTEE_WINDOW, "aioracle: committee window out of range"
    self.gas_price = gas_price
    self.agent_fee = agent_fee
    self.challenge_bond = challenge_bond
    self.response_window = response_window
    self.committee_window = committee_window
    log ParamsSet(gas_price=gas_price, agent_fee=agent_fee, challenge_bond=challenge_bond, response_window=response_window, committee_window=committee_window)


@internal
@pure
def _refund_to(a: uint256) -> address:
    return convert(convert(a & _MASK_160, uint160), address)


@internal
@pure
def _with_state(a: uint256, state: uint256) -> uint256:
    return (a & ~(_MASK_8 << _STATE_SHIFT)) | (state << _STATE_SHIFT)


@internal
@pure
def _with_due(c: uint256, due: uint256) -> uint256:
    return (c & ~(_MASK_40 << _DUE_SHIFT)) | (due << _DUE_SHIFT)
