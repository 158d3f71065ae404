"""IMOLauncher state machine (with the real DataRegistry): buy / time passes / finalize /
refund / claim_tokens / withdraw_proceeds / claim_vested / withdraw_excess in any order.

Revenue arrives at the token at any time (it is refused before a successful finalize and
never refused after), and the registry owner may switch to another launcher mid-sale
(finding 8a: the sale must still finalize, refund and pay out).

Invariants: the launcher holds exactly the wei it owes (sale funds, unrefunded payments,
unwithdrawn proceeds, excess credits) and exactly the tokens it owes (unclaimed purchases,
unvested or unclaimed publisher tokens). At the end of every run everyone pulls what is
theirs: the launcher is left with no wei and no token, and the token with less than a wei
per holder beyond its redeem pool.
"""

from __future__ import annotations

import boa
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.contracts import imo_helpers as ih
from tests.contracts.imo_helpers import ACTIVE, DAY, ETHER, FAILED, SUCCEEDED, UNIT

N_BUYERS = 3
SUPPLY = 1_000_000 * UNIT
PRICE = 3 * 10**14 + 1  # an awkward price: rounding on every buy
PUBLISHER_BPS = 2_500
SALE = 10 * DAY
VESTING = 30 * DAY

buyer = st.integers(min_value=0, max_value=N_BUYERS - 1)
wei = st.one_of(st.integers(min_value=1, max_value=10**6), st.integers(min_value=10**15, max_value=150 * ETHER))


