# pragma version ~=0.4.3
"""
@title Tributa DataRegistry
@custom:contract-name DataRegistry
@license MIT
@notice Datasets (content digest, owner, contributors and their shares, terms)
        and models (weights and adapter digests, training datasets, fee, fee
        receiver). It is the on-chain half of proof of attribution: the
        RoyaltyVault proves contributor shares against the roots kept here and
        the TaskEscrow reads model prices and fee receivers from it.
@dev Contributors are committed as a Merkle root computed on-chain:
     leaf_i = keccak256(keccak256(abi_encode(account_i, shares_bps_i))),
     contributors strictly ascending by address, levels built pairwise
     (2i, 2i + 1) with snekmate's sorted-pair hash, an odd last node promoted
     unchanged. The full lists are emitted in `ContributorsSet`; off-chain code
     (`tributa/merkle.py`) rebuilds proofs from the events. Every contributors
     update bumps the dataset's `version`; old roots stay readable.

     Dataset registration is commit–reveal. The registrant first commits
     `dataset_commitment(content, metadata, registrant, salt)` =
     keccak256(abi_encode(content_digest, metadata_digest, registrant, salt))
     with `commit_dataset`, then reveals it with `register_dataset` in a later
     block and within `COMMIT_MAX_AGE` seconds. Commitments are kept per
     committer and the hash binds the committer's address, so a reveal copied
     from the mempool by anyone else finds no commitment, and a front-runner
     who learns the digest from the reveal cannot commit and reveal in the
     reveal's own block. A dataset can change hands by a two-step transfer
     (`transfer_dataset` then `accept_dataset`), and the registry owner can
     reassign a disputed dataset (`resolve_dataset_dispute`).

     Models: one weights set (base digest plus the set of adapter digests)
     is registered at most once. While an IMO is in progress for a model or
     after one locked its fee receiver to the model token, a fee cut or a
     deactivation is scheduled and takes effect `PRICING_DELAY` seconds
     later (announced with its effective time); `model_pricing` returns the
     values in effect at `block.timestamp`. Fee increases and reactivation
     stay immediate (requesters bound the fee they accept in the escrow).
     An IMO is bound to the launcher that began it (`begin_imo` /
     `end_imo`): switching the registry's launcher neither blocks a running
     sale from ending nor lets a second launcher rewrite a locked receiver.
@custom:security Only the dataset owner can change a dataset; only the model
                 publisher can change a model, within the IMO rules above.
                 The registry holds no ETH and makes no external calls.
                 Remaining risks, by design:
                 - Squatting by foreknowledge: whoever learns a dataset's
                   content digest before its author registers it (a CID
                   published, or content shared, before registration) can
                   commit first and register it. Authors should register
                   before publishing; the owner's dispute path is the remedy.
                 - The dispute power is trust in the registry owner: it can
                   reassign any dataset (and with it who sets its contributors
                   and so its future royalties). It is meant to act on
                   off-chain evidence of authorship whose digest it logs:
                   e.g. a signature by the content's creator, an earlier
                   timestamped publication of the content, or a court or
                   platform decision. Revenue credited to a dataset version
                   before a reassignment stays claimable against that
                   version's root. Renouncing ownership ends this power (and
                   the launcher setting with it).
                 - Exact digests only: a publisher can register slightly
                   different weights (one changed byte, a no-op adapter) as a
                   new model; holders are protected only for the model they
                   hold, whose fee and activity the timelock guards.
                 - Fee increases are immediate; requesters must bound the
                   model fee they accept (TaskEscrow `post_task`). A
                   prohibitive increase can price a model out of demand at
                   once; it is public and reversible but not delayed.
                 - The delay gives holders notice, not a veto: a cut or a
                   closing announced during a sale takes effect after it.
"""

from snekmate.auth import ownable
from snekmate.utils import merkle_proof_verification as merkle

import interfaces.IDataRegistry as IDataRegistry

implements: IDataRegistry

initializes: ownable
exports: (ownable.owner, ownable.transfer_ownership, ownable.renounce_ownership)


# @dev Most contributors one dataset version can have.
MAX_CONTRIBUTORS: public(constant(uint256)) = 1000
# @dev Basis points in 100 %.
BPS: constant(uint256) = 10_000
# @dev Highest model fee; the fee is packed into 88 bits of the pricing word.
MAX_MODEL_FEE: public(constant(uint256)) = 2**88 - 1
# @dev How long a dataset commitment stays revealable, in seconds.
COMMIT_MAX_AGE: public(constant(uint256)) = 86_400
# @dev How long holders of a model's token see a fee cut or a deactivation
# coming before it takes effect, in seconds.
PRICING_DELAY: public(constant(uint256)) = 7 * 86_400
# @dev Bounds of a model's serving terms (`set_serving_terms`).
MAX_NEW_TOKENS_CAP: public(constant(uint256)) = 4096
MIN_COSINE_PPM_FLOOR: public(constant(uint256)) = 900_000
MAX_LOGIT_MARGIN_MILLI: public(constant(uint256)) = 50_000
# @dev Most adapters one model can have.
MAX_ADAPTERS: constant(uint256) = 16
_MASK_16: constant(uint256) = 2**16 - 1
_MASK_64: constant(uint256) = 2**64 - 1
_MASK_88: constant(uint256) = 2**88 - 1
_MASK_160: constant(uint256) = 2**160 - 1
_ACTIVE_BIT: constant(uint256) = 1 << 240
# @dev The active flag of a pricing word.
_LIVE_BIT: constant(uint256) = 1 << 160
# @dev Set in a pricing word while a scheduled change is stored in
# `_pending_pricing`, so that the common `model_pricing` stays one SLOAD.
_PENDING_BIT: constant(uint256) = 1 << 161
# @dev `_pending_pricing` layout: fee (0..87) | fee eta (88..151) | deactivation eta (152..215).
_FEE_ETA_SHIFT: constant(uint256) = 88
_OFF_ETA_SHIFT: constant(uint256) = 152
_FEE_PART: constant(uint256) = 2**152 - 1
_OFF_PART: constant(uint256) = (2**64 - 1) << 152
# @dev Merkle depth bound: 2**10 = 1024 >= MAX_CONTRIBUTORS.
_MAX_DEPTH: constant(uint256) = 10


