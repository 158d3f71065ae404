# pragma version ~=0.4.3
"""
@title Tributa RoyaltyVault
@custom:contract-name RoyaltyVault
@license MIT
@notice Data royalties. The TaskEscrow credits each attributed dataset's share
        of a task fee to the revenue of its current version, in O(1) per
        dataset whatever the number of contributors. Each contributor pulls
        floor(revenue * shares_bps / 10000) - claimed, proving (account, share)
        against the DataRegistry's contributors root of that version.
@dev Claim records are shared by the two leaves of a Merkle pair. The
     registry's tree hashes leaves in pairs (2i, 2i + 1), so every leaf L has
     one first sibling S (proof[0]; none for a single-leaf tree) and a parent
     P = hash_pair(L, S). The vault keeps one word per (dataset, version, P):
     the wei claimed by the smaller of (L, S) in the low 128 bits and by the
     larger in the high 128 bits. Of two contributors paired in the tree the
     first to claim creates the word (a zero-to-non-zero SSTORE, 22,100 gas)
     and the second writes a word that is already non-zero (5,000), so a
     first claim costs ~8,550 gas less on average than with a word per
     account. (Leaves are not indexed, so a word cannot be shared by a
     position a claimant merely names: P binds the pair through the proof.)

     Why a lane is the caller's own: a lane is written only after a full
     proof of a leaf X with first sibling Y, P = hash_pair(X, Y). A later
     caller with leaf L (computed by the vault from msg.sender and the
     share) and first element S lands on the same word only if
     hash_pair(L, S) = P, i.e. {L, S} = {X, Y} (keccak collision resistance),
     and on the same lane only if L is on the same side, i.e. L = X. So a
     non-zero lane proves the leaf: repeat claims pass just proof[0]. A wrong
     share or account gives another leaf, hence another (empty) word, and
     needs a full proof, which fails. Leaves are double-hashed (keccak of 32
     bytes) and inner nodes are keccak of 64 bytes, so no inner node passes
     for a leaf (second preimage) and a single-leaf key (P = L) never meets a
     pair key.

     A lane holds at most its floor share of the version's revenue, and
     credit keeps every revenue below 2**128 (all the ether there is is
     ~2**87 wei), so a lane never carries into its neighbour.

     Roots. The first non-zero credit of a version copies the registry's
     root of that version into the vault (a registry root never changes once
     its version exists), so a first claim reads one vault slot instead of
     calling the registry (~3,000 gas less), and credits after the first one
     cost nothing more (the revenue slot, read anyway, tells which is first).

     Dust. Per (dataset, version), sum_i floor(revenue * s_i / 10000) >=
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
                 The first paying claim of a leaf checks the full Merkle proof
                 against the registry's root of that version (copied at the
                 version's first credit; roots of a version never change
                 there); later claims are bound to the leaf by its lane as
                 argued above.
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
# @dev A lane of a pair word: 128 bits.
_LOW: constant(uint256) = 2**128 - 1


# @dev The DataRegistry whose roots and versions this vault trusts.
registry: public(immutable(IDataRegistry))
# @dev The only account that may `credit` (the TaskEscrow); set once.
escrow: public(address)

# @dev Revenue credited per (dataset, version); below 2**128.
revenue: public(HashMap[uint256, HashMap[uint256, uint256]])
# @dev The registry's contributors root per (dataset, version), copied by the
# version's first non-zero credit (empty before).
contributors_root: public(HashMap[uint256, HashMap[uint256, bytes32]])
# @dev Per (dataset, version, pair key P): the wei claimed by the smaller leaf
# of the pair (low 128 bits) | by the larger leaf (high 128 bits). P is the
# parent hash_pair(leaf, proof[0]), or the leaf itself in a one-leaf tree.
_pairs: HashMap[uint256, HashMap[uint256, HashMap[bytes32, uint256]]]
# @dev Dust swept per (dataset, version) (0 = not swept).
dust_swept: public(HashMap[uint256, HashMap[uint256, uint256]])
# @dev Everything ever credited by the escrow.
total_credited: public(uint256)


@deploy
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
    log IRoyaltyVault.EscrowSet(escrow=escrow)


@external
@payable
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
        revenue: uint256 = self.revenue[dataset_id][version]
        if revenue == 0 and amount != 0:
            # @dev Once per version: revenue never returns to 0.
            self.contributors_root[dataset_id][version] = staticcall registry.contributors_root(dataset_id, version)
        revenue += amount
        # @dev Unreachable with real ether (all of it is ~2**87 wei), but a
        # revenue of 2**128 or more could carry a lane into its neighbour.
        assert revenue <= _LOW, "vault: revenue overflow"
        self.revenue[dataset_id][version] = revenue
        total += amount
        log IRoyaltyVault.RoyaltyCredited(dataset_id=dataset_id, version=version, task_id=task_id, amount=amount)
    assert total == msg.value, "vault: value mismatch"
    self.total_credited += total


@external
@nonreentrant
def claim(dataset_id: uint256, version: uint256, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> uint256:
    """
    @notice Pays the caller what it is owed from one dataset version.
    @param dataset_id The dataset id.
    @param version The contributors version the share belongs to.
    @param shares_bps The caller's share in that version, in basis points.
    @param proof The Merkle proof of (caller, shares_bps) for that version.
           Once the caller has claimed there, its first element alone is
           enough (the rest is ignored); a one-leaf tree has an empty proof.
    @return uint256 The wei paid.
    """
    # @dev `_take` inlined, with no internal call and no copy of `proof`:
    # Vyper copies an array passed to an internal function into a frame
    # ~17 KiB up in memory, ~2,300 gas of expansion per claim (receipts).
    leaf: bytes32 = keccak256(keccak256(abi_encode(msg.sender, shares_bps)))
    key: bytes32 = leaf
    lane: uint256 = 0
    depth: uint256 = len(proof)
    if depth != 0:
        sibling: bytes32 = proof[0]
        if convert(leaf, uint256) < convert(sibling, uint256):
            key = keccak256(concat(leaf, sibling))
        else:
            key = keccak256(concat(sibling, leaf))
            lane = 128
    word: uint256 = self._pairs[dataset_id][version][key]
    already: uint256 = (word >> lane) & _LOW
    entitled: uint256 = self.revenue[dataset_id][version] * min(convert(shares_bps, uint256), BPS) // BPS
    assert entitled > already, "vault: nothing to claim"
    owed: uint256 = entitled - already
    if already == 0:
        # @dev First paying claim of this leaf: the rest of the proof, read
        # straight from calldata, up to the registry's root.
        node: bytes32 = key
        for i: uint256 in range(1, 16):
            if i >= depth:
                break
            sibling: bytes32 = proof[i]
            if convert(node, uint256) < convert(sibling, uint256):
                node = keccak256(concat(node, sibling))
            else:
                node = keccak256(concat(sibling, node))
        root: bytes32 = self.contributors_root[dataset_id][version]
        assert root != empty(bytes32) and node == root, "vault: invalid proof"
    # @dev No carry into the other lane: already + owed = entitled <= revenue < 2**128.
    self._pairs[dataset_id][version][key] = word + (owed << lane)
    log IRoyaltyVault.RoyaltyClaimed(account=msg.sender, dataset_id=dataset_id, version=version, amount=owed)
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
    @param claims (dataset_id, version, shares_bps, proof) entries; as in
           `claim`, proof[0] alone is enough where the caller has claimed.
    @return uint256 The wei paid.
    """
    total: uint256 = 0
    for c: IRoyaltyVault.Claim in claims:
        total += self._take(msg.sender, c.dataset_id, c.version, c.shares_bps, c.proof)
    assert total != 0, "vault: nothing to claim"
    self._send(msg.sender, total)
    return total


