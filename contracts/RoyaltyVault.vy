# pragma version ~=0.4.3
"""
@title Tributa RoyaltyVault
@custom:contract-name RoyaltyVault
@license MIT
@notice Data royalties. The TaskEscrow credits each attributed dataset's share
        of a task fee to revenue[dataset][current version], in O(1) per dataset
        whatever the number of contributors. Each contributor pulls
        floor(revenue * shares_bps / 10000) - claimed, proving (account, share)
        against the DataRegistry's contributors root of that version.
@dev Dust. Per (dataset, version), sum_i floor(revenue * s_i / 10000) >=
     revenue - (n - 1) wei for n contributors (the floors lose less than 1 wei
     each and their sum differs from revenue by an integer), so at most n - 1
     <= 999 wei of a version's revenue can never be claimed by contributors.
     Once a version is closed (the dataset owner committed a newer contributors
     version, so that version's revenue can no longer grow), `sweep_dust`
     computes that remainder exactly from the full contributors list (checked
     against the stored root) and pays it to the dataset owner; contributors can
     still claim their full floor shares afterwards. Dust of the current,
     still-open version stays in the vault, bounded as above.
@custom:security Pull payments only; every ETH-moving function is
                 `@nonreentrant` and updates state before the transfer. Only
                 the escrow (set once by the owner) can credit. A claim with
                 nothing owed reverts before any proof check or transfer.
                 A share is proven once per (dataset, version, account): the
                 first paying claim checks the Merkle proof (double-hashed
                 leaves, so no inner node passes for a leaf) and stores the
                 share next to the claimed amount; later claims must name the
                 same share and need no proof, since contributors roots of a
                 version never change in the registry.
"""

from snekmate.auth import ownable
from snekmate.utils import merkle_proof_verification as merkle

import interfaces.IDataRegistry as IDataRegistry
import interfaces.IRoyaltyVault as IRoyaltyVault

implements: IRoyaltyVault

initializes: ownable
exports: (ownable.owner, ownable.transfer_ownership, ownable.renounce_ownership)


# @dev Basis points in 100 %.
BPS: constant(uint256) = 10_000


event RoyaltyCredited:
    dataset_id: indexed(uint256)
    version: indexed(uint256)
    task_id: indexed(uint256)
    amount: uint256

event RoyaltyClaimed:
    account: indexed(address)
    dataset_id: indexed(uint256)
    version: indexed(uint256)
    amount: uint256

event EscrowSet:
    escrow: indexed(address)

event DustSwept:
    dataset_id: indexed(uint256)
    version: indexed(uint256)
    recipient: indexed(address)
    amount: uint256


# @dev The DataRegistry whose roots and versions this vault trusts.
registry: public(immutable(IDataRegistry))
# @dev The only account that may `credit` (the TaskEscrow); set once.
escrow: public(address)

# @dev Revenue credited per (dataset, version).
revenue: public(HashMap[uint256, HashMap[uint256, uint256]])
# @dev Per (dataset, version, account), packed in one word so that a repeat
# claim reads and writes one slot and needs no proof: the wei claimed (low 240
# bits) | the share proven by the first paying claim (high 16 bits; 0 = not
# proven yet, registry shares are never 0).
_claims: HashMap[uint256, HashMap[uint256, HashMap[address, uint256]]]
_SHARE_SHIFT: constant(uint256) = 240
_AMOUNT_MASK: constant(uint256) = 2**240 - 1
# @dev Dust swept per (dataset, version) (0 = not swept).
dust_swept: public(HashMap[uint256, HashMap[uint256, uint256]])

# @dev Running totals packed in one slot, so that a claim updates a slot that
# is already non-zero: total credited (low 128 bits) | total claimed, dust
# sweeps included (high 128 bits).
_totals: uint256
_HALF: constant(uint256) = 2**128


@deploy
@payable
def __init__(registry_: IDataRegistry):
    """
    @notice The deployer becomes the vault owner (who sets the escrow once).
    @param registry_ The DataRegistry.
    """
    assert registry_.address != empty(address), "vault: zero registry"
    ownable.__init__()
    registry = registry_


@external
def set_escrow(escrow: address):
    """
    @notice Sets the TaskEscrow allowed to credit royalties (owner only, once).
    @param escrow The TaskEscrow.
    """
    ownable._check_owner()
    assert self.escrow == empty(address), "vault: escrow already set"
    assert escrow != empty(address), "vault: zero escrow"
    self.escrow = escrow
    log EscrowSet(escrow=escrow)