class LauncherMachine(RuleBasedStateMachine):
    @initialize(
        soft_cap=st.sampled_from([0, 5 * ETHER, 100 * ETHER]),
        hard_cap=st.sampled_from([100 * ETHER, 200 * ETHER]),
        publisher_bps=st.sampled_from([0, PUBLISHER_BPS]),
    )
    def deploy(self, soft_cap, hard_cap, publisher_bps):
        self.owner = owner = ih.funded("owner")
        self.payer = ih.funded("payer", 10**9 * ETHER)
        self.publisher = ih.funded("publisher")
        self.buyers = [ih.funded(f"buyer{i}", 10**6 * ETHER) for i in range(N_BUYERS)]
        self.registry = registry = ih.partial("DataRegistry").deploy(sender=owner)
        model_id = registry.register_model(
            "m", keccak(text="w"), [], [], [], 10**15, self.publisher, sender=self.publisher
        )
        blueprint = ih.partial("ModelToken").deploy_as_blueprint()
        self.launcher = ih.partial("IMOLauncher").deploy(registry.address, blueprint.address)
        registry.set_imo_launcher(self.launcher.address, sender=owner)
        self.imo_id = self.launcher.launch(
            model_id,
            "M",
            "M",
            SUPPLY,
            PRICE,
            soft_cap,
            hard_cap,
            boa.env.timestamp + SALE,
            publisher_bps,
            VESTING,
            500,
            sender=self.publisher,
        )
        self.token = ih.partial("ModelToken").at(self.launcher.imo(self.imo_id).token)
        self.soft_cap, self.hard_cap = soft_cap, hard_cap
        self.sale_end = boa.env.timestamp + SALE
        self.publisher_tokens = SUPPLY * publisher_bps // 10_000
        self.revenue = 0
        self.state = ACTIVE
        self.raised = self.sold = self.refunded = self.vested_claimed = 0
        self.withdrawn = False
        self.paid = {b: 0 for b in self.buyers}
        self.tokens = {b: 0 for b in self.buyers}
        self.settled = {b: False for b in self.buyers}  # tokens claimed or refunded
        self.excess = {b: 0 for b in self.buyers}

    def sold_out(self) -> bool:
        return (self.hard_cap - self.raised) * UNIT < PRICE

    # ---------------------------------------------------------------- rules

    @rule(who=buyer, value=wei)
    def buy(self, who, value):
        account = self.buyers[who]
        if self.state != ACTIVE:
            reason = "imo: sale finalized"
        elif boa.env.timestamp >= self.sale_end:
            reason = "imo: sale ended"
        elif self.sold_out():
            reason = "imo: hard cap reached"
        elif min(value, self.hard_cap - self.raised) * UNIT // PRICE == 0:
            reason = "imo: value buys no tokens"
        else:
            paid = min(value, self.hard_cap - self.raised)
            assert self.launcher.buy(self.imo_id, value=value, sender=account) == paid * UNIT // PRICE
            self.raised += paid
            self.sold += paid * UNIT // PRICE
            self.paid[account] += paid
            self.tokens[account] += paid * UNIT // PRICE
            self.excess[account] += value - paid
            return
        with boa.reverts(reason):
            self.launcher.buy(self.imo_id, value=value, sender=account)

    @rule(seconds=st.sampled_from([DAY, 4 * DAY, 11 * DAY]))
    def time_passes(self, seconds):
        boa.env.time_travel(seconds=seconds)

    @rule()
    def finalize(self):
        if self.state != ACTIVE:
            with boa.reverts("imo: already finalized"):
                self.launcher.finalize(self.imo_id)
        elif boa.env.timestamp < self.sale_end and not self.sold_out():
            with boa.reverts("imo: sale still open"):
                self.launcher.finalize(self.imo_id)
        else:
            # a sale that would leave no token at all fails (finding 8b)
            succeeded = (self.raised >= self.soft_cap or self.sold_out()) and self.sold + self.publisher_tokens > 0
            assert self.launcher.finalize(self.imo_id) is succeeded
            self.state = SUCCEEDED if succeeded else FAILED

    @rule(amount=st.integers(min_value=1, max_value=10 * ETHER))
    def revenue_in(self, amount):
        if self.state == SUCCEEDED:
            ih.send_revenue(self.token, self.payer, amount)  # never refused once live
            self.revenue += amount
        else:
            ih.send_revenue_reverts(self.token, self.payer, amount, "token: not live")

    @rule()
    def registry_switches_launcher(self):
        """The registry owner moves to another launcher; this sale must not be frozen."""
        self.registry.set_imo_launcher(boa.env.generate_address("another launcher"), sender=self.owner)

    @rule(who=buyer)
    def refund(self, who):
        account = self.buyers[who]
        if self.state == FAILED and self.paid[account] and not self.settled[account]:
            before = boa.env.get_balance(account)
            assert self.launcher.refund(self.imo_id, sender=account) == self.paid[account]
            assert boa.env.get_balance(account) == before + self.paid[account]
            self.refunded += self.paid[account]
            self.settled[account] = True
        else:
            with boa.reverts():
                self.launcher.refund(self.imo_id, sender=account)

    @rule(who=buyer)
    def claim_tokens(self, who):
        account = self.buyers[who]
        if self.state == SUCCEEDED and self.tokens[account] and not self.settled[account]:
            assert self.launcher.claim_tokens(self.imo_id, sender=account) == self.tokens[account]
            self.settled[account] = True
        else:
            with boa.reverts():
                self.launcher.claim_tokens(self.imo_id, sender=account)

    @rule()
    def withdraw_proceeds(self):
        if self.state == SUCCEEDED and not self.withdrawn and self.raised:
            assert self.launcher.withdraw_proceeds(self.imo_id, sender=self.publisher) == self.raised
            self.withdrawn = True
        else:
            with boa.reverts():
                self.launcher.withdraw_proceeds(self.imo_id, sender=self.publisher)

    @rule()
    def claim_vested(self):
        claimable = self.launcher.claimable_vested(self.imo_id)
        if self.state == SUCCEEDED and claimable:
            assert self.launcher.claim_vested(self.imo_id, sender=self.publisher) == claimable
            self.vested_claimed += claimable
        else:
            with boa.reverts():
                self.launcher.claim_vested(self.imo_id, sender=self.publisher)

    @rule(who=buyer)
    def withdraw_excess(self, who):
        account = self.buyers[who]
        if self.excess[account]:
            assert self.launcher.withdraw_excess(sender=account) == self.excess[account]
            self.excess[account] = 0
        else:
            with boa.reverts("imo: no excess"):
                self.launcher.withdraw_excess(sender=account)

    # ---------------------------------------------------------------- invariants

    def owed_wei(self) -> int:
        sale = {
            ACTIVE: self.raised,
            SUCCEEDED: 0 if self.withdrawn else self.raised,
            FAILED: self.raised - self.refunded,
        }
        return sale[self.state] + sum(self.excess.values())

    def owed_tokens(self) -> int:
        if self.state == ACTIVE:
            return SUPPLY
        if self.state == FAILED:
            return 0
        unclaimed = sum(t for b, t in self.tokens.items() if not self.settled[b])
        return unclaimed + self.publisher_tokens - self.vested_claimed

    @invariant()
    def launcher_holds_exactly_what_it_owes(self):
        assert boa.env.get_balance(self.launcher.address) == self.owed_wei()
        assert self.token.balanceOf(self.launcher.address) == self.owed_tokens()
        imo = self.launcher.imo(self.imo_id)
        assert (imo.state, imo.raised, imo.sold, imo.refunded) == (self.state, self.raised, self.sold, self.refunded)
        assert imo.raised <= self.hard_cap and imo.sold <= imo.tokens_for_sale

    def teardown(self):
        """Everyone pulls what is theirs: nothing may remain in the launcher."""
        if not hasattr(self, "launcher"):
            return
        boa.env.time_travel(seconds=SALE)
        if self.state == ACTIVE:
            self.finalize()
        boa.env.time_travel(seconds=VESTING)
        for i in range(N_BUYERS):
            account = self.buyers[i]
            if self.paid[account] and not self.settled[account]:
                (self.refund if self.state == FAILED else self.claim_tokens)(i)
            if self.excess[account]:
                self.withdraw_excess(i)
        if self.state == SUCCEEDED:
            if self.raised and not self.withdrawn:
                self.withdraw_proceeds()
            if self.launcher.claimable_vested(self.imo_id):
                self.claim_vested()
        assert boa.env.get_balance(self.launcher.address) == 0
        assert self.token.balanceOf(self.launcher.address) == 0
        assert self.token.totalSupply() == (self.sold + self.publisher_tokens if self.state == SUCCEEDED else 0)
        # Every holder pulls its revenue: what stays in the token is the pool plus rounding.
        for account in [*self.buyers, self.publisher]:
            if self.token.claimable_revenue(account):
                self.token.claim(sender=account)
        left = boa.env.get_balance(self.token.address) - self.token.redeem_pool()
        assert 0 <= left <= N_BUYERS + 2
        assert self.token.total_revenue_in() == self.revenue


TestLauncherState = LauncherMachine.TestCase
TestLauncherState.settings = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
