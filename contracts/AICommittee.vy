# pragma version ~=0.4.3
"""
@title Tributa AICommittee
@custom:contract-name AICommittee
@license MIT
@notice The judges of AIOracle challenges: per-model rosters of staked agents
        serving the model (agents opt in; the TaskEscrow cannot list its
        agents), the draw of a challenge's candidates from prevrandao and the
        request id, and the count of the committee's signed verdicts. Holds
        no money and decides nothing by itself: AIOracle acts on the tally.
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
# @dev Draw attempts (with replacement) before giving up.
_MAX_DRAWS: constant(uint256) = 64

escrow: public(immutable(ITaskEscrow))

_roster: HashMap[uint256, DynArray[address, MAX_ROSTER]]
_roster_pos: HashMap[uint256, HashMap[address, uint256]]  # index + 1


@deploy
def __init__(escrow_: ITaskEscrow):
    """
    @param escrow_ The TaskEscrow whose agents sit on the committees.
    """
    assert escrow_.address != empty(address), "committee: zero escrow"
    escrow = escrow_


@external
def join(model_id: uint256):
    """
    @notice Puts the caller on `model_id`'s roster; it must be a staked agent
            serving the model in the escrow.
    @param model_id The model.
    """
    assert staticcall escrow.serves_model(msg.sender, model_id), "committee: not an agent serving the model"
    assert self._roster_pos[model_id][msg.sender] == 0, "committee: already on the roster"
    assert len(self._roster[model_id]) < MAX_ROSTER, "committee: roster full"
    self._roster[model_id].append(msg.sender)
    self._roster_pos[model_id][msg.sender] = len(self._roster[model_id])
    log IAICommittee.CommitteeJoined(model_id=model_id, agent=msg.sender)


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
    @notice Takes an agent that no longer serves the model off its roster (anyone).
    @param model_id The model.
    @param agent The agent.
    """
    assert not staticcall escrow.serves_model(agent, model_id), "committee: agent still serves the model"
    self._remove(model_id, agent)


@view
@external
def roster(model_id: uint256) -> DynArray[address, MAX_ROSTER]:
    """
    @notice The agents on a model's roster.
    @param model_id The model.
    @return DynArray The agents.
    """
    return self._roster[model_id]


@view
@external
def draw(model_id: uint256, request_id: uint256, need: uint256, exclude: address) -> DynArray[address, 5]:
    """
    @notice Draws `need` (<= 5) distinct roster members that serve the model
            now, never `exclude`, from keccak(prevrandao, request_id, i);
            fewer if the roster cannot supply them within 64 draws.
    @param model_id The model.
    @param request_id The request (seeds the draw with prevrandao).
    @param need How many.
    @param exclude An account never drawn (the challenger).
    @return DynArray The candidates, in draw order.
    """
    picked: DynArray[address, 5] = []
    n: uint256 = len(self._roster[model_id])
    if n == 0:
        return picked
    seed: bytes32 = keccak256(abi_encode(block.prevrandao, request_id))
    for i: uint256 in range(_MAX_DRAWS):
        if len(picked) == need or len(picked) == 5:
            break
        x: address = self._roster[model_id][convert(keccak256(abi_encode(seed, i)), uint256) % n]
        if x == exclude or x in picked:
            continue
        if not staticcall escrow.serves_model(x, model_id):
            continue
        picked.append(x)
    return picked


@view
@external
def committee_of(candidates: DynArray[address, 5], original_agents: DynArray[address, 5]) -> DynArray[address, COMMITTEE_SIZE]:
    """
    @notice The committee: the first COMMITTEE_SIZE candidates that are not
            original agents of the challenged result.
    @param candidates The drawn candidates.
    @param original_agents The challenged settlement's paid agents.
    @return DynArray The members.
    """
    return self._committee(candidates, original_agents)


@view
@external
def tally(task_id: uint256, candidates: DynArray[address, 5], settlement: Bytes[3904], verdicts: DynArray[IAICommittee.Verdict, COMMITTEE_SIZE]) -> IAICommittee.Tally:
    """
    @notice Counts signed verdicts of distinct committee members: who signed
            the posted digest, and the other digest most signed (first seen on
            a tie) with its signers. Reverts on a verdict of a non-member, a
            second verdict of a member or a signature that does not recover
            to its member.
    @param task_id The escrow task (= request id).
    @param candidates The drawn candidates.
    @param settlement The challenged settlement, ABI-encoded (its paid
           agents are the original agents; its digest the posted one).
    @param verdicts The verdicts.
    @return Tally The count.
    """
    s: ITaskEscrow.Settlement = abi_decode(settlement, ITaskEscrow.Settlement)
    posted: bytes32 = s.result_digest
    committee: DynArray[address, COMMITTEE_SIZE] = self._committee(candidates, s.agents)
    seen: DynArray[address, COMMITTEE_SIZE] = []
    t: IAICommittee.Tally = empty(IAICommittee.Tally)
    t.posted = posted
    t.originals = s.agents
    for v: IAICommittee.Verdict in verdicts:
        assert v.member in committee, "committee: not a committee member"
        assert v.member not in seen, "committee: duplicate verdict"
        seen.append(v.member)
        digest: bytes32 = staticcall escrow.result_digest_to_sign(task_id, v.result_digest)
        assert self._recover(digest, v.signature) == v.member, "committee: bad verdict signature"
        if v.result_digest == posted:
            t.upholders.append(v.member)
    best_count: uint256 = 0
    for v: IAICommittee.Verdict in verdicts:
        if v.result_digest == posted:
            continue
        count: uint256 = 0
        for u: IAICommittee.Verdict in verdicts:
            if u.result_digest == v.result_digest:
                count += 1
        if count > best_count:
            best_count = count
            t.best = v.result_digest
    if best_count != 0:
        for v: IAICommittee.Verdict in verdicts:
            if v.result_digest == t.best:
                t.signers.append(v.member)
                t.signatures.append(v.signature)
    return t


@view
@external
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
