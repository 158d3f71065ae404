# pragma version ~=0.4.3
"""
@title Tributa TaskEscrow
@custom:contract-name TaskEscrow
@license MIT
@notice Inference tasks with escrowed fees, deadlines and refunds; compute-agent
        stakes, unbonding and slashing; settlement by the oracle role.
        Task states: 1 OPEN, 2 SETTLED, 3 FAILED, 4 REFUNDED.
        Fee split at settlement (credited here, withdrawn by pull):
          protocol = fee * protocol_fee_bps / 10000   -> treasury
          data     = fee * data_share_bps / 10000     -> RoyaltyVault, split by the
                     attribution weights (the last dataset takes the rounding
                     remainder; refunded to the requester if no weights are given)
          model    = the model's fee_per_task at post time -> the model's CURRENT
                     fee receiver in the DataRegistry (possibly an IMO token)
          agents   = agent_fee // len(agents) to each signing agent
          refund   = the rest (rounding remainders included) -> requester
        Slashing takes slash_bps of an agent's stake + unbonding; half goes to
        the task's requester, capped per task at the task's fee (what makes the
        requester whole), the rest to the treasury. A slash needs the agent's
        own EIP-712 signature (a SlashProof): an expired Lease(task_id,
        expires_at) it accepted (silent agent), or a Result(task_id, digest)
        over a digest other than the settled one (minority result). Only tasks
        posted with fee >= min_slash_fee and at least MIN_SLASH_WINDOW seconds
        to their deadline are slashable; at most k agents, each once, per task.
        Model fees of a model whose fee receiver is locked by an IMO (a
        ModelToken) are pushed into the token at settlement (gas-bounded;
        credited for pull if the push fails); other receivers are credited.
@dev The protocol and data basis points are snapshotted when a task is posted,
     so a later `set_params` never changes the price of an open task.
     Every wei held is accounted for by the running totals:
       self.balance == total_open_fees + total_credited + total_staked
     where total_open_fees covers OPEN and FAILED tasks, total_credited the
     withdrawable balances, and total_staked all agent stake, bonded or
     unbonding. Result and attribution digests are not stored; they are in the
     `TaskSettled` event.
@custom:security Pull payments, but for two trusted pushes: settlement, refunds
                 and slashing credit balances; ETH leaves through `withdraw`,
                 `withdraw_for`, `withdraw_stake`, the data share (forwarded to
                 the trusted RoyaltyVault) and the model fee of an IMO-locked
                 receiver (a ModelToken deployed by the launcher; 80,000 gas,
                 last in `_apply`, failure falls back to a credit). Every ETH-moving function is `@nonreentrant` and
                 changes state before transferring. Agent signatures are EIP-712
                 over (task_id, result_digest) bound to this contract and chain;
                 recovery rejects malleable `s` values and never reverts, so one
                 bad settlement in a batch cannot block the others.
"""

from snekmate.auth import ownable
from snekmate.utils import ecdsa
from snekmate.utils import eip712_domain_separator as eip712

from contracts.modules import task_packing

import interfaces.IDataRegistry as IDataRegistry
import interfaces.IRoyaltyVault as IRoyaltyVault
import interfaces.ITaskEscrow as ITaskEscrow

implements: ITaskEscrow

initializes: ownable
initializes: eip712
exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
    eip712.eip712Domain,
)


# @dev Task states.
OPEN: constant(uint256) = 1
SETTLED: constant(uint256) = 2
FAILED: constant(uint256) = 3
REFUNDED: constant(uint256) = 4

BPS: constant(uint256) = 10_000
# @dev protocol_fee_bps + data_share_bps may not exceed this.
MAX_FEE_SHARES_BPS: public(constant(uint256)) = 5_000
# @dev Redundancy bound: at most this many agents per task.
MAX_K: public(constant(uint256)) = 5
# @dev Latest deadline a task may have, from the time it is posted.
MAX_TASK_DURATION: public(constant(uint256)) = 30 * 86_400
# @dev Longest unbonding delay the owner may set.
MAX_UNBONDING_DELAY: public(constant(uint256)) = 90 * 86_400
# @dev How long after a task's deadline its slash proofs still count (the
# oracle fails an unanswered task at its first pass past the deadline).
SLASH_GRACE: public(constant(uint256)) = 86_400
# @dev Shortest unbonding delay: an agent's lease or result signatures can be
# used against it until its task's deadline (at most MAX_TASK_DURATION after
# it leased) plus SLASH_GRACE, and stake it unbonds must still be there then,
# so no agent can sign a lease, unbond and leave before the slash lands.
MIN_UNBONDING_DELAY: public(constant(uint256)) = MAX_TASK_DURATION + SLASH_GRACE

# @dev EIP-712 type hash of the message agents sign.
RESULT_TYPEHASH: public(constant(bytes32)) = keccak256("Result(uint256 task_id,bytes32 result_digest)")
# @dev EIP-712 type hash of the lease acceptance agents sign when they take a task.
LEASE_TYPEHASH: public(constant(bytes32)) = keccak256("Lease(uint256 task_id,uint256 expires_at)")

