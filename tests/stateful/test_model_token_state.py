"""ModelToken state machine: buy / transfer / burn / revenue-in / claim against an exact
(rational) model of pro-rata revenue sharing.

Invariants checked after every step:
  - every wei is accounted for: total_revenue_in == total_claimed + total_redeemed
    + total_unclaimed + redeem_pool + dust, the ETH held equals revenue in minus what
    was paid out, and it covers every claimable balance plus the redeem pool;
  - no account ever gets more than its exact pro-rata share of the holders' revenue
    (and never less than that share minus 1 wei);
  - the sum of balances == supply - burned, and the circulating supply is what the
    custodian does not hold.
"""

from __future__ import annotations

from fractions import Fraction

import boa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.contracts import imo_helpers as ih

SUPPLY = 10**9  # base units: small, so rounding is exercised
N_HOLDERS = 4
BPS = 10_000

holder = st.integers(min_value=0, max_value=N_HOLDERS - 1)
token_amount = st.integers(min_value=1, max_value=SUPPLY)
revenue = st.one_of(st.integers(min_value=1, max_value=1_000), st.integers(min_value=1, max_value=10**20))


class ModelTokenMachine(RuleBasedStateMachine):
    @initialize(redeem_share_bps=st.sampled_from([0, 1_000, 3_333, 10_000]))
    def deploy(self, redeem_share_bps):
        self.issuer = ih.funded("custodian")
        self.payer = ih.funded("payer", 10**30)
        self.holders = [ih.funded(f"holder{i}") for i in range(N_HOLDERS)]
        self.token = ih.deploy_token(self.issuer, SUPPLY, redeem_share_bps)
        self.bps = redeem_share_bps
        self.balances = {a: 0 for a in self.holders}
        self.custodian_balance = SUPPLY
        self.burned = 0
        self.revenue_in = 0
        self.redeemed = 0
        self.entitled = {a: Fraction(0) for a in self.holders}  # exact pro-rata holder revenue
        self.claimed = {a: 0 for a in self.holders}

    # ---------------------------------------------------------------- helpers

    def circulating(self) -> int:
        return sum(self.balances.values())

    def pool_in(self, revenue_total: int) -> int:
        return revenue_total * self.bps // BPS

    # ---------------------------------------------------------------- rules

    @precondition(lambda self: self.custodian_balance > 0)
    @rule(who=holder, amount=token_amount)
    def buy(self, who, amount):
        """A buyer receives tokens from the custodian (what IMOLauncher.claim_tokens does)."""
        buyer = self.holders[who]
        amount = min(amount, self.custodian_balance)
        self.token.transfer(buyer, amount, sender=self.issuer)
        self.custodian_balance -= amount
        self.balances[buyer] += amount

    @rule(src=holder, dst=holder, amount=token_amount)
    def transfer(self, src, dst, amount):
        sender, receiver = self.holders[src], self.holders[dst]
        amount = amount % (self.balances[sender] + 1)
        self.token.transfer(receiver, amount, sender=sender)
        self.balances[sender] -= amount
        self.balances[receiver] += amount

    @rule(who=holder, amount=token_amount)
    def burn(self, who, amount):
        account = self.holders[who]
        if self.balances[account] == 0:
            with boa.reverts("erc20: burn amount exceeds balance"):
                self.token.burn(1, sender=account)
            return
        amount = 1 + amount % self.balances[account]
        pool = self.pool_in(self.revenue_in) - self.redeemed
        expected = pool * amount // self.circulating()
        assert self.token.redeemable_on_burn(amount) == expected
        eth_before = boa.env.get_balance(account)
        assert self.token.burn(amount, sender=account) == expected
        assert boa.env.get_balance(account) == eth_before + expected
        self.balances[account] -= amount
        self.burned += amount
        self.redeemed += expected

    @rule(amount=revenue)
    def revenue_in_(self, amount):
        circulating = self.circulating()
        if circulating == 0:
            ih.send_revenue_reverts(self.token, self.payer, amount, "token: no circulating supply")
            return
        ih.send_revenue(self.token, self.payer, amount)
        to_holders = amount - (self.pool_in(self.revenue_in + amount) - self.pool_in(self.revenue_in))
        for account, bal in self.balances.items():
            self.entitled[account] += Fraction(to_holders * bal, circulating)
        self.revenue_in += amount

    @rule(who=holder)
    def claim(self, who):
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

    # ---------------------------------------------------------------- invariants

    @invariant()
    def invariants(self):
        """One invariant so that each view is read once per step."""
        claimable = {a: self.token.claimable_revenue(a) for a in self.holders}
        self.check_every_wei_is_accounted_for(claimable)
        self.check_nobody_gets_more_than_its_pro_rata_share(claimable)
        self.check_balances_sum_to_supply_minus_burned()

    def check_every_wei_is_accounted_for(self, claimable):
        t = self.token
        revenue_in = t.total_revenue_in()
        claimed, redeemed, unclaimed, pool, dust = (
            t.total_claimed(),
            t.total_redeemed(),
            t.total_unclaimed(),
            t.redeem_pool(),
            t.dust(),
        )
        assert revenue_in == self.revenue_in
        assert claimed == sum(self.claimed.values())
        assert redeemed == self.redeemed
        assert pool == self.pool_in(self.revenue_in) - self.redeemed
        assert claimed + redeemed + unclaimed + pool + dust == revenue_in
        # each account's claimable is rounded down: the fractions (< 1 wei each) stay pending
        assert sum(claimable.values()) <= unclaimed < sum(claimable.values()) + N_HOLDERS
        eth = boa.env.get_balance(t.address)
        assert eth == revenue_in - claimed - redeemed
        assert eth >= sum(claimable.values()) + pool

    def check_nobody_gets_more_than_its_pro_rata_share(self, claimable):
        for account in self.holders:
            got = self.claimed[account] + claimable[account]
            assert got <= self.entitled[account]
            assert self.entitled[account] - got < 1 + Fraction(1, 10**9)

    def check_balances_sum_to_supply_minus_burned(self):
        t = self.token
        assert t.totalSupply() == SUPPLY - self.burned
        assert t.balanceOf(self.issuer) == self.custodian_balance
        for account, bal in self.balances.items():
            assert t.balanceOf(account) == bal
        assert self.custodian_balance + sum(self.balances.values()) == SUPPLY - self.burned
        assert t.circulating_supply() == self.circulating() == t.totalSupply() - self.custodian_balance
        assert t.claimable_revenue(self.issuer) == 0


TestModelTokenState = ModelTokenMachine.TestCase
TestModelTokenState.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