@external
@nonreentrant
def claim_for(account: address, claims: DynArray[IRoyaltyVault.Claim, 32]) -> uint256:
    """
    @notice Pays `account` what it is owed across several dataset versions,
            as `claim_many` pays its caller. Anyone may call it and pay the
            gas, so a contributor holding no ether is still paid. The proofs
            bind each share to `account` and the wei goes to `account` alone:
            the caller gains nothing and moves no one else's money.
    @param account The contributor to pay.
    @param claims (dataset_id, version, shares_bps, proof) entries of `account`.
    @return uint256 The wei paid to `account`.
    """
    assert account != empty(address), "vault: zero account"
    # @dev The loop of `claim_many`, not a shared internal: passing `claims`
    # to an internal function copies all 32 entries into its frame, +6,200
    # gas per call (measured on claim_many).
    total: uint256 = 0
    for c: IRoyaltyVault.Claim in claims:
        total += self._take(account, c.dataset_id, c.version, c.shares_bps, c.proof)
    assert total != 0, "vault: nothing to claim"
    self._send(account, total)
    return total


@external
@view
def claimable(dataset_id: uint256, version: uint256, account: address, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> uint256:
    """
    @notice What `account` could claim now from one dataset version (0 if the
            proof does not check out).
    @param dataset_id The dataset id.
    @param version The contributors version.
    @param account The contributor.
    @param shares_bps Its share in basis points.
    @param proof The Merkle proof of (account, shares_bps); its first element
           alone is enough once `account` has claimed there.
    @return uint256 The wei claimable.
    """
    key: bytes32 = empty(bytes32)
    lane: uint256 = 0
    key, lane = self._pair_of(account, shares_bps, proof)
    already: uint256 = (self._pairs[dataset_id][version][key] >> lane) & _LOW
    entitled: uint256 = self._entitled(dataset_id, version, shares_bps)
    if entitled <= already:
        return 0
    if already == 0 and not self._verify(dataset_id, version, account, shares_bps, proof):
        return 0
    return entitled - already


@external
@view
def claimed(dataset_id: uint256, version: uint256, account: address, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> uint256:
    """
    @notice What `account` has been paid from one dataset version.
    @dev Only proof[0] is read: it locates the account's lane. A non-zero
         answer can only come from the account's own proven lane; inputs that
         do not name its leaf read an empty lane and give 0.
    @param dataset_id The dataset id.
    @param version The contributors version.
    @param account The contributor.
    @param shares_bps Its share in basis points.
    @param proof Its Merkle proof (or just the first element).
    @return uint256 The wei claimed.
    """
    key: bytes32 = empty(bytes32)
    lane: uint256 = 0
    key, lane = self._pair_of(account, shares_bps, proof)
    return (self._pairs[dataset_id][version][key] >> lane) & _LOW


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
    log IRoyaltyVault.DustSwept(dataset_id=dataset_id, version=version, recipient=dataset_owner, amount=dust)
    self._send(dataset_owner, dust)
    return dust


@internal
@view
def _entitled(dataset_id: uint256, version: uint256, shares_bps: uint16) -> uint256:
    # shares_bps is capped at 10000 so a forged larger share can never compute
    # more than the whole revenue (the proof check rejects it anyway).
    return self.revenue[dataset_id][version] * min(convert(shares_bps, uint256), BPS) // BPS


@internal
@pure
def _pair_of(account: address, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> (bytes32, uint256):
    """
    @dev The pair word key of (account, shares_bps) and the bit offset of its lane:
         (hash_pair(leaf, proof[0]), 0 or 128 as the leaf is the smaller or
         the larger), or (leaf, 0) for an empty proof.
    """
    leaf: bytes32 = keccak256(keccak256(abi_encode(account, shares_bps)))
    if len(proof) == 0:
        return leaf, 0
    sibling: bytes32 = proof[0]
    if convert(leaf, uint256) < convert(sibling, uint256):
        return keccak256(concat(leaf, sibling)), 0
    return keccak256(concat(sibling, leaf)), 128


@internal
def _take(account: address, dataset_id: uint256, version: uint256, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> uint256:
    """
    @dev Books what `account` is owed from one version and returns it; 0
         without any proof check if nothing is owed. The full proof is checked
         only while the account's lane is empty (its first paying claim).
    """
    key: bytes32 = empty(bytes32)
    lane: uint256 = 0
    key, lane = self._pair_of(account, shares_bps, proof)
    word: uint256 = self._pairs[dataset_id][version][key]
    already: uint256 = (word >> lane) & _LOW
    entitled: uint256 = self._entitled(dataset_id, version, shares_bps)
    if entitled <= already:
        return 0
    owed: uint256 = entitled - already
    if already == 0:
        assert self._verify(dataset_id, version, account, shares_bps, proof), "vault: invalid proof"
    self._pairs[dataset_id][version][key] = word + (owed << lane)
    log IRoyaltyVault.RoyaltyClaimed(account=account, dataset_id=dataset_id, version=version, amount=owed)
    return owed


@internal
@view
def _verify(dataset_id: uint256, version: uint256, account: address, shares_bps: uint16, proof: DynArray[bytes32, 16]) -> bool:
    """
    @dev Checks (account, shares_bps) against the root of that version (the
         vault's copy of the registry's), with the registry's leaf encoding
         keccak256(keccak256(abi_encode(account, shares_bps))).
    """
    root: bytes32 = self.contributors_root[dataset_id][version]
    if root == empty(bytes32):
        return False
    return merkle._verify(proof, root, keccak256(keccak256(abi_encode(account, shares_bps))))


@internal
def _send(to: address, amount: uint256):
    success: bool = raw_call(to, b"", value=amount, revert_on_failure=False)
    assert success, "vault: transfer failed"