# @dev Stored part of a model; fee receiver, fee and active flag live packed in
# `_model_pricing` so that `model_pricing` costs one storage read.
struct _ModelInfo:
    weights_digest: bytes32
    publisher: address
    name: String[64]


# @dev Dataset commitments per committer: block number (bits 0..63) |
# timestamp (64..127) of the commit; 0 = none.
_commitments: HashMap[address, HashMap[bytes32, uint256]]
# @dev Datasets by id, stored in three parts: the packed word
# owner (bits 0..159) | version (160..223) | contributor count (224..239) |
# active (bit 240), read in one SLOAD by `dataset_version` on every credit;
# the two digests; the terms. The current root is read from `_roots`.
_dataset_word: HashMap[uint256, uint256]
_dataset_digests: HashMap[uint256, bytes32[2]]
_dataset_terms: HashMap[uint256, String[256]]
# @dev Contributors root per (dataset id, version).
_roots: HashMap[uint256, HashMap[uint256, bytes32]]
# @dev Dataset id by content digest (0 = none).
dataset_id_of: public(HashMap[bytes32, uint256])
# @dev Number of datasets; ids run 1..dataset_count.
dataset_count: public(uint256)
# @dev Who may accept a dataset's ownership (empty = no transfer under way).
dataset_pending_owner: public(HashMap[uint256, address])

_models: HashMap[uint256, _ModelInfo]
# @dev receiver (bits 0..159) | active (bit 160) | pending change (bit 161) |
# fee_per_task (bits 168..255), as last written; scheduled changes that are
# due are applied on read.
_model_pricing: HashMap[uint256, uint256]
# @dev A scheduled fee cut and / or deactivation (layout above; eta 0 = none).
_pending_pricing: HashMap[uint256, uint256]
# @dev Serving terms of a model, packed: max_new_tokens (0..15) | min_cosine_ppm
# (16..47) | logit_margin_milli (48..79); a zero field reads as the off-chain
# default. Not read by any money path: agents and the oracle's verifier read it.
_model_serving: HashMap[uint256, uint256]
_model_adapters: HashMap[uint256, DynArray[bytes32, 16]]
_model_dataset_ids: HashMap[uint256, DynArray[uint256, 32]]
_model_dataset_weights: HashMap[uint256, DynArray[uint16, 32]]
# @dev Number of models; ids run 1..model_count.
model_count: public(uint256)
# @dev Model id by `weights_key(weights, adapters)` (0 = none).
model_id_of_weights: public(HashMap[bytes32, uint256])

# @dev May begin IMOs (`begin_imo`); each IMO is then bound to its launcher.
imo_launcher: public(address)
# @dev The launcher whose IMO is in progress for a model (empty = none).
imo_launcher_of: public(HashMap[uint256, address])
# @dev Models whose fee receiver a successful IMO set to its token: final.
fee_receiver_locked: public(HashMap[uint256, bool])


@deploy
@payable
def __init__():
    """
    @notice The deployer becomes the registry owner (who sets the IMO launcher
            and resolves dataset disputes).
    """
    ownable.__init__()


# ---------------------------------------------------------------- datasets


@external
def commit_dataset(commitment: bytes32):
    """
    @notice First step of registering a dataset: commits to its digests
            without revealing them. Reveal with `register_dataset` in a later
            block and within `COMMIT_MAX_AGE` seconds.
    @param commitment `dataset_commitment(content_digest, metadata_digest,
           msg.sender, salt)`, with a secret random salt.
    """
    assert commitment != empty(bytes32), "registry: zero commitment"
    word: uint256 = self._commitments[msg.sender][commitment]
    # @dev Refreshing a live commitment would only move its reveal window; an
    # expired one may be made again.
    assert word == 0 or block.timestamp > (word >> 64) + COMMIT_MAX_AGE, "registry: already committed"
    self._commitments[msg.sender][commitment] = block.number | (block.timestamp << 64)
    log IDataRegistry.DatasetCommitted(registrant=msg.sender, commitment=commitment, expires_at=block.timestamp + COMMIT_MAX_AGE)


