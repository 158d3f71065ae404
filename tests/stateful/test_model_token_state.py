"""ModelToken state machine: hand-over / transfer / burn / revenue-in / claim / recycled
donations against an exact (rational) model of per-token revenue sharing.

Revenue accrues per token of the total supply; the custodian's tokens accrue for their
future owners and bring it along when handed over. The machine starts from small and
tiny supplies and burns down to a single base unit, so the accumulators see huge
per-share increments (the review's freeze used a 1-wei position).

Invariants checked after every step:
  - a revenue-in of the live token never reverts (every `revenue_in_` rule must succeed);
  - every wei is accounted for: total_revenue_in == total_claimed + total_redeemed
    + total_unclaimed + redeem_pool, the ETH held equals revenue in minus what was paid
    out, and it covers every claimable balance, the custody's accrual and the pool;
  - no account ever gets more than its exact share of the holders' revenue (up to
    2**-128 wei per base unit) and never less than that share minus 1 wei;
  - burns pay exactly what the burned tokens accrued in the pool (rounded down);
  - the sum of balances == supply - burned, and the supply never reaches zero.
"""

from __future__ import annotations

import os
from fractions import Fraction

import boa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.contracts import imo_helpers as ih

MAG = 2**128
N_HOLDERS = 4
BPS = 10_000
CUSTODY = "custody"

holder = st.integers(min_value=0, max_value=N_HOLDERS - 1)
fraction = st.integers(min_value=0, max_value=2**32)
revenue = st.one_of(
    st.integers(min_value=1, max_value=1_000),
    st.integers(min_value=1, max_value=10**20),
    st.integers(min_value=10**24, max_value=10**26),  # more ether than any flash loan
)


