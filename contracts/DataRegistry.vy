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
@custom:security Only the dataset owner can change a dataset; only the model
                 publisher (or, for the fee receiver, the registry's IMO
                 launcher) can change a model. The registry holds no ETH and
                 makes no external calls.
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
_MASK_16: constant(uint256) = 2**16 - 1
_MASK_64: constant(uint256) = 2**64 - 1
_MASK_160: constant(uint256) = 2**160 - 1
_ACTIVE_BIT: constant(uint256) = 1 << 240
# @dev Merkle depth bound: 2**10 = 1024 >= MAX_CONTRIBUTORS.
_MAX_DEPTH: constant(uint256) = 10


# @dev Stored part of a model; fee receiver, fee and active flag live packed in
# `_model_pricing` so that `model_pricing` costs one storage read.
struct _ModelInfo:
    weights_digest: bytes32
    publisher: address
    name: String[64]


event DatasetRegistered:
    dataset_id: indexed(uint256)
    owner: indexed(address)
    content_digest: bytes32
    metadata_digest: bytes32
    terms: String[256]

event ContributorsSet:
    dataset_id: indexed(uint256)
    version: indexed(uint256)
    contributors_root: bytes32
    contributors: DynArray[address, 1000]
    shares_bps: DynArray[uint16, 1000]

event DatasetTermsUpdated:
    dataset_id: indexed(uint256)
    terms: String[256]

event DatasetDeactivated:
    dataset_id: indexed(uint256)

event ModelRegistered:
    model_id: indexed(uint256)
    publisher: indexed(address)
    name: String[64]
    weights_digest: bytes32
    adapter_digests: DynArray[bytes32, 16]
    dataset_ids: DynArray[uint256, 32]
    dataset_weights_bps: DynArray[uint16, 32]
    fee_per_task: uint256
    fee_receiver: address

event ModelFeeUpdated:
    model_id: indexed(uint256)
    fee_per_task: uint256

event ModelFeeReceiverUpdated:
    model_id: indexed(uint256)
    fee_receiver: indexed(address)

event ModelActiveSet:
    model_id: indexed(uint256)
    active: bool

event ImoLauncherSet:
    launcher: indexed(address)


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

_models: HashMap[uint256, _ModelInfo]
# @dev receiver (bits 0..159) | active (bit 160) | fee_per_task (bits 168..255).
_model_pricing: HashMap[uint256, uint256]
_model_adapters: HashMap[uint256, DynArray[bytes32, 16]]
_model_dataset_ids: HashMap[uint256, DynArray[uint256, 32]]
_model_dataset_weights: HashMap[uint256, DynArray[uint16, 32]]
# @dev Number of models; ids run 1..model_count.
model_count: public(uint256)

# @dev May set any model's fee receiver (the IMO launcher points it at the token).
imo_launcher: public(address)
# @dev Models whose fee receiver an IMO set: only the launcher may change it after.
fee_receiver_locked: public(HashMap[uint256, bool])


@deploy
@payable
def __init__():
    """
    @notice The deployer becomes the registry owner (who sets the IMO launcher).
    """
    ownable.__init__()


# ---------------------------------------------------------------- datasets


