"""RoyaltyVault: crediting by the escrow, Merkle-proved claims on pair-shared lanes, dust sweeping."""

import boa
import pytest

from tests.contracts import helpers as h
from tributa.merkle import contributors_leaf, contributors_proof, sort_contributors

REJECTER = """
# pragma version ~=0.4.3
@external
def claim(vault: address, dataset_id: uint256, version: uint256, bps: uint16, proof: DynArray[bytes32, 16]):
    data: Bytes[1024] = abi_encode(dataset_id, version, bps, proof, method_id=method_id("claim(uint256,uint256,uint16,bytes32[])"))
    raw_call(vault, data)
"""

REENTRANT = """
# pragma version ~=0.4.3
vault: address
data: Bytes[1024]
reentered: public(bool)

@external
def claim(vault: address, dataset_id: uint256, version: uint256, bps: uint16, proof: DynArray[bytes32, 16]):
    self.vault = vault
    self.data = abi_encode(dataset_id, version, bps, proof, method_id=method_id("claim(uint256,uint256,uint16,bytes32[])"))
    raw_call(vault, self.data)

@external
@payable
def __default__():
    # try to claim again while the first claim is paying us
    ok: bool = raw_call(self.vault, self.data, revert_on_failure=False)
    self.reentered = ok
"""


def credit(w, task_id, dataset_ids, amounts, value=None):
    escrow = w.escrow.address
    boa.env.set_balance(escrow, boa.env.get_balance(escrow) + sum(amounts) + 10**18)
    with boa.env.prank(escrow):
        w.vault.credit(task_id, dataset_ids, amounts, value=sum(amounts) if value is None else value)


def claim_as(w, account, dataset, version=1, index=None, bps=None, proof=None):
    did, c, s = dataset
    i = [x.lower() for x in c].index(str(account).lower()) if index is None else index
    with boa.env.prank(account):
        return w.vault.claim(
            did, version, s[i] if bps is None else bps, contributors_proof(c, s, i) if proof is None else proof
        )


def claimed_of(w, account, dataset, version=1):
    did, c, s = dataset
    i = [x.lower() for x in c].index(str(account).lower())
    return w.vault.claimed(did, version, account, s[i], contributors_proof(c, s, i)[:1])


def first_element(dataset, i):
    _, c, s = dataset
    return contributors_proof(c, s, i)[:1]


# ------------------------------------------------------------------ set up


def test_constructor__zero_registry__reverts():
    with boa.reverts("vault: zero registry"):
        h.partial("RoyaltyVault").deploy(h.ZERO_ADDRESS)


def test_constructor__ether_sent_at_deploy__reverts_so_none_is_stranded(w):
    # The vault pays out only what the escrow credits: ether arriving any other way would be
    # owed to nobody, so the constructor takes none.
    boa.env.set_balance(w.owner, 10**18)
    with boa.env.prank(w.owner), boa.reverts():
        h.partial("RoyaltyVault").deploy(w.registry.address, value=1)


def test_set_escrow__owner_once__sets_and_emits(w):
    with boa.env.prank(w.owner):
        v = h.partial("RoyaltyVault").deploy(w.registry.address)
        with boa.reverts("vault: zero escrow"):
            v.set_escrow(h.ZERO_ADDRESS)
        v.set_escrow(w.stranger)
        (log,) = h.events(v, "EscrowSet")
        assert log.escrow == w.stranger and v.escrow() == w.stranger
        with boa.reverts("vault: escrow already set"):
            v.set_escrow(w.owner)
    assert v.registry() == w.registry.address


def test_set_escrow__by_stranger__reverts(w):
    with boa.env.prank(w.owner):
        v = h.partial("RoyaltyVault").deploy(w.registry.address)
    with boa.env.prank(w.stranger), boa.reverts("ownable: caller is not the owner"):
        v.set_escrow(w.stranger)


# ------------------------------------------------------------------ credit