class ModelTokenMachine(RuleBasedStateMachine):
    @initialize(
        supply=st.sampled_from([1, 3, 10**9, 2**112]),
        unsold=fraction,
        redeem_share_bps=st.sampled_from([0, 1_000, 3_333, 10_000]),
    )
    def deploy(self, supply, unsold, redeem_share_bps):
        self.issuer = ih.funded("custodian")
        self.payer = ih.funded("payer", 10**30)
        self.holders = [ih.funded(f"holder{i}", 10**30) for i in range(N_HOLDERS)]
        self.token = ih.deploy_token(self.issuer, supply, redeem_share_bps)
        self.bps = redeem_share_bps
        # Before going live the launcher burns what was never sold (leaving at least 1).
        burn = unsold % supply
        if burn:
            self.token.burn(burn, sender=self.issuer)
        self.token.go_live(sender=self.issuer)
        self.supply = supply - burn
        self.balances = {a: 0 for a in self.holders}
        self.custodian_balance = self.supply
        self.revenue_in = 0
        self.redeemed = 0
        self.claimed = {a: 0 for a in self.holders}
        self.entitled = {a: Fraction(0) for a in self.holders}  # exact holder revenue
        self.entitled[CUSTODY] = Fraction(0)
        self.redeem_exact = Fraction(0)  # exact pool revenue per base unit
        self.redeem_int = 0  # the contract's floor arithmetic, magnified

    # ---------------------------------------------------------------- helpers

    def pool_in(self, revenue_total: int) -> int:
        return revenue_total * self.bps // BPS

    def live_supply(self) -> int:
        return self.custodian_balance + sum(self.balances.values())

    # ---------------------------------------------------------------- rules

    @precondition(lambda self: self.custodian_balance > 0)
    @rule(who=holder, part=fraction)
    def hand_over(self, who, part):
        """The custodian hands tokens to their owner (IMOLauncher.claim_tokens / claim_vested)."""
        owner = self.holders[who]
        amount = 1 + part % self.custodian_balance
        carried = self.entitled[CUSTODY] * amount / self.custodian_balance
        self.token.transfer(owner, amount, sender=self.issuer)
        self.entitled[CUSTODY] -= carried
        self.entitled[owner] += carried
        self.custodian_balance -= amount
        self.balances[owner] += amount

    @rule(src=holder, dst=holder, part=fraction)
    def transfer(self, src, dst, part):
        sender, receiver = self.holders[src], self.holders[dst]
        amount = part % (self.balances[sender] + 1)
        self.token.transfer(receiver, amount, sender=sender)
        self.balances[sender] -= amount
        self.balances[receiver] += amount

    @rule(who=holder, part=fraction)
    def burn(self, who, part):
        account = self.holders[who]
        if self.balances[account] == 0:
            with boa.reverts("erc20: burn amount exceeds balance"):
                self.token.burn(1, sender=account)
            return
        amount = 1 + part % self.balances[account]
        if amount == self.live_supply():
            with boa.reverts("token: last token"):
                self.token.burn(amount, sender=account)
            amount -= 1
            if amount == 0:
                return
        expected = amount * self.redeem_int // MAG
        assert expected <= amount * self.redeem_exact
        assert self.token.redeemable_on_burn(amount) == expected
        eth_before = boa.env.get_balance(account)
        assert self.token.burn(amount, sender=account) == expected
        assert boa.env.get_balance(account) == eth_before + expected
        self.balances[account] -= amount
        self.redeemed += expected

    @rule(amount=revenue)
    def revenue_in_(self, amount):
        supply = self.live_supply()
        ih.send_revenue(self.token, self.payer, amount)  # never reverts once live
        to_pool = self.pool_in(self.revenue_in + amount) - self.pool_in(self.revenue_in)
        to_holders = amount - to_pool
        for account, bal in self.balances.items():
            self.entitled[account] += Fraction(to_holders * bal, supply)
        self.entitled[CUSTODY] += Fraction(to_holders * self.custodian_balance, supply)
        self.redeem_exact += Fraction(to_pool, supply)
        self.redeem_int += to_pool * MAG // supply
        self.revenue_in += amount

    @rule(who=holder, recycle=st.booleans())
    def claim(self, who, recycle):
        """A claim; with `recycle`, the holder donates the claim straight back (the freeze)."""
        account = self.holders[who]
        owed = self.token.claimable_revenue(account)
        if owed == 0:
            with boa.reverts("token: nothing to claim"):
                self.token.claim(sender=account)
            return
        eth_before = boa.env.get_balance(account)
        assert self.token.claim(sender=account) == owed
        assert boa.env.get_balance(account) == eth_before + owed
        assert self.token.claimable_revenue(account) == 0
        self.claimed[account] += owed
        if recycle:
            self.payer, payer = account, self.payer
            self.revenue_in_(owed)
            self.payer = payer

    # ---------------------------------------------------------------- invariants

    @invariant()
    def invariants(self):
        """One invariant so that each view is read once per step."""
        claimable = {a: self.token.claimable_revenue(a) for a in self.holders}
        custody = self.token.accrued_in_custody(self.custodian_balance)
        self.check_every_wei_is_accounted_for(claimable, custody)
        self.check_nobody_gets_more_than_its_share(claimable, custody)
        self.check_balances_sum_to_supply_minus_burned()

    def check_every_wei_is_accounted_for(self, claimable, custody):
        t = self.token
        revenue_in = t.total_revenue_in()
        claimed, redeemed, unclaimed, pool = t.total_claimed(), t.total_redeemed(), t.total_unclaimed(), t.redeem_pool()
        assert revenue_in == self.revenue_in
        assert claimed == sum(self.claimed.values())
        assert redeemed == self.redeemed
        assert pool == self.pool_in(self.revenue_in) - self.redeemed
        assert claimed + redeemed + unclaimed + pool == revenue_in
        owed_to_holders = sum(claimable.values()) + custody
        assert owed_to_holders <= unclaimed
        assert self.live_supply() * self.redeem_int // MAG <= pool
        eth = boa.env.get_balance(t.address)
        assert eth == revenue_in - claimed - redeemed
        assert eth >= owed_to_holders + pool

    def check_nobody_gets_more_than_its_share(self, claimable, custody):
        slack = Fraction(self.supply, MAG)  # the phantom 2**-128 wei per base unit
        for account in self.holders:
            got = self.claimed[account] + claimable[account]
            assert got <= self.entitled[account] + slack
            assert self.entitled[account] - got < 1 + Fraction(1, 10**6)
        assert custody <= self.entitled[CUSTODY] + slack
        assert self.entitled[CUSTODY] - custody < 1 + Fraction(1, 10**6)

    def check_balances_sum_to_supply_minus_burned(self):
        t = self.token
        assert t.totalSupply() == self.live_supply() >= 1
        assert t.balanceOf(self.issuer) == self.custodian_balance
        for account, bal in self.balances.items():
            assert t.balanceOf(account) == bal
        assert t.circulating_supply() == sum(self.balances.values())
        assert t.claimable_revenue(self.issuer) == 0


TestModelTokenState = ModelTokenMachine.TestCase
TestModelTokenState.settings = settings(
    max_examples=int(os.environ.get("TRIBUTA_STATEFUL_EXAMPLES", "40")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