@external
def register_dataset(
    content_digest: bytes32,
    metadata_digest: bytes32,
    contributors: DynArray[address, 1000],
    shares_bps: DynArray[uint16, 1000],
    terms: String[256],
    salt: bytes32,
) -> uint256:
    """
    @notice Reveals a commitment and registers a dataset owned by the caller,
            with its contributors and their shares (version 1).
    @dev The commitment is looked up under msg.sender and recomputed with
         msg.sender, so only its committer can reveal it.
    @param content_digest The sha2-256 digest of the dataset content (its CID digest).
    @param metadata_digest The digest of the dataset's metadata document.
    @param contributors Contributor accounts, strictly ascending by address.
    @param shares_bps Each contributor's share in basis points (sum 10000, none zero).
    @param terms Licence / usage terms.
    @param salt The salt of the caller's commitment.
    @return uint256 The new dataset id (ids start at 1).
    """
    assert content_digest != empty(bytes32), "registry: zero content digest"
    commitment: bytes32 = self._commitment(content_digest, metadata_digest, msg.sender, salt)
    committed: uint256 = self._commitments[msg.sender][commitment]
    assert committed != 0, "registry: no matching commitment"
    # @dev A later block: whoever learns the digest from this reveal cannot
    # commit and reveal ahead of it within the same block.
    assert block.number > committed & _MASK_64, "registry: reveal too early (wait a block)"
    assert block.timestamp <= (committed >> 64) + COMMIT_MAX_AGE, "registry: commitment expired"
    self._commitments[msg.sender][commitment] = 0
    assert self.dataset_id_of[content_digest] == 0, "registry: dataset already registered"
    root: bytes32 = self._contributors_root(contributors, shares_bps)

    dataset_id: uint256 = self.dataset_count + 1
    self.dataset_count = dataset_id
    self.dataset_id_of[content_digest] = dataset_id
    self._dataset_word[dataset_id] = self._pack_dataset(msg.sender, 1, len(contributors), True)
    self._dataset_digests[dataset_id] = [content_digest, metadata_digest]
    if len(terms) != 0:
        self._dataset_terms[dataset_id] = terms
    self._roots[dataset_id][1] = root

    log IDataRegistry.DatasetRegistered(
        dataset_id=dataset_id,
        owner=msg.sender,
        content_digest=content_digest,
        metadata_digest=metadata_digest,
        terms=terms,
    )
    log IDataRegistry.ContributorsSet(
        dataset_id=dataset_id,
        version=1,
        contributors_root=root,
        contributors=contributors,
        shares_bps=shares_bps,
    )
    return dataset_id


@external
@pure
def dataset_commitment(content_digest: bytes32, metadata_digest: bytes32, registrant: address, salt: bytes32) -> bytes32:
    """
    @notice The commitment `commit_dataset` takes.
    @param content_digest The dataset's content digest.
    @param metadata_digest The dataset's metadata digest.
    @param registrant Who will reveal it (the committer).
    @param salt A secret random salt.
    @return bytes32 keccak256(abi_encode(content_digest, metadata_digest, registrant, salt)).
    """
    return self._commitment(content_digest, metadata_digest, registrant, salt)


@external
@view
def commitment_of(registrant: address, commitment: bytes32) -> (uint256, uint256):
    """
    @notice When `registrant` made `commitment` (zeros if it did not, or it was revealed).
    @param registrant The committer.
    @param commitment The commitment.
    @return uint256 The block number of the commit.
    @return uint256 The timestamp of the commit.
    """
    word: uint256 = self._commitments[registrant][commitment]
    return word & _MASK_64, word >> 64


@external
def transfer_dataset(dataset_id: uint256, new_owner: address):
    """
    @notice Starts handing a dataset to `new_owner`, who must accept it
            (dataset owner only). The empty address cancels a transfer.
    @param dataset_id The dataset id.
    @param new_owner The proposed owner.
    """
    self._check_dataset_owner(dataset_id)
    assert new_owner != msg.sender, "registry: new owner is the owner"
    self.dataset_pending_owner[dataset_id] = new_owner
    log IDataRegistry.DatasetTransferStarted(dataset_id=dataset_id, owner=msg.sender, pending_owner=new_owner)


@external
def accept_dataset(dataset_id: uint256):
    """
    @notice Completes a dataset transfer (its pending owner only).
    @param dataset_id The dataset id.
    """
    assert msg.sender == self.dataset_pending_owner[dataset_id], "registry: caller is not the pending owner"
    previous: address = self._set_dataset_owner(dataset_id, msg.sender)
    log IDataRegistry.DatasetOwnerChanged(dataset_id=dataset_id, previous_owner=previous, new_owner=msg.sender)


@external
def resolve_dataset_dispute(dataset_id: uint256, rightful_owner: address, evidence_digest: bytes32):
    """
    @notice Reassigns a disputed dataset to its rightful owner (registry
            owner only). A trust power, see the contract's security notes.
    @dev The registry cannot tell authorship on-chain; the owner acts on
         off-chain evidence (a signature by the content's creator, an earlier
         timestamped publication, a court or platform decision) and logs the
         digest of that evidence for anyone to audit. Any transfer under way
         is cancelled. Revenue already credited stays with its versions.
    @param dataset_id The dataset id.
    @param rightful_owner The new owner.
    @param evidence_digest The digest of the evidence document.
    """
    ownable._check_owner()
    assert self._owner_of(self._dataset_word[dataset_id]) != empty(address), "registry: unknown dataset"
    assert rightful_owner != empty(address), "registry: zero owner"
    assert evidence_digest != empty(bytes32), "registry: zero evidence digest"
    previous: address = self._set_dataset_owner(dataset_id, rightful_owner)
    log IDataRegistry.DatasetDisputeResolved(dataset_id=dataset_id, previous_owner=previous, new_owner=rightful_owner, evidence_digest=evidence_digest)
    log IDataRegistry.DatasetOwnerChanged(dataset_id=dataset_id, previous_owner=previous, new_owner=rightful_owner)