def test_credit__by_escrow__adds_revenue_per_current_version_and_emits(w):
    credit(w, 7, [1, 2, 1], [100, 200, 50])
    logs = h.events(w.vault, "RoyaltyCredited")
    assert [(e.dataset_id, e.version, e.task_id, e.amount) for e in logs] == [
        (1, 1, 7, 100),
        (2, 1, 7, 200),
        (1, 1, 7, 50),
    ]
    assert w.vault.revenue(1, 1) == 150 and w.vault.revenue(2, 1) == 200
    assert w.vault.total_credited() == 350
    assert boa.env.get_balance(w.vault.address) == 350


def test_credit__first_non_zero_credit_of_a_version__copies_the_registry_root(w):
    did = w.dataset_ten[0]
    credit(w, 1, [did], [0])
    assert w.vault.contributors_root(did, 1) == b"\x00" * 32
    credit(w, 2, [did], [5])
    assert w.vault.contributors_root(did, 1) == w.registry.contributors_root(did, 1) != b"\x00" * 32
    c, s = sort_contributors([(boa.env.generate_address(), 10_000)])
    with boa.env.prank(w.data_owner):
        w.registry.update_contributors(did, c, s)
    assert w.vault.contributors_root(did, 2) == b"\x00" * 32
    credit(w, 3, [did], [7])
    assert w.vault.contributors_root(did, 2) == w.registry.contributors_root(did, 2) == contributors_leaf(c[0], 10_000)
    assert w.vault.contributors_root(did, 1) == w.registry.contributors_root(did, 1)


def test_credit__revenue_reaching_2_128__reverts_revenue_overflow(w):
    did = w.dataset_ten[0]
    credit(w, 1, [did], [2**128 - 2])
    credit(w, 2, [did], [1])
    with boa.reverts("vault: revenue overflow"):
        credit(w, 3, [did], [1])
    assert w.vault.revenue(did, 1) == 2**128 - 1


def test_credit__after_contributors_update__goes_to_new_version(w):
    credit(w, 1, [1], [1000])
    c, s = sort_contributors([(boa.env.generate_address(), 10_000)])
    with boa.env.prank(w.data_owner):
        w.registry.update_contributors(1, c, s)
    credit(w, 2, [1], [500])
    assert (w.vault.revenue(1, 1), w.vault.revenue(1, 2)) == (1000, 500)


def test_credit__by_stranger__reverts(w):
    with boa.env.prank(w.stranger), boa.reverts("vault: caller is not the escrow"):
        w.vault.credit(1, [1], [1], value=1)


def test_credit__length_mismatch__reverts(w):
    with boa.reverts("vault: length mismatch"):
        credit(w, 1, [1, 2], [1])


def test_credit__unknown_dataset__reverts(w):
    with boa.reverts("vault: unknown dataset"):
        credit(w, 1, [1, 3], [1, 1])


def test_credit__value_not_sum_of_amounts__reverts(w):
    with boa.reverts("vault: value mismatch"):
        credit(w, 1, [1], [10], value=11)


# ------------------------------------------------------------------- claim


def test_claim__contributor_with_proof__is_paid_its_floor_share(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**18 + 7])
    before = boa.env.get_balance(c[3])
    paid = claim_as(w, c[3], w.dataset_ten)
    expected = (10**18 + 7) * s[3] // 10_000
    assert paid == expected
    (log,) = h.events(w.vault, "RoyaltyClaimed")
    assert (log.account, log.dataset_id, log.version, log.amount) == (c[3], did, 1, expected)
    assert boa.env.get_balance(c[3]) == before + expected
    assert claimed_of(w, c[3], w.dataset_ten) == expected
    assert boa.env.get_balance(w.vault.address) == 10**18 + 7 - expected


def test_claim__twice_without_new_revenue__reverts_nothing_to_claim(w):
    did, c, _s = w.dataset_small
    credit(w, 1, [did], [9_999])
    claim_as(w, c[0], w.dataset_small)
    with boa.reverts("vault: nothing to claim"):
        claim_as(w, c[0], w.dataset_small)


def test_claim__after_more_revenue__pays_only_the_increase(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [10_000])
    first = claim_as(w, c[1], w.dataset_small)
    credit(w, 2, [did], [20_000])
    second = claim_as(w, c[1], w.dataset_small)
    assert first == 10_000 * s[1] // 10_000
    assert first + second == 30_000 * s[1] // 10_000