# @dev A task is slashable only if posted at least this long before its
#      deadline: a deadline seconds ahead gives no agent a real chance to
#      answer, so a requester could engineer the failure it is paid for.
#      60 s is about five Ethereum blocks, the least a lease can mean.
MIN_SLASH_WINDOW: public(constant(uint256)) = 60
# @dev Gas forwarded to an IMO-locked fee receiver (a ModelToken's O(1)
#      revenue-in); bounded so a receiver cannot eat a batch's gas.
PUSH_GAS: public(constant(uint256)) = 80_000


registry: public(immutable(IDataRegistry))
vault: public(immutable(IRoyaltyVault))

treasury: public(address)
protocol_fee_bps: public(uint256)
data_share_bps: public(uint256)
slash_bps: public(uint256)
min_stake: public(uint256)
unbonding_delay: public(uint256)
# @dev Least fee for a task to be slashable (0 at deployment: the requester's
#      share is capped at the fee anyway, so it cannot profit; the owner raises
#      it with `set_min_slash_fee`).
min_slash_fee: public(uint256)
is_oracle: public(HashMap[address, bool])

# @dev Tasks, packed in two words (see modules/task_packing.vy); ids run 1..task_count.
_task_a: HashMap[uint256, uint256]
_task_b: HashMap[uint256, uint256]
_task_input: HashMap[uint256, bytes32]
task_count: public(uint256)

_agents: HashMap[address, ITaskEscrow.Agent]
_agent_models: HashMap[address, DynArray[uint256, 16]]
_agent_pubkey: HashMap[address, Bytes[65]]

# @dev Withdrawable balances.
balance_of: public(HashMap[address, uint256])

# @dev Running totals (see the invariant in the module notes).
total_open_fees: public(uint256)
total_credited: public(uint256)
total_staked: public(uint256)


@deploy
@payable
def __init__(
    registry_: IDataRegistry,
    vault_: IRoyaltyVault,
    treasury_: address,
    protocol_fee_bps_: uint256,
    data_share_bps_: uint256,
    slash_bps_: uint256,
    min_stake_: uint256,
    unbonding_delay_: uint256,
):
    """
    @notice Deploys the escrow; the deployer becomes the owner (who sets
            oracles, parameters and the treasury).
    @param registry_ The DataRegistry (model prices and fee receivers, datasets).
    @param vault_ The RoyaltyVault credited with data shares.
    @param treasury_ Receives protocol fees and the treasury half of slashes.
    @param protocol_fee_bps_ Protocol fee in basis points of the task fee.
    @param data_share_bps_ Data royalty share in basis points of the task fee.
    @param slash_bps_ Share of an agent's stake taken per slash, in basis points.
    @param min_stake_ Minimum stake to register as an agent, in wei.
    @param unbonding_delay_ Seconds between an unbond request and its withdrawal.
    """
    assert registry_.address != empty(address), "escrow: zero registry"
    assert vault_.address != empty(address), "escrow: zero vault"
    ownable.__init__()
    eip712.__init__("Tributa TaskEscrow", "1")
    registry = registry_
    vault = vault_
    self._set_treasury(treasury_)
    self._set_params(protocol_fee_bps_, data_share_bps_, slash_bps_, min_stake_, unbonding_delay_)


# ------------------------------------------------------------------- tasks


@external
@payable
@nonreentrant
def post_task(model_id: uint256, input_digest: bytes32, deadline: uint256, k: uint256, max_model_fee: uint256) -> uint256:
    """
    @notice Posts an inference task, escrowing msg.value as its fee. The task
            is slashable if fee >= min_slash_fee and deadline - now >=
            MIN_SLASH_WINDOW (see `task_slashable`).
    @param model_id The registered, active model to run.
    @param input_digest The sha2-256 digest of the (encrypted) input in the content store.
    @param deadline Unix time by which the task must be settled (at most 30 days ahead).
    @param k How many agents run it (1..5).
    @param max_model_fee The highest model fee the requester accepts (the fee it
           was shown); reverts "escrow: model fee above max" if the publisher
           raised it meanwhile.
    @return uint256 The new task id (ids start at 1).
    """
    fee: uint256 = msg.value
    assert fee != 0, "escrow: zero fee"
    assert fee <= task_packing.MAX_FEE, "escrow: fee too large"
    assert deadline > block.timestamp, "escrow: deadline passed"
    assert deadline <= block.timestamp + MAX_TASK_DURATION, "escrow: deadline too far"
    assert input_digest != empty(bytes32), "escrow: zero input digest"
    assert k != 0 and k <= MAX_K, "escrow: k out of range"
    active: bool = False
    model_fee: uint256 = 0
    receiver: address = empty(address)
    active, model_fee, receiver = staticcall registry.model_pricing(model_id)
    assert active and model_id <= convert(max_value(uint64), uint256), "escrow: unknown or inactive model"
    # @dev The fee is snapshotted as the tx executes; the bound stops a
    #      publisher front-running the requester with a fee raise.
    assert model_fee <= max_model_fee, "escrow: model fee above max"
    pbps: uint256 = self.protocol_fee_bps
    dbps: uint256 = self.data_share_bps
    assert fee - fee * pbps // BPS - fee * dbps // BPS >= model_fee, "escrow: fee below model price"

    slashable: uint256 = 0
    if fee >= self.min_slash_fee and deadline - block.timestamp >= MIN_SLASH_WINDOW:
        slashable = 1

    task_id: uint256 = self.task_count + 1
    self.task_count = task_id
    self._task_a[task_id] = task_packing._pack_a(msg.sender, deadline, k, OPEN, pbps, dbps, slashable)
    self._task_b[task_id] = task_packing._pack_b(fee, model_fee, model_id)
    self._task_input[task_id] = input_digest
    self.total_open_fees += fee
    log ITaskEscrow.TaskPosted(
        task_id=task_id,
        requester=msg.sender,
        model_id=model_id,
        input_digest=input_digest,
        fee=fee,
        model_fee=model_fee,
        deadline=deadline,
        k=k,
    )
    return task_id


