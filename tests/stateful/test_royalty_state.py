"""RoyaltyVault state machine: random credits, contributor updates (new versions),
claims, multi-claims and dust sweeps, against a Python model.

Invariants after every step, per (dataset, version) with revenue R and shares s_i:
  * claimed_i + claimable_i == floor(R * s_i / 10000) for every contributor;
  * R - sum_i floor(R * s_i / 10000) (the dust) is at most n - 1 wei, and a sweep
    takes exactly that dust, only once the version is closed;
and globally: vault balance == total_credited - everything paid (claims and
sweeps), total_credited being every credit. Claims after an account's first
paying claim in a version send either the full proof or just its first element
(which locates the account's lane of its Merkle pair's word); claims that name
someone else's lane revert and change nothing. At the end everyone claims, every
version is closed and swept, and the vault holds zero wei.
"""

from __future__ import annotations

import random
from collections import defaultdict

import boa
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.contracts import helpers as h
from tributa.merkle import contributors_proof, sort_contributors

BPS = 10_000
N_DATASETS = 2
_WORLD: list = []


@pytest.fixture(scope="module", autouse=True)
def _deployed_world():
    s = h.deploy_system()
    owner = h.funded_address("rm-data-owner")
    pool = [boa.env.generate_address() for _ in range(6)]
    lists = []
    for d in range(N_DATASETS):
        c, sh = _random_list(pool, random.Random(d))
        with boa.env.prank(owner):
            h.commit_and_register(s.registry, h.digest(f"rm-{d}"), h.digest("m"), c, sh, "")
        lists.append((c, sh))
    _WORLD[:] = [(s, owner, pool, lists)]
    yield
    _WORLD.clear()


def _random_list(pool, rnd: random.Random, n: int | None = None):
    n = n or rnd.randint(1, len(pool))
    members = rnd.sample(pool, n)
    cuts = sorted(rnd.sample(range(1, BPS), n - 1))
    shares = [b - a for a, b in zip([0, *cuts], [*cuts, BPS], strict=False)]
    return sort_contributors(zip(members, shares, strict=False))


class RoyaltyMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.sys, self.data_owner, self.pool, lists = _WORLD[0]
        self.vault = self.sys.vault
        self.escrow = str(self.sys.escrow.address)
        # (dataset_id, version) -> (contributors, shares)
        self.versions = {(d + 1, 1): lists[d] for d in range(N_DATASETS)}
        self.current = {d + 1: 1 for d in range(N_DATASETS)}
        self.revenue: dict = defaultdict(int)
        self.claimed: dict = defaultdict(int)  # (d, v, account) -> wei
        self.swept: dict = defaultdict(int)
        self.credited = 0
        self.paid = 0
        self.touched: set = set()  # versions changed by the last step

    def teardown(self):
        try:
            self._drain()
        finally:
            self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------ helpers

    def _floor(self, key, i):
        return self.revenue[key] * self.versions[key][1][i] // BPS

    def _owed(self, key, account):
        c, _s = self.versions[key]
        return self._floor(key, c.index(account)) - self.claimed[(*key, account)]

    def _entry(self, key, account, short=False):
        c, s = self.versions[key]
        i = c.index(account)
        proof = contributors_proof(c, s, i)
        if short and self.claimed[(*key, account)]:
            proof = proof[:1]  # the lane is non-zero: proof[0] alone locates it
        return (key[0], key[1], s[i], proof)

    def _dust(self, key):
        c, _ = self.versions[key]
        return self.revenue[key] - sum(self._floor(key, i) for i in range(len(c)))

    def _credit(self, dataset_ids, amounts):
        boa.env.set_balance(self.escrow, boa.env.get_balance(self.escrow) + sum(amounts))
        with boa.env.prank(self.escrow):
            self.vault.credit(1, dataset_ids, amounts, value=sum(amounts))
        for d, a in zip(dataset_ids, amounts, strict=False):
            self.revenue[(d, self.current[d])] += a
            self.touched.add((d, self.current[d]))
        self.credited += sum(amounts)

    def _memberships(self):
        return sorted((key, a) for key, (c, _) in self.versions.items() for a in c)

    # -------------------------------------------------------------- rules

    @rule(d=st.integers(1, N_DATASETS), amount=st.one_of(st.integers(0, 50), st.integers(0, 10**18)))
    def credit(self, d, amount):
        self._credit([d], [amount])

    @rule(a=st.integers(0, 10**12), b=st.integers(0, 10**12))
    def credit_both(self, a, b):
        self._credit([1, 2, 1], [a, b, 7])

    @rule(d=st.integers(1, N_DATASETS), seed=st.integers(0, 2**32))
    def update_contributors(self, d, seed):
        c, s = _random_list(self.pool, random.Random(seed))
        with boa.env.prank(self.data_owner):
            self.sys.registry.update_contributors(d, c, s)
        self.current[d] += 1
        self.versions[(d, self.current[d])] = (c, s)

    @rule(data=st.data(), short=st.booleans())
    def claim(self, data, short):
        key, account = data.draw(st.sampled_from(self._memberships()), label="membership")
        owed = self._owed(key, account)
        before = boa.env.get_balance(account)
        entry = self._entry(key, account, short)
        with boa.env.prank(account):
            if owed == 0:
                with boa.reverts("vault: nothing to claim"):
                    self.vault.claim(*entry)
                return
            assert self.vault.claim(*entry) == owed
        assert boa.env.get_balance(account) == before + owed
        self.claimed[(*key, account)] += owed
        self.paid += owed
        self.touched.add(key)

    @rule(data=st.data())
    def claim_someone_elses_lane(self, data):
        claimed = sorted(k for k, v in self.claimed.items() if v)
        if not claimed:
            return
        d, v, victim = data.draw(st.sampled_from(claimed), label="victim")
        thief = data.draw(st.sampled_from([a for a in self.pool if a != victim]), label="thief")
        entry = self._entry((d, v), victim, short=data.draw(st.booleans(), label="short"))
        before = boa.env.get_balance(thief)
        with boa.env.prank(thief), boa.reverts():
            self.vault.claim(*entry)
        assert boa.env.get_balance(thief) == before

    @rule(data=st.data())
    def claim_many(self, data):
        account = data.draw(st.sampled_from(self.pool), label="account")
        keys = [k for k, (c, _) in self.versions.items() if account in c]
        if not keys:
            return
        chosen = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4), label="keys")
        short = data.draw(st.booleans(), label="short")
        entries = [self._entry(k, account, short) for k in chosen]  # before booking this call
        total = 0
        for key in chosen:  # repeated entries are owed nothing the second time
            owed = self._owed(key, account)
            total += owed
            self.claimed[(*key, account)] += owed
            self.touched.add(key)
        # Anyone may relay the claim (claim_for): the account is paid, the relayer gets nothing.
        relayer = data.draw(st.sampled_from([None, *self.pool]), label="relayer")
        caller = account if relayer is None else relayer
        pay = (
            (lambda: self.vault.claim_many(entries))
            if relayer is None
            else (lambda: self.vault.claim_for(account, entries))
        )
        before = {a: boa.env.get_balance(a) for a in {account, caller}}
        with boa.env.prank(caller):
            if total == 0:
                with boa.reverts("vault: nothing to claim"):
                    pay()
                return
            assert pay() == total
        assert boa.env.get_balance(account) == before[account] + total
        if caller != account:
            assert boa.env.get_balance(caller) == before[caller]
        self.paid += total

    @precondition(lambda self: any(v < self.current[d] for d, v in self.versions))
    @rule(data=st.data())
    def sweep(self, data):
        closed = sorted(k for k in self.versions if k[1] < self.current[k[0]])
        key = data.draw(st.sampled_from(closed), label="version")
        c, s = self.versions[key]
        dust = self._dust(key)
        with boa.env.prank(self.data_owner):
            if self.swept[key] or dust == 0:
                with boa.reverts():
                    self.vault.sweep_dust(key[0], key[1], c, s)
                return
            assert self.vault.sweep_dust(key[0], key[1], c, s) == dust
        self.swept[key] = dust
        self.paid += dust

    # --------------------------------------------------------- invariants

    @invariant()
    def vault_balance_is_credited_minus_paid(self):
        assert self.vault.total_credited() == self.credited
        assert boa.env.get_balance(self.vault.address) == self.credited - self.paid

    @invariant()
    def claimed_plus_claimable_is_each_floor_share_and_dust_is_bounded(self):
        # revenue and dust of every version; per-contributor views of the
        # versions the last step touched (the drain re-checks everything)
        for key, (c, _s) in self.versions.items():
            assert self.vault.revenue(*key) == self.revenue[key]
            assert 0 <= self._dust(key) <= len(c) - 1
        touched, self.touched = self.touched, set()
        for key in touched:
            c, s = self.versions[key]
            for i, account in enumerate(c):
                proof = contributors_proof(c, s, i)
                claimable = self.vault.claimable(key[0], key[1], account, s[i], proof)
                claimed = self.vault.claimed(key[0], key[1], account, s[i], proof[:1])
                assert claimed == self.claimed[(*key, account)]
                assert claimed + claimable == self._floor(key, i)
                if claimed:  # a proven lane answers the first element alone
                    assert self.vault.claimable(key[0], key[1], account, s[i], proof[:1]) == claimable
            if self.revenue[key]:
                assert self.vault.contributors_root(*key) == self.sys.registry.contributors_root(*key)
            assert 0 <= self._dust(key) <= len(c) - 1
            assert self.vault.dust_swept(*key) in (0, self._dust(key))

    # ------------------------------------------------------------- drain

    def _drain(self):
        self.touched = set(self.versions)
        self.claimed_plus_claimable_is_each_floor_share_and_dust_is_bounded()
        for key, account in self._memberships():
            if self._owed(key, account):
                with boa.env.prank(account):
                    self.vault.claim(*self._entry(key, account))
        for d in range(1, N_DATASETS + 1):  # close every version
            self.update_contributors(d, 0)
        for key, (c, s) in list(self.versions.items()):
            if key[1] < self.current[key[0]] and not self.swept[key] and self._dust(key):
                with boa.env.prank(self.data_owner):
                    self.vault.sweep_dust(key[0], key[1], c, s)
        assert boa.env.get_balance(self.vault.address) == 0
        assert self.vault.total_credited() == self.credited


TestRoyaltyState = RoyaltyMachine.TestCase
TestRoyaltyState.settings = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