def test_claim__repeat_after_a_paying_claim__pays_with_only_the_first_proof_element(w):
    did, c, s = w.dataset_ten
    assert claimed_of(w, c[2], w.dataset_ten) == 0
    credit(w, 1, [did], [10**18])
    first = claim_as(w, c[2], w.dataset_ten)
    credit(w, 2, [did], [3 * 10**18 + 11])
    short = first_element(w.dataset_ten, 2)
    assert w.vault.claimable(did, 1, c[2], s[2], short) == (4 * 10**18 + 11) * s[2] // 10_000 - first
    second = claim_as(w, c[2], w.dataset_ten, proof=short)
    assert first + second == claimed_of(w, c[2], w.dataset_ten) == (4 * 10**18 + 11) * s[2] // 10_000


def test_claim__repeat_with_the_full_proof__pays_the_same(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**18])
    first = claim_as(w, c[7], w.dataset_ten)
    credit(w, 2, [did], [10**18])
    assert first + claim_as(w, c[7], w.dataset_ten) == 2 * 10**18 * s[7] // 10_000


def test_claim__both_leaves_of_a_pair__keep_separate_lanes(w):
    did, c, s = w.dataset_ten  # leaves 4 and 5 are hashed together
    assert contributors_proof(c, s, 4)[0] == contributors_leaf(c[5], s[5])
    credit(w, 1, [did], [10**18 + 3])
    a = claim_as(w, c[4], w.dataset_ten)
    assert claimed_of(w, c[5], w.dataset_ten) == 0
    b = claim_as(w, c[5], w.dataset_ten)
    credit(w, 2, [did], [2 * 10**18])
    a += claim_as(w, c[4], w.dataset_ten, proof=first_element(w.dataset_ten, 4))
    assert claimed_of(w, c[5], w.dataset_ten) == b == (10**18 + 3) * s[5] // 10_000
    b += claim_as(w, c[5], w.dataset_ten, proof=first_element(w.dataset_ten, 5))
    assert (a, b) == ((3 * 10**18 + 3) * s[4] // 10_000, (3 * 10**18 + 3) * s[5] // 10_000)
    assert (claimed_of(w, c[4], w.dataset_ten), claimed_of(w, c[5], w.dataset_ten)) == (a, b)


def test_claim__pair_sibling_with_only_the_first_element__reverts_before_its_own_first_claim(w):
    # c[5]'s first element is c[4]'s leaf: the same pair word as c[4]'s, but the other lane,
    # which is empty until c[5] proves its own leaf.
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**18])
    claim_as(w, c[4], w.dataset_ten)
    assert w.vault.claimable(did, 1, c[5], s[5], first_element(w.dataset_ten, 5)) == 0
    with boa.reverts("vault: invalid proof"):
        claim_as(w, c[5], w.dataset_ten, proof=first_element(w.dataset_ten, 5))


def test_claim__stranger_naming_a_claimed_lane__reverts_invalid_proof(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**18])
    claim_as(w, c[2], w.dataset_ten)
    credit(w, 2, [did], [10**18])
    short = first_element(w.dataset_ten, 2)
    assert w.vault.claimable(did, 1, w.stranger, s[2], short) == 0
    assert w.vault.claimed(did, 1, w.stranger, s[2], short) == 0
    with boa.env.prank(w.stranger), boa.reverts("vault: invalid proof"):
        w.vault.claim(did, 1, s[2], short)
    with boa.env.prank(c[3]), boa.reverts("vault: invalid proof"):  # a fellow contributor
        w.vault.claim(did, 1, s[2], short)


def test_claim__repeat_naming_another_share__reverts_invalid_proof(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**18])
    claim_as(w, c[2], w.dataset_ten)
    credit(w, 2, [did], [10**18])
    short = first_element(w.dataset_ten, 2)
    assert w.vault.claimable(did, 1, c[2], s[2] + 1, short) == 0
    with boa.reverts("vault: invalid proof"):
        claim_as(w, c[2], w.dataset_ten, bps=s[2] + 1, proof=short)
    with boa.reverts("vault: invalid proof"):
        claim_as(w, c[2], w.dataset_ten, bps=10_000, proof=short)


