"""DataRegistry pricing state machine (issue 10, findings 7, 8a, 8c): random fee
changes, (de)activations, IMOs begun and ended (also across launcher switches),
receiver changes and waits, against a Python model of the timelock.

After every step:
  * `model_pricing` equals the model's effective (active, fee, receiver) now;
  * safety, checked from the events alone: while a token holds or is being sold
    the model's revenue, the effective fee never drops and the model never closes
    unless a `ModelFeeCutScheduled` / `ModelDeactivationScheduled` announced
    exactly that change at least PRICING_DELAY seconds earlier;
  * once locked, the fee receiver is the IMO's token for good.
"""

from __future__ import annotations

import boa
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.contracts import helpers as h

FEE = 10**15
_WORLD: list = []


@pytest.fixture(scope="module", autouse=True)
def _deployed_world():
    s = h.deploy_system()
    publisher = h.funded_address("pricing-publisher")
    launchers = [h.funded_address(f"pricing-launcher-{i}") for i in range(2)]
    model_id = h.register_model(s.registry, publisher, fee=FEE, name="pricing-sm")
    _WORLD[:] = [(s, publisher, launchers, model_id)]
    yield
    _WORLD.clear()


class PricingMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        s, self.publisher, self.launchers, self.mid = _WORLD[0]
        self.registry, self.owner = s.registry, s.owner
        self.delay = self.registry.PRICING_DELAY()
        # the model of the registry
        self.fee, self.active, self.receiver = FEE, True, self.publisher
        self.cut = None  # (fee, eta)
        self.off = None  # eta
        self.locked, self.imo_by, self.current_launcher = False, None, None
        self.token = None
        # what the safety check sees
        self.cut_events: list = []  # (emitted_at, fee, eta)
        self.off_events: list = []  # (emitted_at, eta)
        self.last = (True, FEE, self.publisher)
        self.last_bound = False

    def teardown(self):
        self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------- model

    @property
    def now(self):
        return boa.env.timestamp

    def _bound(self):
        return self.locked or self.imo_by is not None

    def _apply_due(self):
        if self.cut and self.cut[1] <= self.now:
            self.fee, self.cut = self.cut[0], None
        if self.off and self.off <= self.now:
            self.active, self.off = False, None

    def _effective(self):
        fee = self.cut[0] if self.cut and self.cut[1] <= self.now else self.fee
        active = False if self.off and self.off <= self.now else self.active
        return active, fee, self.receiver

    def _record_events(self):
        for e in self.registry.get_logs():
            name = type(e).__name__
            if name == "ModelFeeCutScheduled":
                self.cut_events.append((self.now, e.fee_per_task, e.effective_at))
            elif name == "ModelDeactivationScheduled":
                self.off_events.append((self.now, e.effective_at))

    # ------------------------------------------------------------- rules

    @rule(fee=st.sampled_from([0, 1, FEE // 2, FEE, 2 * FEE, 3 * FEE]))
    def set_model_fee(self, fee):
        self._apply_due()
        with boa.env.prank(self.publisher):
            self.registry.set_model_fee(self.mid, fee)
        self._record_events()
        if fee < self.fee and self._bound():
            self.cut = (fee, self.now + self.delay)
        else:
            self.fee, self.cut = fee, None

    @rule(active=st.booleans())
    def set_model_active(self, active):
        self._apply_due()
        if not active and self.active and self._bound():
            if self.off:
                with boa.env.prank(self.publisher), boa.reverts("registry: deactivation already scheduled"):
                    self.registry.set_model_active(self.mid, active)
                return
            with boa.env.prank(self.publisher):
                self.registry.set_model_active(self.mid, active)
            self._record_events()
            self.off = self.now + self.delay
            return
        with boa.env.prank(self.publisher):
            self.registry.set_model_active(self.mid, active)
        self.active, self.off = active, None

    @rule(which=st.integers(0, 1))
    def switch_launcher(self, which):
        with boa.env.prank(self.owner):
            self.registry.set_imo_launcher(self.launchers[which])
        self.current_launcher = self.launchers[which]

    @rule(which=st.integers(0, 1))
    def begin_imo(self, which):
        launcher = self.launchers[which]
        if launcher != self.current_launcher:
            with boa.env.prank(launcher), boa.reverts("registry: caller is not the imo launcher"):
                self.registry.begin_imo(self.mid)
            return
        self._apply_due()
        reason = None
        if not self.active:
            reason = "registry: model inactive"
        elif self.locked:
            reason = "registry: fee receiver locked by an IMO"
        elif self.imo_by is not None:
            reason = "registry: imo in progress"
        elif self.cut or self.off:
            reason = "registry: pricing change scheduled"
        if reason:
            with boa.env.prank(launcher), boa.reverts(reason):
                self.registry.begin_imo(self.mid)
            return
        with boa.env.prank(launcher):
            self.registry.begin_imo(self.mid)
        self.imo_by = launcher

    @rule(which=st.integers(0, 1), success=st.booleans())
    def end_imo(self, which, success):
        launcher = self.launchers[which]
        token = boa.env.generate_address("token") if success else h.ZERO_ADDRESS
        if launcher != self.imo_by:
            with boa.env.prank(launcher), boa.reverts("registry: caller is not the model's imo launcher"):
                self.registry.end_imo(self.mid, token)
            return
        with boa.env.prank(launcher):
            self.registry.end_imo(self.mid, token)
        self.imo_by = None
        if success:
            self.locked, self.receiver, self.token = True, token, token

    @rule()
    def set_fee_receiver(self):
        new = boa.env.generate_address()
        if self._bound():
            with boa.env.prank(self.publisher), boa.reverts("registry: fee receiver locked by an IMO"):
                self.registry.set_fee_receiver(self.mid, new)
            return
        with boa.env.prank(self.publisher):
            self.registry.set_fee_receiver(self.mid, new)
        self.receiver = new

    @rule(seconds=st.sampled_from([1, 3600, 86_400, 7 * 86_400 - 1, 7 * 86_400]))
    def wait(self, seconds):
        boa.env.time_travel(seconds=seconds)

    # --------------------------------------------------------- invariants

    @invariant()
    def pricing_is_the_modelled_effective_pricing(self):
        assert self.registry.model_pricing(self.mid) == self._effective()
        assert self.registry.fee_receiver_locked(self.mid) == self.locked
        assert self.registry.imo_launcher_of(self.mid) == (self.imo_by or h.ZERO_ADDRESS)

    @invariant()
    def revenue_held_by_a_token_drops_only_after_an_announced_delay(self):
        active, fee, receiver = self.registry.model_pricing(self.mid)
        last_active, last_fee, _ = self.last
        if self.last_bound:
            if fee < last_fee:
                assert any(
                    f == fee and eta <= self.now and at + self.delay <= self.now for at, f, eta in self.cut_events
                )
            if last_active and not active:
                assert any(eta <= self.now and at + self.delay <= self.now for at, eta in self.off_events)
        if self.locked:
            assert receiver == self.token
        self.last, self.last_bound = (active, fee, receiver), self._bound()


TestPricingState = PricingMachine.TestCase
TestPricingState.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