@external
def register_dataset(
    content_digest: bytes32,
    metadata_digest: bytes32,
    contributors: DynArray[address, 1000],
    shares_bps: DynArray[uint16, 1000],
    terms: String[256],
) -> uint256:
    """
    @notice Registers a dataset owned by the caller, with its contributors and
            their shares (version 1).
    @param content_digest The sha2-256 digest of the dataset content (its CID digest).
    @param metadata_digest The digest of the dataset's metadata document.
    @param contributors Contributor accounts, strictly ascending by address.
    @param shares_bps Each contributor's share in basis points (sum 10000, none zero).
    @param terms Licence / usage terms.
    @return uint256 The new dataset id (ids start at 1).
    """
    assert content_digest != empty(bytes32), "registry: zero content digest"
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

    log DatasetRegistered(
        dataset_id=dataset_id,
        owner=msg.sender,
        content_digest=content_digest,
        metadata_digest=metadata_digest,
        terms=terms,
    )
    log ContributorsSet(
        dataset_id=dataset_id,
        version=1,
        contributors_root=root,
        contributors=contributors,
        shares_bps=shares_bps,
    )
    return dataset_id


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
    log ContributorsSet(
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
    log DatasetTermsUpdated(dataset_id=dataset_id, terms=terms)


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
    log DatasetDeactivated(dataset_id=dataset_id)


@view
@external
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


@view
@external
def dataset_version(dataset_id: uint256) -> uint256:
    """
    @notice The current contributors version of a dataset (0 if unknown); one
            storage read, used by the RoyaltyVault on every credit.
    @param dataset_id The dataset id.
    @return uint256 The current version.
    """
    return (self._dataset_word[dataset_id] >> 160) & _MASK_64


@view
@external
def dataset_owner(dataset_id: uint256) -> address:
    """
    @notice The owner of a dataset (empty if unknown).
    @param dataset_id The dataset id.
    @return address The dataset owner.
    """
    return self._owner_of(self._dataset_word[dataset_id])


@view
@external
def contributors_root(dataset_id: uint256, version: uint256) -> bytes32:
    """
    @notice The contributors root of a dataset version (empty if unknown).
    @param dataset_id The dataset id.
    @param version The contributors version (1-based).
    @return bytes32 The Merkle root.
    """
    return self._roots[dataset_id][version]


@view
@external
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


@pure
@external
def compute_contributors_root(contributors: DynArray[address, 1000], shares_bps: DynArray[uint16, 1000]) -> bytes32:
    """
    @notice Validates a contributors list exactly as `register_dataset` does and
            returns its Merkle root.
    @param contributors Contributor accounts, strictly ascending by address.
    @param shares_bps Each contributor's share in basis points.
    @return bytes32 The Merkle root.
    """
    return self._contributors_root(contributors, shares_bps)


@pure
@external
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
    @notice Registers a model published by the caller.
    @param name Human-readable name (1..64 characters).
    @param weights_digest The digest of the base weights.
    @param adapter_digests Digests of the LoRA adapters served on the base model.
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

    model_id: uint256 = self.model_count + 1
    self.model_count = model_id
    self._models[model_id] = _ModelInfo(weights_digest=weights_digest, publisher=msg.sender, name=name)
    self._model_pricing[model_id] = self._pack_pricing(fee_receiver, True, fee_per_task)
    if len(adapter_digests) != 0:
        self._model_adapters[model_id] = adapter_digests
    if len(dataset_ids) != 0:
        self._model_dataset_ids[model_id] = dataset_ids
        self._model_dataset_weights[model_id] = dataset_weights_bps

    log ModelRegistered(
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
def set_model_fee(model_id: uint256, fee_per_task: uint256):
    """
    @notice Sets a model's fee per task (publisher only). Open tasks keep the fee
            they were posted with.
    @param model_id The model id.
    @param fee_per_task The new fee in wei.
    """
    self._check_publisher(model_id)
    assert fee_per_task <= MAX_MODEL_FEE, "registry: fee too large"
    receiver: address = empty(address)
    active: bool = False
    old_fee: uint256 = 0
    receiver, active, old_fee = self._unpack_pricing(self._model_pricing[model_id])
    self._model_pricing[model_id] = self._pack_pricing(receiver, active, fee_per_task)
    log ModelFeeUpdated(model_id=model_id, fee_per_task=fee_per_task)


@external
def set_fee_receiver(model_id: uint256, fee_receiver: address):
    """
    @notice Sets who is credited a model's fee: callable by the publisher or by
            the registry's IMO launcher (which points it at the model token,
            after which the receiver is locked against the publisher).
    @param model_id The model id.
    @param fee_receiver The new receiver (not zero).
    """
    publisher: address = self._models[model_id].publisher
    assert publisher != empty(address), "registry: unknown model"
    assert msg.sender == publisher or msg.sender == self.imo_launcher, "registry: caller is not publisher or launcher"
    assert fee_receiver != empty(address), "registry: zero fee receiver"
    if msg.sender == self.imo_launcher:
        # Once an IMO points the fees at its token, the publisher cannot take them back from the holders.
        self.fee_receiver_locked[model_id] = True
    else:
        assert not self.fee_receiver_locked[model_id], "registry: fee receiver locked by an IMO"
    receiver: address = empty(address)
    active: bool = False
    fee: uint256 = 0
    receiver, active, fee = self._unpack_pricing(self._model_pricing[model_id])
    self._model_pricing[model_id] = self._pack_pricing(fee_receiver, active, fee)
    log ModelFeeReceiverUpdated(model_id=model_id, fee_receiver=fee_receiver)


@external
def set_model_active(model_id: uint256, active: bool):
    """
    @notice Opens or closes a model to new tasks (publisher only).
    @param model_id The model id.
    @param active Whether new tasks may be posted for it.
    """
    self._check_publisher(model_id)
    receiver: address = empty(address)
    was_active: bool = False
    fee: uint256 = 0
    receiver, was_active, fee = self._unpack_pricing(self._model_pricing[model_id])
    self._model_pricing[model_id] = self._pack_pricing(receiver, active, fee)
    log ModelActiveSet(model_id=model_id, active=active)


@external
def set_imo_launcher(launcher: address):
    """
    @notice Sets the IMO launcher allowed to set fee receivers (owner only;
            the zero address disables it).
    @param launcher The launcher contract.
    """
    ownable._check_owner()
    self.imo_launcher = launcher
    log ImoLauncherSet(launcher=launcher)


@view
@external
def model(model_id: uint256) -> IDataRegistry.Model:
    """
    @notice A model record (empty if unknown).
    @param model_id The model id.
    @return Model The model.
    """
    info: _ModelInfo = self._models[model_id]
    receiver: address = empty(address)
    active: bool = False
    fee: uint256 = 0
    receiver, active, fee = self._unpack_pricing(self._model_pricing[model_id])
    return IDataRegistry.Model(
        weights_digest=info.weights_digest,
        publisher=info.publisher,
        fee_receiver=receiver,
        fee_per_task=fee,
        active=active,
        name=info.name,
    )


@view
@external
def model_pricing(model_id: uint256) -> (bool, uint256, address):
    """
    @notice What the TaskEscrow needs to price and pay a task, in one storage read.
    @param model_id The model id.
    @return bool Whether the model takes new tasks (False if unknown).
    @return uint256 The fee per task.
    @return address The current fee receiver (empty if unknown).
    """
    receiver: address = empty(address)
    active: bool = False
    fee: uint256 = 0
    receiver, active, fee = self._unpack_pricing(self._model_pricing[model_id])
    return active, fee, receiver


@view
@external
def model_publisher(model_id: uint256) -> address:
    """
    @notice The publisher of a model (empty if unknown).
    @param model_id The model id.
    @return address The publisher.
    """
    return self._models[model_id].publisher


@view
@external
def model_adapters(model_id: uint256) -> DynArray[bytes32, 16]:
    """
    @notice The adapter digests of a model.
    @param model_id The model id.
    @return DynArray The adapter digests.
    """
    return self._model_adapters[model_id]


@view
@external
def model_dataset_ids(model_id: uint256) -> DynArray[uint256, 32]:
    """
    @notice The training datasets of a model.
    @param model_id The model id.
    @return DynArray The dataset ids.
    """
    return self._model_dataset_ids[model_id]


@view
@external
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
@view
def _check_publisher(model_id: uint256):
    publisher: address = self._models[model_id].publisher
    assert publisher != empty(address), "registry: unknown model"
    assert msg.sender == publisher, "registry: caller is not the publisher"


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