@external
def update_contributors(dataset_id: uint256, contributors: DynArray[address, 1000], shares_bps: DynArray[uint16, 1000]):
    """
    @notice Replaces a dataset's contributors: bumps its version and commits the
            new root. Revenue already credited to earlier versions stays
            claimable against their roots. Works on deactivated datasets too
            (which also lets an owner close a version to sweep its dust).
    @param dataset_id The dataset id.
    @param contributors Contributor accounts, strictly ascending by address.
    @param shares_bps Each contributor's share in basis points (sum 10000, none zero).
    """
    self._check_dataset_owner(dataset_id)
    root: bytes32 = self._contributors_root(contributors, shares_bps)
    owner: address = empty(address)
    version: uint256 = 0
    count: uint256 = 0
    active: bool = False
    owner, version, count, active = self._unpack_dataset(self._dataset_word[dataset_id])
    version += 1
    self._dataset_word[dataset_id] = self._pack_dataset(owner, version, len(contributors), active)
    self._roots[dataset_id][version] = root
    log IDataRegistry.ContributorsSet(
        dataset_id=dataset_id,
        version=version,
        contributors_root=root,
        contributors=contributors,
        shares_bps=shares_bps,
    )


@external
def update_terms(dataset_id: uint256, terms: String[256]):
    """
    @notice Replaces a dataset's terms (dataset owner only).
    @param dataset_id The dataset id.
    @param terms The new terms.
    """
    self._check_dataset_owner(dataset_id)
    self._dataset_terms[dataset_id] = terms
    log IDataRegistry.DatasetTermsUpdated(dataset_id=dataset_id, terms=terms)


@external
def deactivate_dataset(dataset_id: uint256):
    """
    @notice Marks a dataset inactive (dataset owner only). It stays readable and
            its roots stay valid for claims.
    @param dataset_id The dataset id.
    """
    self._check_dataset_owner(dataset_id)
    word: uint256 = self._dataset_word[dataset_id]
    assert word & _ACTIVE_BIT != 0, "registry: dataset inactive"
    self._dataset_word[dataset_id] = word & ~_ACTIVE_BIT
    log IDataRegistry.DatasetDeactivated(dataset_id=dataset_id)


@external
@view
def dataset(dataset_id: uint256) -> IDataRegistry.Dataset:
    """
    @notice A dataset, with the root of its current version (empty if unknown).
    @param dataset_id The dataset id.
    @return Dataset The dataset record.
    """
    owner: address = empty(address)
    version: uint256 = 0
    count: uint256 = 0
    active: bool = False
    owner, version, count, active = self._unpack_dataset(self._dataset_word[dataset_id])
    digests: bytes32[2] = self._dataset_digests[dataset_id]
    return IDataRegistry.Dataset(
        content_digest=digests[0],
        metadata_digest=digests[1],
        owner=owner,
        contributors_root=self._roots[dataset_id][version],
        version=version,
        contributor_count=count,
        terms=self._dataset_terms[dataset_id],
        active=active,
    )


@external
@view
def dataset_version(dataset_id: uint256) -> uint256:
    """
    @notice The current contributors version of a dataset (0 if unknown); one
            storage read, used by the RoyaltyVault on every credit.
    @param dataset_id The dataset id.
    @return uint256 The current version.
    """
    return (self._dataset_word[dataset_id] >> 160) & _MASK_64


@external
@view
def dataset_owner(dataset_id: uint256) -> address:
    """
    @notice The owner of a dataset (empty if unknown).
    @param dataset_id The dataset id.
    @return address The dataset owner.
    """
    return self._owner_of(self._dataset_word[dataset_id])


@external
@view
def contributors_root(dataset_id: uint256, version: uint256) -> bytes32:
    """
    @notice The contributors root of a dataset version (empty if unknown).
    @param dataset_id The dataset id.
    @param version The contributors version (1-based).
    @return bytes32 The Merkle root.
    """
    return self._roots[dataset_id][version]