@payable
@external
@nonreentrant
def credit(task_id: uint256, dataset_ids: DynArray[uint256, 16], amounts: DynArray[uint256, 16]):
    """
    @notice Credits a task's data share to the current version of each dataset
            (escrow only). Costs O(1) per dataset, independent of contributors.
    @param task_id The task the revenue comes from (for the events).
    @param dataset_ids The attributed datasets (must exist; repeats add up).
    @param amounts The wei credited to each; their sum must equal msg.value.
    """
    assert msg.sender == self.escrow, "vault: caller is not the escrow"
    assert len(dataset_ids) == len(amounts), "vault: length mismatch"
    total: uint256 = 0
    for i: uint256 in range(len(dataset_ids), bound=16):
        dataset_id: uint256 = dataset_ids[i]
        amount: uint256 = amounts[i]
        version: uint256 = staticcall registry.dataset_version(dataset_id)
        assert version != 0, "vault: unknown dataset"
        self.revenue[dataset_id][version] += amount
        total += amount
        log RoyaltyCredited(dataset_id=dataset_id, version=version, task_id=task_id, amount=amount)
    assert total == msg.value, "vault: value mismatch"
    # no overflow: the low half cannot exceed all the ether there is
    self._totals += total


@external
@nonreentrant
def claim(dataset_id: uint256, version: uint256, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> uint256:
    """
    @notice Pays the caller what it is owed from one dataset version.
    @param dataset_id The dataset id.
    @param version The contributors version the share belongs to.
    @param shares_bps The caller's share in that version, in basis points.
    @param proof The Merkle proof of (caller, shares_bps) for that version;
           ignored (may be empty) once the caller's share there is proven.
    @return uint256 The wei paid.
    """
    # @dev `_take` inlined, with no internal call and no copy of `proof`:
    # Vyper copies an array passed to an internal function into a frame
    # ~17 KiB up in memory, ~2,300 gas of expansion per claim (receipts).
    word: uint256 = self._claims[dataset_id][version][msg.sender]
    share: uint256 = convert(shares_bps, uint256)
    entitled: uint256 = self.revenue[dataset_id][version] * min(share, BPS) // BPS
    already: uint256 = word & _AMOUNT_MASK
    assert entitled > already, "vault: nothing to claim"
    owed: uint256 = entitled - already
    proven: uint256 = word >> _SHARE_SHIFT
    if proven == 0:
        # @dev The proof is read straight from calldata (no copy to memory),
        # hashed with the registry's leaf encoding and sorted pairs.
        root: bytes32 = staticcall registry.contributors_root(dataset_id, version)
        node: bytes32 = keccak256(keccak256(abi_encode(msg.sender, shares_bps)))
        for i: uint256 in range(len(proof), bound=16):
            sibling: bytes32 = proof[i]
            if convert(node, uint256) < convert(sibling, uint256):
                node = keccak256(concat(node, sibling))
            else:
                node = keccak256(concat(sibling, node))
        assert root != empty(bytes32) and node == root, "vault: invalid proof"
        word = share << _SHARE_SHIFT | already
    else:
        assert proven == share, "vault: invalid proof"
    self._claims[dataset_id][version][msg.sender] = word + owed
    log RoyaltyClaimed(account=msg.sender, dataset_id=dataset_id, version=version, amount=owed)
    self._totals += owed * _HALF
    success: bool = raw_call(msg.sender, b"", value=owed, revert_on_failure=False)
    assert success, "vault: transfer failed"
    return owed


@external
@nonreentrant
def claim_many(claims: DynArray[IRoyaltyVault.Claim, 32]) -> uint256:
    """
    @notice Pays the caller what it is owed across several dataset versions,
            in one transfer. Entries with nothing owed are skipped (no proof
            check); the call reverts if nothing at all is owed.
    @param claims (dataset_id, version, shares_bps, proof) entries.
    @return uint256 The wei paid.
    """
    total: uint256 = 0
    for c: IRoyaltyVault.Claim in claims:
        total += self._take(msg.sender, c.dataset_id, c.version, c.shares_bps, c.proof)
    assert total != 0, "vault: nothing to claim"
    self._totals += total * _HALF
    self._send(msg.sender, total)
    return total


@view
@external
def claimable(dataset_id: uint256, version: uint256, account: address, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> uint256:
    """
    @notice What `account` could claim now from one dataset version (0 if the
            proof does not check out).
    @param dataset_id The dataset id.
    @param version The contributors version.
    @param account The contributor.
    @param shares_bps Its share in basis points.
    @param proof The Merkle proof of (account, shares_bps); ignored once the
           share is proven.
    @return uint256 The wei claimable.
    """
    word: uint256 = self._claims[dataset_id][version][account]
    owed: uint256 = self._owed(word, dataset_id, version, shares_bps)
    if owed == 0:
        return 0
    proven: uint256 = word >> _SHARE_SHIFT
    if proven != 0:
        return owed if proven == convert(shares_bps, uint256) else 0
    if not self._verify(dataset_id, version, account, shares_bps, proof):
        return 0
    return owed


@view
@external
def claimed(dataset_id: uint256, version: uint256, account: address) -> uint256:
    """
    @notice What `account` has been paid from one dataset version.
    @param dataset_id The dataset id.
    @param version The contributors version.
    @param account The contributor.
    @return uint256 The wei claimed.
    """
    return self._claims[dataset_id][version][account] & _AMOUNT_MASK


@view
@external
def proven_share(dataset_id: uint256, version: uint256, account: address) -> uint16:
    """
    @notice The share `account` proved in one dataset version (0 if it never
            claimed there). Once non-zero, claims name this share and may pass
            an empty proof.
    @param dataset_id The dataset id.
    @param version The contributors version.
    @param account The contributor.
    @return uint16 The proven share in basis points.
    """
    return convert(self._claims[dataset_id][version][account] >> _SHARE_SHIFT, uint16)


@view
@external
def total_credited() -> uint256:
    """
    @notice Everything ever credited by the escrow.
    @return uint256 The total in wei.
    """
    return self._totals % _HALF


@view
@external
def total_claimed() -> uint256:
    """
    @notice Everything ever paid out (claims and dust sweeps).
    @return uint256 The total in wei.
    """
    return self._totals // _HALF


@external
@nonreentrant
def sweep_dust(dataset_id: uint256, version: uint256, contributors: DynArray[address, 1000], shares_bps: DynArray[uint16, 1000]) -> uint256:
    """
    @notice Pays the rounding dust of a CLOSED dataset version (one older than
            the dataset's current version, so its revenue is final) to the
            dataset owner. Callable by the vault owner or the dataset owner,
            once per version. Contributors keep their full floor shares.
    @param dataset_id The dataset id.
    @param version A version older than the current one.
    @param contributors That version's full contributors list (ascending).
    @param shares_bps That version's shares, aligned with `contributors`.
    @return uint256 The wei swept.
    """
    dataset_owner: address = staticcall registry.dataset_owner(dataset_id)
    assert dataset_owner != empty(address), "vault: unknown dataset"
    assert msg.sender == dataset_owner or msg.sender == ownable.owner, "vault: caller is not owner or dataset owner"
    current: uint256 = staticcall registry.dataset_version(dataset_id)
    assert version != 0 and version < current, "vault: version still open"
    assert self.dust_swept[dataset_id][version] == 0, "vault: dust already swept"
    root: bytes32 = staticcall registry.compute_contributors_root(contributors, shares_bps)
    assert root == staticcall registry.contributors_root(dataset_id, version), "vault: contributors do not match root"

    rev: uint256 = self.revenue[dataset_id][version]
    floors: uint256 = 0
    for share: uint16 in shares_bps:
        floors += rev * convert(share, uint256) // BPS
    dust: uint256 = rev - floors
    assert dust != 0, "vault: no dust"
    self.dust_swept[dataset_id][version] = dust
    self._totals += dust * _HALF
    log DustSwept(dataset_id=dataset_id, version=version, recipient=dataset_owner, amount=dust)
    self._send(dataset_owner, dust)
    return dust


@internal
@view
def _owed(word: uint256, dataset_id: uint256, version: uint256, shares_bps: uint16) -> uint256:
    # shares_bps is capped at 10000 so a forged larger share can never compute
    # more than the whole revenue (the proof check rejects it anyway).
    share: uint256 = min(convert(shares_bps, uint256), BPS)
    entitled: uint256 = self.revenue[dataset_id][version] * share // BPS
    already: uint256 = word & _AMOUNT_MASK
    if entitled <= already:
        return 0
    return entitled - already


@internal
def _take(account: address, dataset_id: uint256, version: uint256, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> uint256:
    """
    @dev Books what `account` is owed from one version and returns it; 0
         without any proof check if nothing is owed. The proof is checked only
         while the share is not proven yet; after that `shares_bps` must equal
         the proven share and `proof` is ignored (it may be empty).
    """
    word: uint256 = self._claims[dataset_id][version][account]
    owed: uint256 = self._owed(word, dataset_id, version, shares_bps)
    if owed == 0:
        return 0
    proven: uint256 = word >> _SHARE_SHIFT
    if proven == 0:
        assert self._verify(dataset_id, version, account, shares_bps, proof), "vault: invalid proof"
        # @dev 0 < shares_bps <= 10000 once proven, so it fits the 16 high bits.
        word = convert(shares_bps, uint256) << _SHARE_SHIFT | (word & _AMOUNT_MASK)
    else:
        assert proven == convert(shares_bps, uint256), "vault: invalid proof"
    # @dev no carry into the share bits: the new amount is a floor share of the
    # version's revenue, far below 2**240.
    self._claims[dataset_id][version][account] = word + owed
    log RoyaltyClaimed(account=account, dataset_id=dataset_id, version=version, amount=owed)
    return owed


@internal
@view
def _verify(dataset_id: uint256, version: uint256, account: address, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> bool:
    """
    @dev Checks (account, shares_bps) against the registry's root of that
         version, with the registry's leaf encoding
         keccak256(keccak256(abi_encode(account, shares_bps))).
    """
    root: bytes32 = staticcall registry.contributors_root(dataset_id, version)
    if root == empty(bytes32):
        return False
    return merkle._verify(proof, root, keccak256(keccak256(abi_encode(account, shares_bps))))


@internal
def _send(to: address, amount: uint256):
    success: bool = raw_call(to, b"", value=amount, revert_on_failure=False)
    assert success, "vault: transfer failed"