@external
@nonreentrant
def settle(s: ITaskEscrow.Settlement):
    """
    @notice Settles one task (oracle only): pays the signing agents, the model's
            fee receiver, the data royalties and the protocol, refunds the rest,
            slashes the listed agents. Reverts with the validator's reason.
    @param s The settlement: task, result and attribution digests, paid agents and
           their EIP-712 signatures, total agent fee, slash proofs (lease or
           conflict, see ITaskEscrow.SlashProof), attributed datasets and
           weights (basis points, summing to 10000 if any).
    """
    self._check_oracle()
    reason: String[64] = self._validate(s)
    if len(reason) != 0:
        raise reason
    self._apply(s)


@external
@nonreentrant
def settle_batch(batch: DynArray[ITaskEscrow.Settlement, 64]) -> DynArray[bool, 64]:
    """
    @notice Settles many tasks (oracle only). A settlement that fails validation
            is skipped with a `SettlementRejected` event; it never blocks the
            others.
    @param batch The settlements (see `settle`).
    @return DynArray Per settlement, whether it was applied.
    """
    self._check_oracle()
    results: DynArray[bool, 64] = []
    for s: ITaskEscrow.Settlement in batch:
        reason: String[64] = self._validate(s)
        if len(reason) == 0:
            self._apply(s)
            results.append(True)
        else:
            log ITaskEscrow.SettlementRejected(task_id=s.task_id, reason=reason)
            results.append(False)
    return results


@external
def fail_task(task_id: uint256, reason: String[128], silent: DynArray[ITaskEscrow.SlashProof, 5]):
    """
    @notice Marks an open task failed (oracle only); its requester may then
            `refund` the whole fee. Agents that accepted a lease and never
            answered are slashed (slash_bps of stake + unbonding; half to the
            requester up to the task's fee, the rest to the treasury), each
            proven by its own expired lease signature.
    @param task_id The task.
    @param reason Why it failed.
    @param silent Lease proofs (result_digest empty) of distinct registered
           agents, at most k; conflict proofs are rejected here.
    """
    self._check_oracle()
    a: uint256 = self._task_a[task_id]
    assert task_packing._state(a) == OPEN, "escrow: task not open"
    assert self._may_end(a), "escrow: only its requesting oracle ends this task"
    assert len(silent) <= task_packing._k(a), "escrow: more agents than k"
    for i: uint256 in range(len(silent), bound=5):
        for j: uint256 in range(i + 1, len(silent), bound=5):
            assert silent[i].agent != silent[j].agent, "escrow: duplicate agent"
    why: String[64] = self._check_proofs(task_id, a, silent, empty(bytes32), False)
    if len(why) != 0:
        raise why
    self._task_a[task_id] = task_packing._with_state(a, FAILED)
    if len(silent) != 0:
        slashed_total: uint256 = self._slash(task_id, silent, task_packing._requester(a), task_packing._fee(self._task_b[task_id]))
        self.total_credited += slashed_total
    log ITaskEscrow.TaskFailed(task_id=task_id, reason=reason)