def test_claim__first_element_only_before_a_paying_claim__reverts_invalid_proof(w):
    did, c, _s = w.dataset_ten
    credit(w, 1, [did], [10**18])
    with boa.reverts("vault: invalid proof"):
        claim_as(w, c[2], w.dataset_ten, proof=first_element(w.dataset_ten, 2))
    with boa.reverts("vault: invalid proof"):
        claim_as(w, c[2], w.dataset_ten, proof=[])
    assert claimed_of(w, c[2], w.dataset_ten) == 0


def test_claim__promoted_leaf_of_an_odd_tree__repeats_with_the_first_element(w):
    did, c, s = w.dataset_small  # 3 leaves: the last is promoted, its first element is a node
    credit(w, 1, [did], [9_000])
    first = claim_as(w, c[2], w.dataset_small)
    credit(w, 2, [did], [1_000])
    second = claim_as(w, c[2], w.dataset_small, proof=first_element(w.dataset_small, 2))
    assert first + second == claimed_of(w, c[2], w.dataset_small) == 10_000 * s[2] // 10_000
    assert claim_as(w, c[0], w.dataset_small) == 10_000 * s[0] // 10_000


def test_claim__single_leaf_dataset__repeats_with_an_empty_proof(w):
    me = h.funded_address("solo-claimer")
    with boa.env.prank(w.stranger):
        did = h.commit_and_register(w.registry, h.digest("solo-repeat"), h.digest("m"), [me], [10_000], "")
    credit(w, 1, [did], [41])
    with boa.env.prank(me):
        assert w.vault.claim(did, 1, 10_000, []) == 41
    credit(w, 2, [did], [1])
    with boa.env.prank(w.stranger), boa.reverts("vault: invalid proof"):
        w.vault.claim(did, 1, 10_000, [])
    with boa.env.prank(me):
        assert w.vault.claim(did, 1, 10_000, []) == 1
    assert w.vault.claimed(did, 1, me, 10_000, []) == 42


def test_claim_many__after_a_single_claim__takes_only_the_first_proof_element(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**18])
    first = claim_as(w, c[5], w.dataset_ten)
    credit(w, 2, [did], [10**18])
    with boa.env.prank(c[5]):
        second = w.vault.claim_many([(did, 1, s[5], first_element(w.dataset_ten, 5))])
    assert first + second == claimed_of(w, c[5], w.dataset_ten) == 2 * 10**18 * s[5] // 10_000


def test_claim_many__stranger_naming_a_claimed_lane__reverts_invalid_proof(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**18])
    claim_as(w, c[5], w.dataset_ten)
    credit(w, 2, [did], [10**18])
    with boa.env.prank(w.stranger), boa.reverts("vault: invalid proof"):
        w.vault.claim_many([(did, 1, s[5], first_element(w.dataset_ten, 5))])


def test_claim__no_revenue__reverts_before_checking_proof(w):
    _did, c, _s = w.dataset_small
    with boa.reverts("vault: nothing to claim"):
        claim_as(w, c[0], w.dataset_small, proof=[])


def test_claim__invalid_proof__reverts(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**6])
    with boa.reverts("vault: invalid proof"):
        claim_as(w, c[0], w.dataset_ten, proof=contributors_proof(c, s, 1))


def test_claim__inflated_share__reverts_invalid_proof(w):
    did, c, _s = w.dataset_ten
    credit(w, 1, [did], [10**6])
    with boa.reverts("vault: invalid proof"):
        claim_as(w, c[0], w.dataset_ten, bps=10_000)


def test_claim__stranger_with_someone_elses_proof__reverts(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**6])
    with boa.env.prank(w.stranger), boa.reverts("vault: invalid proof"):
        w.vault.claim(did, 1, s[0], contributors_proof(c, s, 0))


