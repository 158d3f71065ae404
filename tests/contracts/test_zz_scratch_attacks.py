import random
import boa
import pytest
from eth_utils import keccak
from tests.contracts import helpers as h
from tributa.merkle import contributors_proof, contributors_leaf, hash_pair, sort_contributors, _levels

BPS = 10_000

def setup():
    s = h.deploy_system()
    owner = h.funded_address("dsowner")
    return s, owner

def credit(s, did, amt):
    esc = s.escrow.address
    boa.env.set_balance(esc, boa.env.get_balance(esc) + amt + 1)
    with boa.env.prank(esc):
        s.vault.credit(1, [did], [amt], value=amt)

def rand_shares(rng, n):
    cuts = sorted(rng.sample(range(1, BPS), n - 1)) if n > 1 else []
    b = [0] + cuts + [BPS]
    return [b[i+1]-b[i] for i in range(n)]

def try_claim(s, who, did, v, bps, proof, many=False):
    bal = boa.env.get_balance(who)
    try:
        with boa.env.prank(who):
            if many:
                s.vault.claim_many([(did, v, bps, proof)] * (2 if many == 2 else 1))
            else:
                s.vault.claim(did, v, bps, proof)
    except Exception:
        return None
    return boa.env.get_balance(who) - bal

@pytest.mark.parametrize("seed", range(12))
def test_random_trees_adversarial(seed):
    rng = random.Random(seed)
    s, owner = setup()
    vault = s.vault
    n = [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 33][seed]
    shares = rand_shares(rng, n)
    did, c, sh = h.register_dataset(s.registry, owner, n, label=f"r{seed}", shares=shares)
    levels = _levels(c, sh)
    all_nodes = [x for lvl in levels for x in lvl]
    outsider = h.funded_address("outsider")
    paid = {a: 0 for a in c}
    rev = 0
    for rnd in range(4):
        amt = rng.randrange(1, 10**18)
        credit(s, did, amt); rev += amt
        order = list(range(n)); rng.shuffle(order)
        for i in order:
            a, b = c[i], sh[i]
            full = contributors_proof(c, sh, i)
            # attacks before the honest claim
            for fake in [[], full[:1], [keccak(b"x")], [contributors_leaf(a, b)]] + [[x] + full[1:] for x in rng.sample(all_nodes, min(4, len(all_nodes)))]:
                if fake == full or (paid[a] and fake[:1] == full[:1]):
                    continue
                r = try_claim(s, a, did, 1, b, fake, many=rng.choice([False, True, 2]))
                assert r is None, (n, i, fake, r)
            for wrong_bps in [x for x in (b + 1, BPS, 65535) if x != b]:
                assert try_claim(s, a, did, 1, wrong_bps, full) is None
                assert try_claim(s, a, did, 1, wrong_bps, full[:1]) is None
            for p in [full, full[:1], []]:
                assert try_claim(s, outsider, did, 1, b, p) is None
                assert try_claim(s, outsider, did, 1, BPS, p) is None or False
            if rng.random() < 0.3:
                continue  # skip this round
            proof = full[:1] if paid[a] and rng.random() < 0.7 else full
            r = try_claim(s, a, did, 1, b, proof, many=rng.choice([False, True, 2]))
            exp = rev * b // BPS - paid[a]
            if exp == 0:
                assert r is None
            else:
                assert r == exp, (r, exp)
                paid[a] += r
            assert vault.claimed(did, 1, a, b, full[:1]) == paid[a]
            assert vault.claimable(did, 1, a, b, full) == 0
    # close version, sweep, then everyone claims the rest
    c2, s2 = sort_contributors([(boa.env.generate_address(), BPS)])
    with boa.env.prank(owner):
        s.registry.update_contributors(did, c2, s2)
        floors = sum(rev * b // BPS for b in sh)
        if rev - floors:
            assert vault.sweep_dust(did, 1, c, sh) == rev - floors
    for i, a in enumerate(c):
        full = contributors_proof(c, sh, i)
        r = try_claim(s, a, did, 1, sh[i], full)
        exp = rev * sh[i] // BPS - paid[a]
        assert (r or 0) == exp
        paid[a] += r or 0
    assert sum(paid.values()) + (rev - floors) == rev
    assert boa.env.get_balance(vault.address) == 0

def test_cross_version_and_promoted_leaf():
    s, owner = setup()
    did, c, sh = h.register_dataset(s.registry, owner, 3, label="cv")
    credit(s, did, 10**18)
    # v2 with same contributors but different shares
    with boa.env.prank(owner):
        s.registry.update_contributors(did, c, [5000, 3000, 2000])
    credit(s, did, 10**18)
    # promoted leaf c[2] (sibling is internal node H(A,B)); its key is the root
    p = contributors_proof(c, sh, 2)
    assert len(p) == 1
    with boa.env.prank(c[2]):
        got = s.vault.claim(did, 1, sh[2], p)
    # v1 proof in v2 -> fail
    with boa.env.prank(c[0]), boa.reverts():
        s.vault.claim(did, 2, sh[0], contributors_proof(c, sh, 0))
    # v1 lane used with v2 shares short proof
    with boa.env.prank(c[2]), boa.reverts():
        s.vault.claim(did, 2, sh[2], p)
    with boa.env.prank(c[2]):
        s.vault.claim(did, 2, 2000, contributors_proof(c, [5000, 3000, 2000], 2))