@external
def refund(task_id: uint256):
    """
    @notice Credits the requester the whole fee of a failed task, or of an open
            task past its deadline. Anyone may call.
    @param task_id The task.
    """
    a: uint256 = self._task_a[task_id]
    state: uint256 = task_packing._state(a)
    assert state != 0, "escrow: unknown task"
    if state == OPEN:
        assert block.timestamp > task_packing._deadline(a), "escrow: deadline not passed"
    else:
        assert state == FAILED, "escrow: not refundable"
    self._task_a[task_id] = task_packing._with_state(a, REFUNDED)
    fee: uint256 = task_packing._fee(self._task_b[task_id])
    requester: address = task_packing._requester(a)
    self.balance_of[requester] += fee
    self.total_open_fees -= fee
    self.total_credited += fee
    log ITaskEscrow.TaskRefunded(task_id=task_id, requester=requester, amount=fee)


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
    @notice Sends `account` its whole credited balance (anyone may call; e.g. to
            flush a model token's revenue into the token).
    @param account The account to pay.
    @return uint256 The wei sent.
    """
    return self._withdraw(account)


# ------------------------------------------------------------------ agents


@external
@payable
@nonreentrant
def register_agent(models: DynArray[uint256, 16], device_class: uint8, capacity: uint16, pubkey: Bytes[65]):
    """
    @notice Registers the caller as a compute agent, staking msg.value.
    @param models Ids of the registered models it serves.
    @param device_class Hardware class (free-form code, e.g. 0 CPU, 1 GPU).
    @param capacity Concurrent jobs it accepts (at least 1).
    @param pubkey Its public key; task inputs are encrypted to it.
    """
    assert not self._agents[msg.sender].registered, "escrow: already registered"
    assert msg.value >= self.min_stake, "escrow: stake below minimum"
    self._check_agent_profile(models, capacity, pubkey)
    self._agents[msg.sender] = ITaskEscrow.Agent(
        stake=msg.value,
        unbonding=0,
        unbond_at=0,
        device_class=device_class,
        capacity=capacity,
        registered=True,
    )
    self._agent_models[msg.sender] = models
    self._agent_pubkey[msg.sender] = pubkey
    self.total_staked += msg.value
    log ITaskEscrow.AgentRegistered(
        agent=msg.sender,
        stake=msg.value,
        models=models,
        device_class=device_class,
        capacity=capacity,
        pubkey=pubkey,
    )


@external
def update_agent(models: DynArray[uint256, 16], device_class: uint8, capacity: uint16, pubkey: Bytes[65]):
    """
    @notice Updates the caller's agent profile.
    @param models Ids of the registered models it serves.
    @param device_class Hardware class.
    @param capacity Concurrent jobs it accepts (at least 1).
    @param pubkey Its public key.
    """
    assert self._agents[msg.sender].registered, "escrow: not registered"
    self._check_agent_profile(models, capacity, pubkey)
    self._agents[msg.sender].device_class = device_class
    self._agents[msg.sender].capacity = capacity
    self._agent_models[msg.sender] = models
    self._agent_pubkey[msg.sender] = pubkey
    log ITaskEscrow.AgentUpdated(agent=msg.sender, models=models, device_class=device_class, capacity=capacity, pubkey=pubkey)


@external
@payable
@nonreentrant
def add_stake():
    """
    @notice Adds msg.value to the caller's stake.
    """
    assert self._agents[msg.sender].registered, "escrow: not registered"
    assert msg.value != 0, "escrow: zero stake"
    self._agents[msg.sender].stake += msg.value
    self.total_staked += msg.value
    log ITaskEscrow.StakeAdded(agent=msg.sender, amount=msg.value)


@external
def request_unbond(amount: uint256):
    """
    @notice Moves `amount` of the caller's stake to unbonding; it can be
            withdrawn `unbonding_delay` seconds later. A later request adds to
            the unbonding amount and restarts the timer. Unbonding stake can
            still be slashed. The bonded stake left must be 0 or at least
            min_stake: an agent with less is neither paid nor leased.
    @param amount The wei to unbond.
    """
    assert self._agents[msg.sender].registered, "escrow: not registered"
    assert amount != 0, "escrow: zero amount"
    stake: uint256 = self._agents[msg.sender].stake
    assert amount <= stake, "escrow: amount exceeds stake"
    # @dev No dust stake that stays registered and looks bonded (finding 3).
    assert amount == stake or stake - amount >= self.min_stake, "escrow: stake left below minimum"
    release_at: uint256 = block.timestamp + self.unbonding_delay
    self._agents[msg.sender].stake = stake - amount
    self._agents[msg.sender].unbonding += amount
    self._agents[msg.sender].unbond_at = release_at
    log ITaskEscrow.UnbondRequested(agent=msg.sender, amount=amount, release_at=release_at)


@external
@nonreentrant
def withdraw_stake() -> uint256:
    """
    @notice Sends the caller its unbonded stake once the delay has passed.
    @return uint256 The wei sent.
    """
    amount: uint256 = self._agents[msg.sender].unbonding
    assert amount != 0, "escrow: nothing unbonding"
    assert block.timestamp >= self._agents[msg.sender].unbond_at, "escrow: still unbonding"
    self._agents[msg.sender].unbonding = 0
    self._agents[msg.sender].unbond_at = 0
    self.total_staked -= amount
    log ITaskEscrow.StakeWithdrawn(agent=msg.sender, amount=amount)
    self._send(msg.sender, amount)
    return amount


# ------------------------------------------------------------------- admin


@external
def set_oracle(oracle: address, enabled: bool):
    """
    @notice Grants or revokes the oracle role (owner only).
    @param oracle The account.
    @param enabled Whether it may settle and fail tasks.
    """
    ownable._check_owner()
    assert oracle != empty(address), "escrow: zero oracle"
    self.is_oracle[oracle] = enabled
    log ITaskEscrow.OracleSet(oracle=oracle, enabled=enabled)


@external
def set_params(protocol_fee_bps: uint256, data_share_bps: uint256, slash_bps: uint256, min_stake: uint256, unbonding_delay: uint256):
    """
    @notice Sets the economic parameters (owner only). Open tasks keep the
            protocol and data shares they were posted with.
    @param protocol_fee_bps Protocol fee in basis points.
    @param data_share_bps Data royalty share in basis points (protocol + data <= 5000).
    @param slash_bps Share of stake slashed, in basis points (<= 10000).
    @param min_stake Minimum stake to register, in wei.
    @param unbonding_delay Seconds of unbonding (<= 90 days).
    """
    ownable._check_owner()
    self._set_params(protocol_fee_bps, data_share_bps, slash_bps, min_stake, unbonding_delay)


@external
def set_min_slash_fee(fee: uint256):
    """
    @notice Sets the least task fee for a task to be slashable (owner only);
            applies to tasks posted from now on.
    @param fee The fee in wei (at most 2**96 - 1, the largest task fee).
    """
    ownable._check_owner()
    assert fee <= task_packing.MAX_FEE, "escrow: min slash fee too large"
    self.min_slash_fee = fee
    log ITaskEscrow.MinSlashFeeSet(min_slash_fee=fee)


@external
def set_treasury(treasury: address):
    """
    @notice Sets the treasury (owner only). Balances already credited to the
            previous treasury stay withdrawable by it.
    @param treasury The new treasury.
    """
    ownable._check_owner()
    self._set_treasury(treasury)


# ------------------------------------------------------------------- views


@external
@view
def task(task_id: uint256) -> ITaskEscrow.Task:
    """
    @notice A task (all zero if unknown).
    @param task_id The task.
    @return Task The task record.
    """
    a: uint256 = self._task_a[task_id]
    b: uint256 = self._task_b[task_id]
    return ITaskEscrow.Task(
        requester=task_packing._requester(a),
        model_id=task_packing._model_id(b),
        input_digest=self._task_input[task_id],
        fee=task_packing._fee(b),
        model_fee=task_packing._model_fee(b),
        deadline=task_packing._deadline(a),
        k=task_packing._k(a),
        state=task_packing._state(a),
    )


@external
@view
def task_fee_shares(task_id: uint256) -> (uint256, uint256):
    """
    @notice The protocol and data shares snapshotted when the task was posted.
    @param task_id The task.
    @return uint256 The protocol fee in basis points.
    @return uint256 The data share in basis points.
    """
    a: uint256 = self._task_a[task_id]
    return task_packing._protocol_bps(a), task_packing._data_bps(a)


@external
@view
def task_slashable(task_id: uint256) -> bool:
    """
    @notice Whether slash proofs are accepted for a task: it was posted with
            fee >= min_slash_fee and at least MIN_SLASH_WINDOW seconds to its
            deadline (fixed at post time).
    @param task_id The task.
    @return bool True if its agents can be slashed.
    """
    return task_packing._slashable(self._task_a[task_id])


@external
@view
def agent(account: address) -> ITaskEscrow.Agent:
    """
    @notice An agent record (all zero if unknown).
    @param account The agent.
    @return Agent Stake, unbonding amount and release time, device class,
            capacity, registered flag.
    """
    return self._agents[account]


@external
@view
def agent_models(account: address) -> DynArray[uint256, 16]:
    """
    @notice The models an agent serves.
    @param account The agent.
    @return DynArray The model ids.
    """
    return self._agent_models[account]


@external
@view
def agent_pubkey(account: address) -> Bytes[65]:
    """
    @notice An agent's public key.
    @param account The agent.
    @return Bytes The key.
    """
    return self._agent_pubkey[account]


@external
@view
def serves_model(account: address, model_id: uint256) -> bool:
    """
    @notice Whether a registered agent with bonded stake >= min_stake lists
            `model_id` (what settlement requires of a paid agent, and what the
            oracle checks before leasing).
    @param account The agent.
    @param model_id The model.
    @return bool True if it serves the model.
    """
    return self._serves(account, model_id)


@external
@view
def result_digest_to_sign(task_id: uint256, result_digest: bytes32) -> bytes32:
    """
    @notice The EIP-712 digest an agent signs for a result:
            hashTypedDataV4(Result(task_id, result_digest)).
    @param task_id The task.
    @param result_digest The result's content digest.
    @return bytes32 The digest to sign.
    """
    return self._result_digest(task_id, result_digest)


@external
@view
def lease_digest_to_sign(task_id: uint256, expires_at: uint256) -> bytes32:
    """
    @notice The EIP-712 digest an agent signs to accept a task's lease:
            hashTypedDataV4(Lease(task_id, expires_at)). Once `expires_at` has
            passed without a settlement paying it, the signature slashes it.
    @param task_id The task.
    @param expires_at Unix time by which the agent promises its result.
    @return bytes32 The digest to sign.
    """
    return self._lease_digest(task_id, expires_at)


@external
@view
def domain_separator() -> bytes32:
    """
    @notice The EIP-712 domain separator ("Tributa TaskEscrow", "1", chain id, this contract).
    @return bytes32 The domain separator.
    """
    return eip712._domain_separator_v4()


# ---------------------------------------------------------------- internal


@internal
@view
def _check_oracle():
    assert self.is_oracle[msg.sender], "escrow: caller is not the oracle"


@internal
@view
def _check_agent_profile(models: DynArray[uint256, 16], capacity: uint16, pubkey: Bytes[65]):
    assert capacity != 0, "escrow: zero capacity"
    assert len(pubkey) != 0, "escrow: empty pubkey"
    if len(models) != 0:
        count: uint256 = staticcall registry.model_count()
        for m: uint256 in models:
            assert m != 0 and m <= count, "escrow: unknown model"


@internal
def _set_params(pbps: uint256, dbps: uint256, sbps: uint256, min_stake: uint256, delay: uint256):
    assert pbps + dbps <= MAX_FEE_SHARES_BPS, "escrow: fee shares above 5000 bps"
    assert sbps <= BPS, "escrow: slash above 10000 bps"
    assert delay <= MAX_UNBONDING_DELAY, "escrow: unbonding delay too long"
    assert delay >= MIN_UNBONDING_DELAY, "escrow: unbonding delay shorter than a task's slash window"
    self.protocol_fee_bps = pbps
    self.data_share_bps = dbps
    self.slash_bps = sbps
    self.min_stake = min_stake
    self.unbonding_delay = delay
    log ITaskEscrow.ParamsSet(protocol_fee_bps=pbps, data_share_bps=dbps, slash_bps=sbps, min_stake=min_stake, unbonding_delay=delay)


@internal
def _set_treasury(treasury: address):
    assert treasury != empty(address), "escrow: zero treasury"
    self.treasury = treasury
    log ITaskEscrow.TreasurySet(treasury=treasury)


@internal
@view
def _may_end(a: uint256) -> bool:
    """
    @dev A task posted by an oracle (AIOracle: its challenge window and committee
         decide the result) is settled or failed by that oracle alone; another
         oracle key ending it would skip them.
    """
    requester: address = task_packing._requester(a)
    return requester == msg.sender or not self.is_oracle[requester]


@internal
@view
def _result_digest(task_id: uint256, result_digest: bytes32) -> bytes32:
    return eip712._hash_typed_data_v4(keccak256(abi_encode(RESULT_TYPEHASH, task_id, result_digest)))


@internal
@view
def _lease_digest(task_id: uint256, expires_at: uint256) -> bytes32:
    return eip712._hash_typed_data_v4(keccak256(abi_encode(LEASE_TYPEHASH, task_id, expires_at)))


@internal
@view
def _serves(account: address, model_id: uint256) -> bool:
    agent: ITaskEscrow.Agent = self._agents[account]
    if not agent.registered or agent.stake < self.min_stake:
        return False
    for m: uint256 in self._agent_models[account]:
        if m == model_id:
            return True
    return False


@internal
@view
def _check_proofs(task_id: uint256, a: uint256, proofs: DynArray[ITaskEscrow.SlashProof, 5], settled: bytes32, conflicts: bool) -> String[64]:
    """
    @dev "" if every slash proof holds, else why not. A lease proof (empty
         result_digest) holds once its expiry has passed and the agent signed
         Lease(task_id, expires_at); a conflict proof (settlements only) holds
         if its digest is not the settled one and the agent signed
         Result(task_id, digest). Without the agent's own signature the oracle
         cannot slash it. Never reverts.
    """
    if len(proofs) == 0:
        return ""
    if not task_packing._slashable(a):
        return "escrow: task not slashable"
    # Past this, unbonded stake may be gone (see MIN_UNBONDING_DELAY).
    if block.timestamp > task_packing._deadline(a) + SLASH_GRACE:
        return "escrow: slash window closed"
    for p: ITaskEscrow.SlashProof in proofs:
        if not self._agents[p.agent].registered:
            return "escrow: slashed agent not registered"
        digest: bytes32 = empty(bytes32)
        if p.result_digest == empty(bytes32):
            if p.expires_at >= block.timestamp:
                return "escrow: lease not expired"
            digest = self._lease_digest(task_id, p.expires_at)
        else:
            if not conflicts:
                return "escrow: conflict proof in fail_task"
            if p.result_digest == settled:
                return "escrow: slash proof for the settled result"
            digest = self._result_digest(task_id, p.result_digest)
        if self._recover(digest, p.signature) != p.agent:
            return "escrow: bad slash proof"
    return ""


@internal
@pure
def _recover(digest: bytes32, signature: Bytes[65]) -> address:
    """
    @dev Recovers a 65-byte (r, s, v) signature like snekmate's
         `ecdsa._recover_sig`, with the same malleability bound, but returns the
         zero address instead of reverting on a malformed signature, so the
         validator can report it as a reason.
    """
    if len(signature) != 65:
        return empty(address)
    r: uint256 = extract32(signature, 0, output_type=uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    # unsafe_sub(v, 27) > 1 rejects every v but 27 and 28 in one comparison
    # (and costs the same for both, keeping settlement gas data-independent)
    if s > ecdsa._MALLEABILITY_THRESHOLD or unsafe_sub(v, 27) > 1:
        return empty(address)
    return ecrecover(digest, v, r, s)


@internal
@view
def _validate(s: ITaskEscrow.Settlement) -> String[64]:
    """
    @dev The one settlement validator: "" if `s` can be applied, else why not.
         Never reverts on bad input (used by `settle` and `settle_batch`).
    """
    a: uint256 = self._task_a[s.task_id]
    if task_packing._state(a) != OPEN:
        return "escrow: task not open"
    if not self._may_end(a):
        return "escrow: only its requesting oracle ends this task"
    if block.timestamp > task_packing._deadline(a):
        return "escrow: deadline passed"
    n_agents: uint256 = len(s.agents)
    n_slashed: uint256 = len(s.slashed)
    if n_agents + n_slashed > task_packing._k(a):
        return "escrow: more agents than k"
    if len(s.signatures) != n_agents:
        return "escrow: signature count mismatch"
    if n_agents == 0 and s.agent_fee != 0:
        return "escrow: agent fee without agents"

    everyone: DynArray[address, 10] = []
    for x: address in s.agents:
        everyone.append(x)
    for p: ITaskEscrow.SlashProof in s.slashed:
        everyone.append(p.agent)
    for i: uint256 in range(len(everyone), bound=10):
        for j: uint256 in range(i, bound=10):
            if everyone[i] == everyone[j]:
                return "escrow: duplicate agent"

    b: uint256 = self._task_b[s.task_id]
    if n_agents != 0:
        model_id: uint256 = task_packing._model_id(b)
        min_stake: uint256 = self.min_stake
        digest: bytes32 = self._result_digest(s.task_id, s.result_digest)
        for i: uint256 in range(n_agents, bound=5):
            agent: address = s.agents[i]
            if not self._agents[agent].registered:
                return "escrow: agent not registered"
            if self._agents[agent].stake < min_stake:
                return "escrow: agent stake below minimum"
            serves: bool = False
            for m: uint256 in self._agent_models[agent]:
                if m == model_id:
                    serves = True
                    break
            if not serves:
                return "escrow: agent does not serve model"
            if self._recover(digest, s.signatures[i]) != agent:
                return "escrow: bad signature"
    why: String[64] = self._check_proofs(s.task_id, a, s.slashed, s.result_digest, True)
    if len(why) != 0:
        return why

    n_datasets: uint256 = len(s.dataset_ids)
    if n_datasets != len(s.dataset_weights_bps):
        return "escrow: dataset length mismatch"
    if n_datasets != 0:
        count: uint256 = staticcall registry.dataset_count()
        total: uint256 = 0
        for i: uint256 in range(n_datasets, bound=16):
            dataset_id: uint256 = s.dataset_ids[i]
            if dataset_id == 0 or dataset_id > count:
                return "escrow: unknown dataset"
            total += convert(s.dataset_weights_bps[i], uint256)
        if total != BPS:
            return "escrow: dataset weights must sum to 10000"

    fee: uint256 = task_packing._fee(b)
    model_fee: uint256 = task_packing._model_fee(b)
    # fee >= protocol + data + model_fee holds since post_task (snapshotted bps).
    left: uint256 = fee - fee * task_packing._protocol_bps(a) // BPS - fee * task_packing._data_bps(a) // BPS - model_fee
    if s.agent_fee > left:
        return "escrow: payouts exceed fee"
    return ""


@internal
def _apply(s: ITaskEscrow.Settlement):
    """
    @dev Applies a settlement that `_validate` accepted.
    """
    task_id: uint256 = s.task_id
    a: uint256 = self._task_a[task_id]
    b: uint256 = self._task_b[task_id]
    self._task_a[task_id] = task_packing._with_state(a, SETTLED)
    requester: address = task_packing._requester(a)
    fee: uint256 = task_packing._fee(b)
    model_fee: uint256 = task_packing._model_fee(b)
    protocol: uint256 = fee * task_packing._protocol_bps(a) // BPS
    data: uint256 = fee * task_packing._data_bps(a) // BPS
    treasury: address = self.treasury

    # protocol fee
    if protocol != 0:
        self.balance_of[treasury] += protocol

    # model fee, to the model's current fee receiver: pushed (last, below) if
    # an IMO locked it to its token, else credited
    receiver: address = empty(address)
    push: bool = False
    if model_fee != 0:
        model_id: uint256 = task_packing._model_id(b)
        active: bool = False
        price: uint256 = 0
        active, price, receiver = staticcall registry.model_pricing(model_id)
        if receiver == empty(address):
            model_fee = 0
        elif staticcall registry.fee_receiver_locked(model_id):
            push = True
        else:
            self.balance_of[receiver] += model_fee

    # data share, to the vault by attribution weights
    n_datasets: uint256 = len(s.dataset_ids)
    if n_datasets == 0:
        data = 0
    elif data != 0:
        amounts: DynArray[uint256, 16] = []
        given: uint256 = 0
        last: uint256 = n_datasets - 1
        for i: uint256 in range(last, bound=16):
            amount: uint256 = data * convert(s.dataset_weights_bps[i], uint256) // BPS
            amounts.append(amount)
            given += amount
        amounts.append(data - given)
        extcall vault.credit(task_id, s.dataset_ids, amounts, value=data)

    # agents
    agents_paid: uint256 = 0
    n_agents: uint256 = len(s.agents)
    if n_agents != 0 and s.agent_fee != 0:
        each: uint256 = s.agent_fee // n_agents
        if each != 0:
            for x: address in s.agents:
                self.balance_of[x] += each
            agents_paid = each * n_agents

    refund: uint256 = fee - protocol - model_fee - data - agents_paid

    # slashing (the requester's share is credited by _slash)
    slashed_total: uint256 = 0
    if len(s.slashed) != 0:
        slashed_total = self._slash(task_id, s.slashed, requester, fee)

    if refund != 0:
        self.balance_of[requester] += refund

    self.total_open_fees -= fee
    # the model fee, if pushed, is counted here first and leaves below
    self.total_credited += fee - data + slashed_total
    log ITaskEscrow.TaskSettled(
        task_id=task_id,
        result_digest=s.result_digest,
        attribution_digest=s.attribution_digest,
        agents=s.agents,
        agent_fee=agents_paid,
        model_fee=model_fee,
        data_share=data,
        protocol_fee=protocol,
        refund=refund,
    )

    # @dev The push comes last (checks-effects-interactions): the receiver is
    #      the IMO launcher's ModelToken, whose payable __default__ is an O(1)
    #      revenue-in, so the fee accrues to the holders of this moment and not
    #      to whoever holds when a credit is flushed. Gas-bounded; if it fails
    #      (e.g. no circulating supply yet) the fee is credited for pull.
    if push:
        self.total_credited -= model_fee
        success: bool = raw_call(receiver, b"", value=model_fee, gas=PUSH_GAS, revert_on_failure=False)
        if not success:
            self.balance_of[receiver] += model_fee
            self.total_credited += model_fee
        log ITaskEscrow.ModelFeePushed(task_id=task_id, receiver=receiver, amount=model_fee, success=success)


@internal
def _slash(task_id: uint256, proofs: DynArray[ITaskEscrow.SlashProof, 5], requester: address, fee: uint256) -> uint256:
    """
    @dev Takes slash_bps of each proven agent's stake + unbonding (stake
         first). The requester gets half, capped at the task's fee over all
         of the task's slashes (it is made whole, it never profits beyond the
         fee); the treasury gets the rest. Returns the total slashed; the
         caller accounts total_credited. Proofs were checked by _check_proofs.
    """
    sbps: uint256 = self.slash_bps
    slashed_total: uint256 = 0
    half: uint256 = 0
    for p: ITaskEscrow.SlashProof in proofs:
        x: address = p.agent
        stake: uint256 = self._agents[x].stake
        unbonding: uint256 = self._agents[x].unbonding
        amount: uint256 = (stake + unbonding) * sbps // BPS
        if amount <= stake:
            self._agents[x].stake = stake - amount
        else:
            self._agents[x].stake = 0
            self._agents[x].unbonding = unbonding - (amount - stake)
        slashed_total += amount
        half += amount // 2
        log ITaskEscrow.AgentSlashed(agent=x, task_id=task_id, amount=amount)
    if slashed_total != 0:
        to_requester: uint256 = min(half, fee)
        self.total_staked -= slashed_total
        self.balance_of[self.treasury] += slashed_total - to_requester
        if to_requester != 0:
            self.balance_of[requester] += to_requester
    return slashed_total


@internal
def _withdraw(account: address) -> uint256:
    amount: uint256 = self.balance_of[account]
    assert amount != 0, "escrow: nothing to withdraw"
    self.balance_of[account] = 0
    self.total_credited -= amount
    log ITaskEscrow.Withdrawn(account=account, amount=amount)
    self._send(account, amount)
    return amount


@internal
def _send(to: address, amount: uint256):
    success: bool = raw_call(to, b"", value=amount, revert_on_failure=False)
    assert success, "escrow: transfer failed"