def test_claim__old_version_after_update__still_pays_old_contributors(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [3_000])
    new_c, new_s = sort_contributors([(boa.env.generate_address(), 10_000)])
    with boa.env.prank(w.data_owner):
        w.registry.update_contributors(did, new_c, new_s)
    credit(w, 2, [did], [5_000])
    assert claim_as(w, c[2], w.dataset_small, version=1) == 3_000 * s[2] // 10_000
    assert claim_as(w, new_c[0], (did, new_c, new_s), version=2) == 5_000
    with boa.reverts("vault: invalid proof"):  # old contributor, new version
        claim_as(w, c[2], w.dataset_small, version=2)


def test_claim__recipient_rejects_eth__reverts_transfer_failed(w):
    rejecter = boa.loads(REJECTER)
    c, s = sort_contributors([(rejecter.address, 6000), (boa.env.generate_address(), 4000)])
    with boa.env.prank(w.stranger):
        did = h.commit_and_register(w.registry, h.digest("rej"), h.digest("m"), c, s, "")
    credit(w, 1, [did], [1000])
    i = c.index(str(rejecter.address))
    with boa.reverts("vault: transfer failed"):
        rejecter.claim(w.vault.address, did, 1, s[i], contributors_proof(c, s, i))


def test_claim__reentrant_recipient__cannot_claim_twice(w):
    attacker = boa.loads(REENTRANT)
    c, s = sort_contributors([(attacker.address, 5000), (boa.env.generate_address(), 5000)])
    with boa.env.prank(w.stranger):
        did = h.commit_and_register(w.registry, h.digest("re"), h.digest("m"), c, s, "")
    credit(w, 1, [did], [1000])
    i = c.index(str(attacker.address))
    attacker.claim(w.vault.address, did, 1, s[i], contributors_proof(c, s, i))
    assert attacker.reentered() is False
    assert boa.env.get_balance(attacker.address) == 500
    assert w.vault.claimed(did, 1, attacker.address, s[i], contributors_proof(c, s, i)) == 500


def test_claimable__reports_owed_or_zero_for_bad_proof(w):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [10**9])
    proof = contributors_proof(c, s, 5)
    assert w.vault.claimable(did, 1, c[5], s[5], proof) == 10**9 * s[5] // 10_000
    assert w.vault.claimable(did, 1, c[5], s[5] + 1, proof) == 0
    assert w.vault.claimable(did, 1, c[4], s[5], proof) == 0
    claim_as(w, c[5], w.dataset_ten)
    assert w.vault.claimable(did, 1, c[5], s[5], proof) == 0


# -------------------------------------------------------------- claim_many


def test_claim_many__across_datasets_and_versions__pays_once(w):
    (d1, _c1, _s1) = w.dataset_small
    # make one account a contributor of both datasets and of two versions of d1
    me = h.funded_address("multi")
    other = boa.env.generate_address()
    v1 = sort_contributors([(me, 7000), (other, 3000)])
    with boa.env.prank(w.data_owner):
        w.registry.update_contributors(d1, *v1)  # version 2
    credit(w, 1, [d1], [1000])  # -> d1 v2
    v2 = sort_contributors([(me, 2500), (other, 7500)])
    with boa.env.prank(w.data_owner):
        w.registry.update_contributors(d1, *v2)  # version 3
    credit(w, 2, [d1], [2000])  # -> d1 v3
    with boa.env.prank(w.stranger):
        d3 = h.commit_and_register(w.registry, h.digest("solo"), h.digest("m"), [me], [10_000], "")
    credit(w, 3, [d3], [333])

    def entry(did, version, lists):
        c, s = lists
        i = c.index(me)
        return (did, version, s[i], contributors_proof(c, s, i))

    before = boa.env.get_balance(me)
    with boa.env.prank(me):
        paid = w.vault.claim_many(
            [entry(d1, 2, v1), entry(d1, 3, v2), entry(d3, 1, ([me], [10_000])), entry(d1, 2, v1)]
        )
    logs = h.events(w.vault, "RoyaltyClaimed")
    assert paid == 700 + 500 + 333
    assert boa.env.get_balance(me) == before + paid
    assert [(e.dataset_id, e.version, e.amount) for e in logs] == [(d1, 2, 700), (d1, 3, 500), (d3, 1, 333)]
    assert boa.env.get_balance(w.vault.address) == w.vault.total_credited() - paid


