# pragma version ~=0.4.3
"""
@title Tributa AICommittee
@custom:contract-name AICommittee
@license MIT
@notice The judges of AIOracle challenges: per-model rosters of staked agents
        serving the model (agents opt in; the TaskEscrow cannot list its
        agents), the draw of a challenge's candidates from prevrandao and the
        request id, and the count of the committee's signed verdicts;
        AIOracle acts on the tally. Members hold a deposit here (at least
        `member_deposit` to join a roster): a drawn committee member that
        gives no verdict by the committee deadline loses
        SILENCE_PENALTY_BPS of it to the escrow's treasury. A member proves
        it answered by its signature: in the verdicts `resolve` counted, or
        posted here itself (`post_verdict`) before the deadline.
@dev A verdict is the member's EIP-712 Result(task_id, digest) signature under
     the TaskEscrow's domain: for the posted digest it upholds the result; for
     another digest it votes for that digest as the replacement, and the same
     signature then pays the member in the escrow's settlement of it.
"""

from snekmate.utils import ecdsa

import interfaces.IAICommittee as IAICommittee
import interfaces.ITaskEscrow as ITaskEscrow

implements: IAICommittee

COMMITTEE_SIZE: public(constant(uint256)) = 3
MAX_ROSTER: public(constant(uint256)) = 64
# @dev Share of its deposit a silent committee member loses.
SILENCE_PENALTY_BPS: public(constant(uint256)) = 5_000
# @dev A drawn candidate's deposit stays until this long after the challenge's
#      last possible resolve (anyone's `penalize` fits in it).
DEPOSIT_LOCK: public(constant(uint256)) = 3 * 86_400
_BPS: constant(uint256) = 10_000
# @dev Draw attempts (with replacement) before giving up.
_MAX_DRAWS: constant(uint256) = 64

escrow: public(immutable(ITaskEscrow))
member_deposit: public(immutable(uint256))
_deployer: immutable(address)
# @dev The AIOracle whose challenges draw and tally here (bound once by the deployer).
oracle: public(address)

_roster: HashMap[uint256, DynArray[address, MAX_ROSTER]]
_roster_pos: HashMap[uint256, HashMap[address, uint256]]  # index + 1
_rosters_of: HashMap[address, uint256]

deposit_of: public(HashMap[address, uint256])
locked_until: public(HashMap[address, uint256])
credit_of: public(HashMap[address, uint256])
total_deposits: public(uint256)
total_credits: public(uint256)
# @dev Per challenge (request id): its committee deadline, who gave a verdict,
#      and who was found silent at its tally.
deadline_of: public(HashMap[uint256, uint256])
answered: public(HashMap[uint256, HashMap[address, bool]])
silent: public(HashMap[uint256, HashMap[address, bool]])
# @dev Verdicts posted on-chain before the deadline (digest, signature): the
#      tally counts them with those `resolve` brings, so nobody can resolve
#      around them.
posted_digest: public(HashMap[uint256, HashMap[address, bytes32]])
_posted_signature: HashMap[uint256, HashMap[address, Bytes[65]]]


event Bound:
    oracle: indexed(address)

event Deposited:
    agent: indexed(address)
    amount: uint256

event DepositWithdrawn:
    agent: indexed(address)
    amount: uint256

event VerdictPosted:
    request_id: indexed(uint256)
    member: indexed(address)
    result_digest: bytes32

event SilenceRecorded:
    request_id: indexed(uint256)
    member: indexed(address)

event Penalized:
    request_id: indexed(uint256)
    member: indexed(address)
    amount: uint256
    to: address

event Withdrawn:
    account: indexed(address)
    amount: uint256


@deploy
def __init__(escrow_: ITaskEscrow, member_deposit_: uint256):
    """
    @param escrow_ The TaskEscrow whose agents sit on the committees.
    @param member_deposit_ The least deposit (wei) of a roster member.
    """
    assert escrow_.address != empty(address), "committee: zero escrow"
    assert member_deposit_ != 0, "committee: zero member deposit"
    escrow = escrow_
    member_deposit = member_deposit_
    _deployer = msg.sender


@external
def bind(oracle_: address):
    """
    @notice Names the AIOracle that may draw and tally (the deployer, once).
    @param oracle_ The AIOracle.
    """
    assert msg.sender == _deployer, "committee: caller is not the deployer"
    assert self.oracle == empty(address), "committee: already bound"
    assert oracle_.is_contract, "committee: oracle is not a contract"
    self.oracle = oracle_
    log Bound(oracle=oracle_)