@external
@view
def verify_share(dataset_id: uint256, version: uint256, account: address, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> bool:
    """
    @notice Whether `account` holds `shares_bps` in a dataset version.
    @param dataset_id The dataset id.
    @param version The contributors version.
    @param account The contributor.
    @param shares_bps The claimed share in basis points.
    @param proof Sibling hashes from the leaf up to the root.
    @return bool True if the proof checks out against the stored root.
    """
    root: bytes32 = self._roots[dataset_id][version]
    if root == empty(bytes32):
        return False
    return merkle._verify(proof, root, self._leaf(account, shares_bps))


@external
@pure
def compute_contributors_root(contributors: DynArray[address, 1000], shares_bps: DynArray[uint16, 1000]) -> bytes32:
    """
    @notice Validates a contributors list exactly as `register_dataset` does and
            returns its Merkle root.
    @param contributors Contributor accounts, strictly ascending by address.
    @param shares_bps Each contributor's share in basis points.
    @return bytes32 The Merkle root.
    """
    return self._contributors_root(contributors, shares_bps)


@external
@pure
def contributors_leaf(account: address, shares_bps: uint16) -> bytes32:
    """
    @notice The Merkle leaf of one (account, share) pair.
    @param account The contributor.
    @param shares_bps The share in basis points.
    @return bytes32 keccak256(keccak256(abi_encode(account, shares_bps))).
    """
    return self._leaf(account, shares_bps)


# ------------------------------------------------------------------ models


@external
def register_model(
    name: String[64],
    weights_digest: bytes32,
    adapter_digests: DynArray[bytes32, 16],
    dataset_ids: DynArray[uint256, 32],
    dataset_weights_bps: DynArray[uint16, 32],
    fee_per_task: uint256,
    fee_receiver: address,
) -> uint256:
    """
    @notice Registers a model published by the caller. One weights set (base
            digest plus the set of adapter digests) is registered once only.
    @param name Human-readable name (1..64 characters).
    @param weights_digest The digest of the base weights.
    @param adapter_digests Digests of the LoRA adapters served on the base
           model (any order, no duplicates).
    @param dataset_ids Datasets the model was trained on (may be empty).
    @param dataset_weights_bps Weight of each dataset (sum 10000 if any).
    @param fee_per_task The model fee charged per task, in wei.
    @param fee_receiver Who is credited the model fee (later: the IMO token).
    @return uint256 The new model id (ids start at 1).
    """
    assert len(name) != 0, "registry: empty name"
    assert weights_digest != empty(bytes32), "registry: zero weights digest"
    assert len(dataset_ids) == len(dataset_weights_bps), "registry: length mismatch"
    count: uint256 = self.dataset_count
    total: uint256 = 0
    for i: uint256 in range(len(dataset_ids), bound=32):
        assert dataset_ids[i] != 0 and dataset_ids[i] <= count, "registry: unknown dataset"
        total += convert(dataset_weights_bps[i], uint256)
    assert len(dataset_ids) == 0 or total == BPS, "registry: weights must sum to 10000"
    assert fee_receiver != empty(address), "registry: zero fee receiver"
    assert fee_per_task <= MAX_MODEL_FEE, "registry: fee too large"
    # @dev Otherwise a publisher could re-register the weights an IMO sold as a
    # new model that pays itself, and move the demand away from the token.
    key: bytes32 = self._weights_key(weights_digest, adapter_digests)
    assert self.model_id_of_weights[key] == 0, "registry: weights already registered"

    model_id: uint256 = self.model_count + 1
    self.model_count = model_id
    self.model_id_of_weights[key] = model_id
    self._models[model_id] = _ModelInfo(weights_digest=weights_digest, publisher=msg.sender, name=name)
    self._model_pricing[model_id] = self._pack_pricing(fee_receiver, True, fee_per_task)
    if len(adapter_digests) != 0:
        self._model_adapters[model_id] = adapter_digests
    if len(dataset_ids) != 0:
        self._model_dataset_ids[model_id] = dataset_ids
        self._model_dataset_weights[model_id] = dataset_weights_bps

    log IDataRegistry.ModelRegistered(
        model_id=model_id,
        publisher=msg.sender,
        name=name,
        weights_digest=weights_digest,
        adapter_digests=adapter_digests,
        dataset_ids=dataset_ids,
        dataset_weights_bps=dataset_weights_bps,
        fee_per_task=fee_per_task,
        fee_receiver=fee_receiver,
    )
    return model_id


@external
@pure
def weights_key(weights_digest: bytes32, adapter_digests: DynArray[bytes32, 16]) -> bytes32:
    """
    @notice The key a weights set is registered under (see `model_id_of_weights`):
            keccak256(abi_encode(weights_digest, adapter digests ascending)).
    @param weights_digest The digest of the base weights.
    @param adapter_digests The adapter digests, in any order.
    @return bytes32 The key.
    """
    return self._weights_key(weights_digest, adapter_digests)


@external
def set_model_fee(model_id: uint256, fee_per_task: uint256):
    """
    @notice Sets a model's fee per task (publisher only). Open tasks keep the
            fee they were posted with. While an IMO is in progress or after
            one locked the fee receiver, a cut is scheduled: it takes effect
            `PRICING_DELAY` seconds later (`ModelFeeCutScheduled`). A fee at
            or above the current one applies at once and cancels a scheduled
            cut; a new cut replaces a scheduled one (with a new delay).
    @param model_id The model id.
    @param fee_per_task The new fee in wei.
    """
    self._check_publisher(model_id)
    assert fee_per_task <= MAX_MODEL_FEE, "registry: fee too large"
    word: uint256 = self._apply_due(model_id)
    receiver: address = empty(address)
    active: bool = False
    current: uint256 = 0
    receiver, active, current = self._unpack_pricing(word)
    pending: uint256 = self._pending_pricing[model_id] & _OFF_PART
    if fee_per_task < current and self._holds_revenue(model_id):
        # @dev Token holders get PRICING_DELAY to see the cut coming and act
        # (sell, burn for the redeem pool) before the revenue drops.
        effective_at: uint256 = block.timestamp + PRICING_DELAY
        pending |= fee_per_task | (effective_at << _FEE_ETA_SHIFT)
        self._pending_pricing[model_id] = pending
        self._model_pricing[model_id] = word | _PENDING_BIT
        log IDataRegistry.ModelFeeCutScheduled(model_id=model_id, fee_per_task=fee_per_task, effective_at=effective_at)
        return
    self._pending_pricing[model_id] = pending
    self._model_pricing[model_id] = self._with_pending(self._pack_pricing(receiver, active, fee_per_task), pending)
    log IDataRegistry.ModelFeeUpdated(model_id=model_id, fee_per_task=fee_per_task)


@external
def set_fee_receiver(model_id: uint256, fee_receiver: address):
    """
    @notice Sets who is credited a model's fee (publisher only). Refused while
            an IMO is in progress for the model and after one locked it.
    @param model_id The model id.
    @param fee_receiver The new receiver (not zero).
    """
    self._check_publisher(model_id)
    assert fee_receiver != empty(address), "registry: zero fee receiver"
    assert not self._holds_revenue(model_id), "registry: fee receiver locked by an IMO"
    self._set_receiver(model_id, fee_receiver)


@external
def set_model_active(model_id: uint256, active: bool):
    """
    @notice Opens or closes a model to new tasks (publisher only). While an
            IMO is in progress or after one locked the fee receiver, closing
            is scheduled `PRICING_DELAY` seconds ahead
            (`ModelDeactivationScheduled`); opening applies at once and
            cancels a scheduled closing.
    @param model_id The model id.
    @param active Whether new tasks may be posted for it.
    """
    self._check_publisher(model_id)
    word: uint256 = self._apply_due(model_id)
    receiver: address = empty(address)
    was_active: bool = False
    fee: uint256 = 0
    receiver, was_active, fee = self._unpack_pricing(word)
    pending: uint256 = self._pending_pricing[model_id]
    if not active and was_active and self._holds_revenue(model_id):
        assert pending & _OFF_PART == 0, "registry: deactivation already scheduled"
        effective_at: uint256 = block.timestamp + PRICING_DELAY
        self._pending_pricing[model_id] = pending | (effective_at << _OFF_ETA_SHIFT)
        self._model_pricing[model_id] = word | _PENDING_BIT
        log IDataRegistry.ModelDeactivationScheduled(model_id=model_id, effective_at=effective_at)
        return
    pending &= _FEE_PART
    self._pending_pricing[model_id] = pending
    self._model_pricing[model_id] = self._with_pending(self._pack_pricing(receiver, active, fee), pending)
    log IDataRegistry.ModelActiveSet(model_id=model_id, active=active)


@external
def set_serving_terms(
    model_id: uint256, max_new_tokens: uint256, min_cosine_ppm: uint256, logit_margin_milli: uint256
):
    """
    @notice Sets what one task of the model buys and how its results are
            verified (publisher only). The fee per task pays for a generation
            of up to `max_new_tokens` new tokens, so a publisher who raises the
            limit prices it into the fee. 0 in a field restores the default
            (64 new tokens; the verifier's cosine floor and logit margin).
    @param model_id The model id.
    @param max_new_tokens Most new tokens a generation task may ask for
           (0, or 1..MAX_NEW_TOKENS_CAP).
    @param min_cosine_ppm Embeddings agree when every vector pair's cosine
           similarity is at least this, in millionths (0, or
           MIN_COSINE_PPM_FLOOR..1_000_000).
    @param logit_margin_milli A claimed token is accepted when its logit is
           within this of the verifier's best, in thousandths (0..
           MAX_LOGIT_MARGIN_MILLI).
    """
    self._check_publisher(model_id)
    assert max_new_tokens <= MAX_NEW_TOKENS_CAP, "registry: max_new_tokens too large"
    assert min_cosine_ppm == 0 or (
        min_cosine_ppm >= MIN_COSINE_PPM_FLOOR and min_cosine_ppm <= 1_000_000
    ), "registry: min_cosine_ppm out of range"
    assert logit_margin_milli <= MAX_LOGIT_MARGIN_MILLI, "registry: logit margin too large"
    self._model_serving[model_id] = max_new_tokens | (min_cosine_ppm << 16) | (logit_margin_milli << 48)
    log IDataRegistry.ModelServingTermsSet(
        model_id=model_id,
        max_new_tokens=max_new_tokens,
        min_cosine_ppm=min_cosine_ppm,
        logit_margin_milli=logit_margin_milli,
    )


@external
@view
def serving_terms(model_id: uint256) -> (uint256, uint256, uint256):
    """
    @notice A model's serving terms as set (0: the default).
    @param model_id The model id.
    @return uint256 max_new_tokens.
    @return uint256 min_cosine_ppm.
    @return uint256 logit_margin_milli.
    """
    word: uint256 = self._model_serving[model_id]
    return word & _MASK_16, (word >> 16) & (2**32 - 1), (word >> 48) & (2**32 - 1)


@external
@view
def pending_pricing(model_id: uint256) -> (uint256, uint256, uint256):
    """
    @notice The scheduled pricing changes of a model that are not in effect yet.
    @param model_id The model id.
    @return uint256 The scheduled fee (meaningful if its time is not zero).
    @return uint256 When the scheduled fee takes effect (0 = no cut scheduled).
    @return uint256 When the model closes to new tasks (0 = not scheduled).
    """
    if self._model_pricing[model_id] & _PENDING_BIT == 0:
        return 0, 0, 0
    pending: uint256 = self._pending_pricing[model_id]
    fee: uint256 = pending & _MASK_88
    fee_at: uint256 = (pending >> _FEE_ETA_SHIFT) & _MASK_64
    off_at: uint256 = pending >> _OFF_ETA_SHIFT
    if fee_at <= block.timestamp:
        fee = 0
        fee_at = 0
    if off_at <= block.timestamp:
        off_at = 0
    return fee, fee_at, off_at


# -------------------------------------------------------------------- IMOs


@external
def set_imo_launcher(launcher: address):
    """
    @notice Sets the IMO launcher allowed to begin IMOs (owner only; the zero
            address disables new IMOs). IMOs in progress stay bound to the
            launcher that began them.
    @param launcher The launcher contract.
    """
    ownable._check_owner()
    self.imo_launcher = launcher
    log IDataRegistry.ImoLauncherSet(launcher=launcher)


@external
def begin_imo(model_id: uint256):
    """
    @notice Records that the registry's IMO launcher starts selling a model's
            token (launcher only). From now on the publisher can no longer
            set the fee receiver, and fee cuts and deactivation are delayed.
    @dev The launcher checks that its caller is the publisher. A model with a
         pricing change still scheduled is refused, so that buyers do not buy
         into an announced cut.
    @param model_id The model id.
    """
    assert msg.sender == self.imo_launcher, "registry: caller is not the imo launcher"
    assert self._models[model_id].publisher != empty(address), "registry: unknown model"
    word: uint256 = self._apply_due(model_id)
    assert word & _LIVE_BIT != 0, "registry: model inactive"
    assert not self.fee_receiver_locked[model_id], "registry: fee receiver locked by an IMO"
    assert self.imo_launcher_of[model_id] == empty(address), "registry: imo in progress"
    assert word & _PENDING_BIT == 0, "registry: pricing change scheduled"
    self.imo_launcher_of[model_id] = msg.sender
    log IDataRegistry.ImoBegun(model_id=model_id, launcher=msg.sender)


@external
def end_imo(model_id: uint256, token: address):
    """
    @notice Ends a model's IMO (only the launcher that began it, even after
            the registry's launcher changed). With a token (the sale
            succeeded) the fee receiver becomes the token, locked for good;
            with the empty address (it failed) the publisher may launch again.
    @dev Never reverts for its launcher, so that a sale can always finalize
         or refund.
    @param model_id The model id.
    @param token The model token, or empty for a failed sale.
    """
    launcher: address = self.imo_launcher_of[model_id]
    assert launcher != empty(address) and msg.sender == launcher, "registry: caller is not the model's imo launcher"
    self.imo_launcher_of[model_id] = empty(address)
    if token != empty(address):
        self.fee_receiver_locked[model_id] = True
        self._set_receiver(model_id, token)
    log IDataRegistry.ImoEnded(model_id=model_id, launcher=launcher, token=token)


# ------------------------------------------------------------ model views


@external
@view
def model(model_id: uint256) -> IDataRegistry.Model:
    """
    @notice A model record as in effect now (empty if unknown).
    @param model_id The model id.
    @return Model The model.
    """
    info: _ModelInfo = self._models[model_id]
    receiver: address = empty(address)
    active: bool = False
    fee: uint256 = 0
    receiver, active, fee = self._unpack_pricing(self._effective_word(model_id))
    return IDataRegistry.Model(
        weights_digest=info.weights_digest,
        publisher=info.publisher,
        fee_receiver=receiver,
        fee_per_task=fee,
        active=active,
        name=info.name,
    )


@external
@view
def model_pricing(model_id: uint256) -> (bool, uint256, address):
    """
    @notice What the TaskEscrow needs to price and pay a task, as in effect at
            `block.timestamp`; one storage read unless a change is scheduled.
    @param model_id The model id.
    @return bool Whether the model takes new tasks (False if unknown).
    @return uint256 The fee per task.
    @return address The current fee receiver (empty if unknown).
    """
    word: uint256 = self._model_pricing[model_id]
    if word & _PENDING_BIT != 0:
        word = self._effective_word(model_id)
    # @dev Unpacked inline: this view runs in every post_task and settle.
    return word & _LIVE_BIT != 0, word >> 168, convert(convert(word & _MASK_160, uint160), address)


@external
@view
def model_publisher(model_id: uint256) -> address:
    """
    @notice The publisher of a model (empty if unknown).
    @param model_id The model id.
    @return address The publisher.
    """
    return self._models[model_id].publisher


@external
@view
def model_adapters(model_id: uint256) -> DynArray[bytes32, 16]:
    """
    @notice The adapter digests of a model, as registered.
    @param model_id The model id.
    @return DynArray The adapter digests.
    """
    return self._model_adapters[model_id]


@external
@view
def model_dataset_ids(model_id: uint256) -> DynArray[uint256, 32]:
    """
    @notice The training datasets of a model.
    @param model_id The model id.
    @return DynArray The dataset ids.
    """
    return self._model_dataset_ids[model_id]


@external
@view
def model_dataset_weights(model_id: uint256) -> DynArray[uint16, 32]:
    """
    @notice The weights of a model's training datasets, in basis points.
    @param model_id The model id.
    @return DynArray The weights, aligned with `model_dataset_ids`.
    """
    return self._model_dataset_weights[model_id]


# ---------------------------------------------------------------- internal


@internal
@view
def _check_dataset_owner(dataset_id: uint256):
    owner: address = self._owner_of(self._dataset_word[dataset_id])
    assert owner != empty(address), "registry: unknown dataset"
    assert msg.sender == owner, "registry: caller is not the dataset owner"


@internal
def _set_dataset_owner(dataset_id: uint256, new_owner: address) -> address:
    word: uint256 = self._dataset_word[dataset_id]
    self._dataset_word[dataset_id] = (word & ~_MASK_160) | convert(new_owner, uint256)
    self.dataset_pending_owner[dataset_id] = empty(address)
    return self._owner_of(word)


@internal
@pure
def _commitment(content_digest: bytes32, metadata_digest: bytes32, registrant: address, salt: bytes32) -> bytes32:
    return keccak256(abi_encode(content_digest, metadata_digest, registrant, salt))


@internal
@view
def _check_publisher(model_id: uint256):
    publisher: address = self._models[model_id].publisher
    assert publisher != empty(address), "registry: unknown model"
    assert msg.sender == publisher, "registry: caller is not the publisher"


@internal
@view
def _holds_revenue(model_id: uint256) -> bool:
    """
    @dev Whether a token holds (locked) or is being sold the model's revenue.
    """
    return self.fee_receiver_locked[model_id] or self.imo_launcher_of[model_id] != empty(address)


@internal
def _set_receiver(model_id: uint256, receiver: address):
    # @dev Only the receiver bits change: a scheduled change stays scheduled.
    self._model_pricing[model_id] = (self._model_pricing[model_id] & ~_MASK_160) | convert(receiver, uint256)
    log IDataRegistry.ModelFeeReceiverUpdated(model_id=model_id, fee_receiver=receiver)


@internal
@pure
def _with_pending(word: uint256, pending: uint256) -> uint256:
    if pending != 0:
        return word | _PENDING_BIT
    return word


@internal
@view
def _effective_word(model_id: uint256) -> uint256:
    """
    @dev The pricing word with the scheduled changes that are due applied
         (and their pending marks left in place; only `_apply_due` clears them).
    """
    word: uint256 = self._model_pricing[model_id]
    if word & _PENDING_BIT == 0:
        return word
    pending: uint256 = self._pending_pricing[model_id]
    fee_at: uint256 = (pending >> _FEE_ETA_SHIFT) & _MASK_64
    off_at: uint256 = pending >> _OFF_ETA_SHIFT
    if fee_at != 0 and fee_at <= block.timestamp:
        word = (word & (2**168 - 1)) | ((pending & _MASK_88) << 168)
    if off_at != 0 and off_at <= block.timestamp:
        word &= ~_LIVE_BIT
    return word


@internal
def _apply_due(model_id: uint256) -> uint256:
    """
    @dev Writes the scheduled changes that are due into the pricing word and
         drops them from `_pending_pricing`; returns the new word.
    """
    word: uint256 = self._model_pricing[model_id]
    if word & _PENDING_BIT == 0:
        return word
    pending: uint256 = self._pending_pricing[model_id]
    fee_at: uint256 = (pending >> _FEE_ETA_SHIFT) & _MASK_64
    off_at: uint256 = pending >> _OFF_ETA_SHIFT
    if fee_at != 0 and fee_at <= block.timestamp:
        word = (word & (2**168 - 1)) | ((pending & _MASK_88) << 168)
        pending &= _OFF_PART
    if off_at != 0 and off_at <= block.timestamp:
        word &= ~_LIVE_BIT
        pending &= _FEE_PART
    if pending == 0:
        word &= ~_PENDING_BIT
    self._pending_pricing[model_id] = pending
    self._model_pricing[model_id] = word
    return word


@internal
@pure
def _weights_key(weights_digest: bytes32, adapter_digests: DynArray[bytes32, 16]) -> bytes32:
    """
    @dev LoRA deltas add up whatever their order, so the adapters count as a
         set: sorted ascending (insertion sort, at most 16), duplicates and
         zero digests refused.
    """
    sorted_digests: DynArray[bytes32, 16] = []
    for d: bytes32 in adapter_digests:
        assert d != empty(bytes32), "registry: zero adapter digest"
        sorted_digests.append(d)
        j: uint256 = len(sorted_digests) - 1
        for _: uint256 in range(MAX_ADAPTERS):
            if j == 0:
                break
            lower: uint256 = convert(sorted_digests[j - 1], uint256)
            upper: uint256 = convert(sorted_digests[j], uint256)
            assert lower != upper, "registry: duplicate adapter"
            if lower < upper:
                break
            sorted_digests[j - 1] = convert(upper, bytes32)
            sorted_digests[j] = convert(lower, bytes32)
            j -= 1
    return keccak256(abi_encode(weights_digest, sorted_digests))


@internal
@pure
def _owner_of(word: uint256) -> address:
    return convert(convert(word & _MASK_160, uint160), address)


@internal
@pure
def _pack_dataset(owner: address, version: uint256, count: uint256, active: bool) -> uint256:
    word: uint256 = convert(owner, uint256) | (version << 160) | (count << 224)
    if active:
        word |= _ACTIVE_BIT
    return word


@internal
@pure
def _unpack_dataset(word: uint256) -> (address, uint256, uint256, bool):
    return self._owner_of(word), (word >> 160) & _MASK_64, (word >> 224) & _MASK_16, word & _ACTIVE_BIT != 0


@internal
@pure
def _pack_pricing(receiver: address, active: bool, fee: uint256) -> uint256:
    word: uint256 = convert(receiver, uint256) | (fee << 168)
    if active:
        word |= 1 << 160
    return word


@internal
@pure
def _unpack_pricing(word: uint256) -> (address, bool, uint256):
    return (
        self._owner_of(word),
        (word >> 160) & 1 == 1,
        word >> 168,
    )


@internal
@pure
def _leaf(account: address, shares_bps: uint16) -> bytes32:
    return keccak256(keccak256(abi_encode(account, shares_bps)))


@internal
@pure
def _contributors_root(contributors: DynArray[address, 1000], shares_bps: DynArray[uint16, 1000]) -> bytes32:
    """
    @dev Validates the list (non-empty, aligned, bounded, strictly ascending
         non-zero addresses, non-zero shares summing to 10000) and returns its
         Merkle root, building the tree in place.
    """
    n: uint256 = len(contributors)
    assert n != 0, "registry: no contributors"
    assert n == len(shares_bps), "registry: length mismatch"
    assert n <= MAX_CONTRIBUTORS, "registry: too many contributors"

    nodes: DynArray[bytes32, 1000] = []
    previous: uint256 = 0
    total: uint256 = 0
    for i: uint256 in range(n, bound=1000):
        account: address = contributors[i]
        assert account != empty(address), "registry: zero address contributor"
        as_int: uint256 = convert(account, uint256)
        assert as_int > previous, "registry: contributors not strictly ascending"
        previous = as_int
        share: uint16 = shares_bps[i]
        assert share != 0, "registry: zero share"
        total += convert(share, uint256)
        nodes.append(self._leaf(account, share))
    assert total == BPS, "registry: shares must sum to 10000"

    width: uint256 = n
    for _: uint256 in range(_MAX_DEPTH):
        if width == 1:
            break
        half: uint256 = width // 2
        for j: uint256 in range(half, bound=500):
            nodes[j] = merkle._hash_pair(nodes[2 * j], nodes[2 * j + 1])
        if width % 2 == 1:
            nodes[half] = nodes[width - 1]
            width = half + 1
        else:
            width = half
    return nodes[0]