def test_claim_many__nothing_owed__reverts(w):
    did, c, s = w.dataset_small
    with boa.env.prank(c[0]), boa.reverts("vault: nothing to claim"):
        w.vault.claim_many([(did, 1, s[0], contributors_proof(c, s, 0))])
    with boa.env.prank(c[0]), boa.reverts("vault: nothing to claim"):
        w.vault.claim_many([])


def test_claim_many__one_invalid_proof__reverts_all(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [1000])
    with boa.env.prank(c[0]), boa.reverts("vault: invalid proof"):
        w.vault.claim_many([(did, 1, s[0], contributors_proof(c, s, 1)), (did, 1, s[0], contributors_proof(c, s, 0))])


# -------------------------------------------------------------- sweep_dust


def _close_version(w, did):
    c, s = sort_contributors([(boa.env.generate_address(), 10_000)])
    with boa.env.prank(w.data_owner):
        w.registry.update_contributors(did, c, s)


def test_sweep_dust__closed_version__pays_owner_exact_dust_and_leaves_floor_shares(w):
    did, c, s = w.dataset_small  # 3333 / 3333 / 3334
    revenue = 10_001
    credit(w, 1, [did], [revenue])
    first = claim_as(w, c[0], w.dataset_small)
    _close_version(w, did)
    floors = sum(revenue * x // 10_000 for x in s)
    before = boa.env.get_balance(w.data_owner)
    with boa.env.prank(w.data_owner):
        swept = w.vault.sweep_dust(did, 1, c, s)
    (log,) = h.events(w.vault, "DustSwept")
    assert swept == revenue - floors and 0 < swept <= len(c) - 1
    assert (log.dataset_id, log.version, log.recipient, log.amount) == (did, 1, w.data_owner, swept)
    assert boa.env.get_balance(w.data_owner) == before + swept
    assert w.vault.dust_swept(did, 1) == swept
    rest = claim_as(w, c[1], w.dataset_small) + claim_as(w, c[2], w.dataset_small)
    assert first + rest + swept == revenue
    assert boa.env.get_balance(w.vault.address) == 0
    assert w.vault.total_credited() == revenue


def test_sweep_dust__by_vault_owner__pays_the_dataset_owner(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [1])
    _close_version(w, did)
    before = boa.env.get_balance(w.data_owner)
    with boa.env.prank(w.owner):
        assert w.vault.sweep_dust(did, 1, c, s) == 1
    assert boa.env.get_balance(w.data_owner) == before + 1


def test_sweep_dust__twice__reverts(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [1])
    _close_version(w, did)
    with boa.env.prank(w.data_owner):
        w.vault.sweep_dust(did, 1, c, s)
        with boa.reverts("vault: dust already swept"):
            w.vault.sweep_dust(did, 1, c, s)


def test_sweep_dust__open_version__reverts(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [1])
    with boa.env.prank(w.data_owner), boa.reverts("vault: version still open"):
        w.vault.sweep_dust(did, 1, c, s)


def test_sweep_dust__stranger__reverts(w):
    did, c, s = w.dataset_small
    _close_version(w, did)
    with boa.env.prank(w.stranger), boa.reverts("vault: caller is not owner or dataset owner"):
        w.vault.sweep_dust(did, 1, c, s)


def test_sweep_dust__unknown_dataset__reverts(w):
    with boa.env.prank(w.owner), boa.reverts("vault: unknown dataset"):
        w.vault.sweep_dust(42, 1, [w.stranger], [10_000])


def test_sweep_dust__list_not_matching_root__reverts(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [1])
    _close_version(w, did)
    forged = [s[0] + 1, s[1] - 1, s[2]]
    with boa.env.prank(w.data_owner), boa.reverts("vault: contributors do not match root"):
        w.vault.sweep_dust(did, 1, c, forged)


def test_sweep_dust__no_dust__reverts(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [10_000])  # divides exactly
    _close_version(w, did)
    with boa.env.prank(w.data_owner), boa.reverts("vault: no dust"):
        w.vault.sweep_dust(did, 1, c, s)


@pytest.mark.parametrize("revenue", [1, 9, 10_000 * 7 + 3, 10**18 + 12345])
def test_dust__any_revenue__is_below_contributor_count(w, revenue):
    did, c, s = w.dataset_ten
    credit(w, 1, [did], [revenue])
    paid = sum(claim_as(w, a, w.dataset_ten) for a in c if revenue * s[c.index(a)] // 10_000 > 0)
    assert 0 <= revenue - paid <= len(c) - 1
    assert boa.env.get_balance(w.vault.address) == revenue - paid


# -------------------------------------------------------------- claim_for


def test_claim_for__a_relayer_pays_the_gas__the_contributor_with_no_ether_is_paid(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [9000])
    contributor = c[1]
    boa.env.set_balance(contributor, 0)
    relayer_before = boa.env.get_balance(w.stranger)
    with boa.env.prank(w.stranger):
        paid = w.vault.claim_for(contributor, [(did, 1, s[1], contributors_proof(c, s, 1))])
    assert paid == 9000 * s[1] // 10_000
    assert boa.env.get_balance(contributor) == paid
    assert boa.env.get_balance(w.stranger) == relayer_before
    [event] = h.events(w.vault, "RoyaltyClaimed")
    assert (event.account, event.amount) == (contributor, paid)
    with boa.env.prank(contributor), boa.reverts("vault: nothing to claim"):
        claim_as(w, contributor, w.dataset_small)  # paid once, not twice


def test_claim_for__naming_yourself_with_someone_elses_share__reverts_and_moves_nothing(w):
    did, c, s = w.dataset_small
    credit(w, 1, [did], [9000])
    vault_before = boa.env.get_balance(w.vault.address)
    with boa.env.prank(w.stranger), boa.reverts("vault: invalid proof"):
        w.vault.claim_for(w.stranger, [(did, 1, s[1], contributors_proof(c, s, 1))])
    with boa.env.prank(w.stranger), boa.reverts("vault: invalid proof"):
        w.vault.claim_for(c[0], [(did, 1, s[1], contributors_proof(c, s, 1))])  # c[1]'s share, c[0]'s name
    with boa.env.prank(w.stranger), boa.reverts("vault: zero account"):
        w.vault.claim_for(h.ZERO_ADDRESS, [(did, 1, s[1], contributors_proof(c, s, 1))])
    assert boa.env.get_balance(w.vault.address) == vault_before


def test_claim_for__a_contributor_contract_reentering_on_receipt__is_locked_out(w):
    attacker = boa.loads(REENTRANT_FOR)
    with boa.env.prank(w.stranger):
        first = h.commit_and_register(
            w.registry, h.digest("reenter-for-1"), h.digest("m"), [attacker.address], [10_000], ""
        )
        second = h.commit_and_register(
            w.registry, h.digest("reenter-for-2"), h.digest("m"), [attacker.address], [10_000], ""
        )
    credit(w, 1, [first, second], [500, 700])
    # On receipt of the first payment it claims the second, which it is owed: only the lock stops it.
    attacker.arm(w.vault.address, second)
    with boa.env.prank(w.stranger):
        assert w.vault.claim_for(attacker.address, [(first, 1, 10_000, [])]) == 500
    assert attacker.reentered() is False
    assert boa.env.get_balance(attacker.address) == 500
    with boa.env.prank(w.stranger):
        assert w.vault.claim_for(attacker.address, [(second, 1, 10_000, [])]) == 700  # still owed, paid once


REENTRANT_FOR = """
# pragma version ~=0.4.3
struct Claim:
    dataset_id: uint256
    version: uint256
    shares_bps: uint16
    proof: DynArray[bytes32, 16]

vault: address
data: Bytes[1024]
reentered: public(bool)

@external
def arm(vault: address, dataset_id: uint256):
    self.vault = vault
    entries: DynArray[Claim, 1] = [Claim(dataset_id=dataset_id, version=1, shares_bps=10000, proof=[])]
    self.data = abi_encode(self, entries, method_id=method_id("claim_for(address,(uint256,uint256,uint16,bytes32[])[])"))

@external
@payable
def __default__():
    if self.vault != empty(address) and msg.sender == self.vault:
        self.vault = empty(address)  # once
        self.reentered = raw_call(msg.sender, self.data, revert_on_failure=False)
"""