@external
@payable
def join(model_id: uint256):
    """
    @notice Puts the caller on `model_id`'s roster; it must be a staked agent
            serving the model in the escrow, with at least `member_deposit`
            deposited (msg.value adds to its deposit).
    @param model_id The model.
    """
    assert staticcall escrow.serves_model(msg.sender, model_id), "committee: not an agent serving the model"
    assert self._roster_pos[model_id][msg.sender] == 0, "committee: already on the roster"
    assert len(self._roster[model_id]) < MAX_ROSTER, "committee: roster full"
    self._add_deposit(msg.sender, msg.value)
    assert self.deposit_of[msg.sender] >= member_deposit, "committee: deposit below minimum"
    self._roster[model_id].append(msg.sender)
    self._roster_pos[model_id][msg.sender] = len(self._roster[model_id])
    self._rosters_of[msg.sender] += 1
    log IAICommittee.CommitteeJoined(model_id=model_id, agent=msg.sender)


@external
@payable
def deposit():
    """
    @notice Adds msg.value to the caller's deposit (e.g. after a penalty).
    """
    assert msg.value != 0, "committee: nothing deposited"
    self._add_deposit(msg.sender, msg.value)


@external
@nonreentrant
def withdraw_deposit(amount: uint256):
    """
    @notice Takes back `amount` of the caller's deposit: once it is on no
            roster and no challenge that drew it can still penalize it.
    @param amount Wei.
    """
    assert self._rosters_of[msg.sender] == 0, "committee: leave every roster first"
    assert block.timestamp > self.locked_until[msg.sender], "committee: deposit locked by a challenge"
    assert amount != 0 and amount <= self.deposit_of[msg.sender], "committee: amount above the deposit"
    self.deposit_of[msg.sender] -= amount
    self.total_deposits -= amount
    log DepositWithdrawn(agent=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


@external
def post_verdict(request_id: uint256, result_digest: bytes32, signature: Bytes[65]):
    """
    @notice Records a verdict on-chain before the committee deadline (anyone
            may post a member's signature): proof that the member answered,
            and a vote the tally counts whatever verdicts `resolve` brings
            (a member's first posted verdict stands).
    @param request_id The challenged request (its escrow task id).
    @param result_digest The digest the member signed.
    @param signature Its Result(request_id, result_digest) signature.
    """
    deadline: uint256 = self.deadline_of[request_id]
    assert deadline != 0, "committee: no challenge drawn for this request"
    assert block.timestamp <= deadline, "committee: committee deadline passed"
    member: address = self._recover(staticcall escrow.result_digest_to_sign(request_id, result_digest), signature)
    assert member != empty(address), "committee: bad verdict signature"
    if self.posted_digest[request_id][member] == empty(bytes32):
        self.posted_digest[request_id][member] = result_digest
        self._posted_signature[request_id][member] = signature
    self.answered[request_id][member] = True
    self.silent[request_id][member] = False
    log VerdictPosted(request_id=request_id, member=member, result_digest=result_digest)


@external
def penalize(request_id: uint256, member: address):
    """
    @notice Takes SILENCE_PENALTY_BPS of a silent member's deposit to the
            escrow's treasury (anyone, after the committee deadline).
    @param request_id The challenge's request.
    @param member A committee member its tally found without a verdict.
    """
    assert self.silent[request_id][member], "committee: no silence recorded"
    assert block.timestamp > self.deadline_of[request_id], "committee: committee deadline not passed"
    self.silent[request_id][member] = False
    amount: uint256 = self.deposit_of[member] * SILENCE_PENALTY_BPS // _BPS
    treasury: address = staticcall escrow.treasury()
    self.deposit_of[member] -= amount
    self.total_deposits -= amount
    self.credit_of[treasury] += amount
    self.total_credits += amount
    log Penalized(request_id=request_id, member=member, amount=amount, to=treasury)


@external
@nonreentrant
def withdraw() -> uint256:
    """
    @notice Sends the caller its credit (penalties, to the treasury).
    @return uint256 Wei sent.
    """
    amount: uint256 = self.credit_of[msg.sender]
    assert amount != 0, "committee: nothing to withdraw"
    self.credit_of[msg.sender] = 0
    self.total_credits -= amount
    log Withdrawn(account=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)
    return amount


@external
def leave(model_id: uint256):
    """
    @notice Takes the caller off `model_id`'s roster (open challenges keep the
            candidates they drew).
    @param model_id The model.
    """
    self._remove(model_id, msg.sender)


@external
def prune(model_id: uint256, agent: address):
    """
    @notice Takes an agent that no longer serves the model, or whose deposit
            fell below `member_deposit`, off its roster (anyone): a roster
            full of members that cannot be drawn would make the model
            unchallengeable.
    @param model_id The model.
    @param agent The agent.
    """
    assert not staticcall escrow.serves_model(agent, model_id) or self.deposit_of[agent] < member_deposit, "committee: agent still serves the model"
    self._remove(model_id, agent)


@external
@view
def roster(model_id: uint256) -> DynArray[address, MAX_ROSTER]:
    """
    @notice The agents on a model's roster.
    @param model_id The model.
    @return DynArray The agents.
    """
    return self._roster[model_id]


@external
def draw(model_id: uint256, request_id: uint256, need: uint256, exclude: address, deadline: uint256, last_resolve: uint256) -> DynArray[address, 5]:
    """
    @notice Draws `need` (<= 5) distinct roster members that serve the model
            now, never `exclude`, from keccak(prevrandao, request_id, i);
            fewer if the roster cannot supply them within 64 draws (the bound
            AIOracle only, at a challenge). Their deposits stay until
            DEPOSIT_LOCK after `last_resolve`, so a late tally still finds
            a silent member's deposit.
    @param model_id The model.
    @param request_id The request (seeds the draw with prevrandao).
    @param need How many.
    @param exclude An account never drawn (the challenger).
    @param deadline The committee deadline of the challenge.
    @param last_resolve When its resolve may come at the latest (the escrow deadline).
    @return DynArray The candidates, in draw order.
    """
    assert msg.sender == self.oracle, "committee: caller is not the AIOracle"
    picked: DynArray[address, 5] = []
    n: uint256 = len(self._roster[model_id])
    if n == 0:
        return picked
    seed: bytes32 = keccak256(abi_encode(block.prevrandao, request_id))
    for i: uint256 in range(_MAX_DRAWS):
        if len(picked) == need or len(picked) == 5:
            break
        x: address = self._roster[model_id][convert(keccak256(abi_encode(seed, i)), uint256) % n]
        if x == exclude or x in picked or self.deposit_of[x] < member_deposit:
            continue
        if not staticcall escrow.serves_model(x, model_id):
            continue
        picked.append(x)
    self.deadline_of[request_id] = deadline
    for x: address in picked:
        self.locked_until[x] = max(self.locked_until[x], max(deadline, last_resolve) + DEPOSIT_LOCK)
    return picked


@external
@view
def committee_of(candidates: DynArray[address, 5], original_agents: DynArray[address, 5]) -> DynArray[address, COMMITTEE_SIZE]:
    """
    @notice The committee: the first COMMITTEE_SIZE candidates that are not
            original agents of the challenged result.
    @param candidates The drawn candidates.
    @param original_agents The challenged settlement's paid agents.
    @return DynArray The members.
    """
    return self._committee(candidates, original_agents)


@external
def tally(task_id: uint256, candidates: DynArray[address, 5], settlement: Bytes[3904], verdicts: DynArray[IAICommittee.Verdict, COMMITTEE_SIZE]) -> IAICommittee.Tally:
    """
    @notice Counts signed verdicts of distinct committee members: who signed
            the posted digest, and the other digest most signed (first seen on
            a tie) with its signers. Reverts on a verdict of a non-member, a
            second verdict of a member or a signature that does not recover
            to its member. Verdicts posted on-chain (`post_verdict`) count
            too, in place of any other `resolve` brings for their member.
            Records as silent each member with neither: `penalize` takes part
            of its deposit after the committee deadline unless it posts one
            by then. The bound AIOracle only, at `resolve`.
    @param task_id The escrow task (= request id).
    @param candidates The drawn candidates.
    @param settlement The challenged settlement, ABI-encoded (its paid
           agents are the original agents; its digest the posted one).
    @param verdicts The verdicts.
    @return Tally The count.
    """
    assert msg.sender == self.oracle, "committee: caller is not the AIOracle"
    s: ITaskEscrow.Settlement = abi_decode(settlement, ITaskEscrow.Settlement)
    posted: bytes32 = s.result_digest
    committee: DynArray[address, COMMITTEE_SIZE] = self._committee(candidates, s.agents)
    seen: DynArray[address, COMMITTEE_SIZE] = []
    t: IAICommittee.Tally = empty(IAICommittee.Tally)
    t.posted = posted
    t.originals = s.agents
    counted: DynArray[IAICommittee.Verdict, COMMITTEE_SIZE] = []
    for v: IAICommittee.Verdict in verdicts:
        assert v.member in committee, "committee: not a committee member"
        assert v.member not in seen, "committee: duplicate verdict"
        seen.append(v.member)
        digest: bytes32 = staticcall escrow.result_digest_to_sign(task_id, v.result_digest)
        assert self._recover(digest, v.signature) == v.member, "committee: bad verdict signature"
        if self.posted_digest[task_id][v.member] == empty(bytes32):
            counted.append(v)
        self.answered[task_id][v.member] = True
    for m: address in committee:
        # a verdict posted on-chain counts, whether or not `resolve` brought it (its first one)
        if self.posted_digest[task_id][m] != empty(bytes32):
            counted.append(IAICommittee.Verdict(member=m, result_digest=self.posted_digest[task_id][m], signature=self._posted_signature[task_id][m]))
        elif not self.answered[task_id][m]:
            self.silent[task_id][m] = True
            log SilenceRecorded(request_id=task_id, member=m)
    for v: IAICommittee.Verdict in counted:
        if v.result_digest == posted:
            t.upholders.append(v.member)
    best_count: uint256 = 0
    for v: IAICommittee.Verdict in counted:
        if v.result_digest == posted:
            continue
        count: uint256 = 0
        for u: IAICommittee.Verdict in counted:
            if u.result_digest == v.result_digest:
                count += 1
        if count > best_count:
            best_count = count
            t.best = v.result_digest
    if best_count != 0:
        for v: IAICommittee.Verdict in counted:
            if v.result_digest == t.best:
                t.signers.append(v.member)
                t.signatures.append(v.signature)
    return t


@external
@view
def corrections(
    settlement: Bytes[3904],
    digest: bytes32,
    signers: DynArray[address, COMMITTEE_SIZE],
    signatures: DynArray[Bytes[65], COMMITTEE_SIZE],
    agent_fee: uint256,
    slash: bool,
) -> (Bytes[3904], Bytes[3904], Bytes[3904]):
    """
    @notice The escrow settlements that replace an overturned one, ABI-encoded
            as escrow.settle takes them, most complete first: `digest` settled
            paying its signers `agent_fee` and (with `slash`) slashing the
            overturned settlement's paid agents on their own Result
            signatures over its digest (conflict proofs); then without agents
            paid; then without slashes too. No datasets: the replacement's
            attribution is signed by nobody the contract can check, so its
            data share is refunded.
    @param settlement The overturned settlement, ABI-encoded.
    @param digest The committee's digest.
    @param signers Members who signed it.
    @param signatures Their Result signatures.
    @param agent_fee The agents' share of the task.
    @param slash Whether the task takes slash proofs (escrow.task_slashable).
    @return Bytes The full settlement.
    @return Bytes Without agents paid.
    @return Bytes Without agents paid or slashed.
    """
    s: ITaskEscrow.Settlement = abi_decode(settlement, ITaskEscrow.Settlement)
    full: ITaskEscrow.Settlement = empty(ITaskEscrow.Settlement)
    full.task_id = s.task_id
    full.result_digest = digest
    full.agents = signers
    for x: Bytes[65] in signatures:
        full.signatures.append(x)
    full.agent_fee = agent_fee
    if slash:
        for i: uint256 in range(len(s.agents), bound=5):
            full.slashed.append(ITaskEscrow.SlashProof(agent=s.agents[i], result_digest=s.result_digest, expires_at=0, signature=s.signatures[i]))
    first: Bytes[3904] = abi_encode(full)
    full.agents = []
    full.signatures = []
    full.agent_fee = 0
    second: Bytes[3904] = abi_encode(full)
    full.slashed = []
    return first, second, abi_encode(full)


@internal
@pure
def _committee(candidates: DynArray[address, 5], original_agents: DynArray[address, 5]) -> DynArray[address, COMMITTEE_SIZE]:
    committee: DynArray[address, COMMITTEE_SIZE] = []
    for x: address in candidates:
        if len(committee) == COMMITTEE_SIZE:
            break
        if x not in original_agents:
            committee.append(x)
    return committee


@internal
def _add_deposit(agent: address, amount: uint256):
    if amount != 0:
        self.deposit_of[agent] += amount
        self.total_deposits += amount
        log Deposited(agent=agent, amount=amount)


@internal
def _remove(model_id: uint256, agent: address):
    pos: uint256 = self._roster_pos[model_id][agent]
    assert pos != 0, "committee: not on the roster"
    last: uint256 = len(self._roster[model_id])
    if pos != last:
        moved: address = self._roster[model_id][last - 1]
        self._roster[model_id][pos - 1] = moved
        self._roster_pos[model_id][moved] = pos
    self._roster[model_id].pop()
    self._roster_pos[model_id][agent] = 0
    self._rosters_of[agent] -= 1
    log IAICommittee.CommitteeLeft(model_id=model_id, agent=agent)


@internal
@pure
def _recover(digest: bytes32, signature: Bytes[65]) -> address:
    """
    @dev A 65-byte (r, s, v) signature's signer with snekmate's malleability
         bound, or the zero address (never reverts), as in TaskEscrow.
    """
    if len(signature) != 65:
        return empty(address)
    r: uint256 = extract32(signature, 0, output_type=uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    if s > ecdsa._MALLEABILITY_THRESHOLD or unsafe_sub(v, 27) > 1:
        return empty(address)
    return ecrecover(digest, v, r, s)
