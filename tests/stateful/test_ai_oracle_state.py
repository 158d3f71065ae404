"""AIOracle state machine: random requests (windows 0 or 600 s, consumers that
store, revert, burn their gas or bomb returndata), fulfilments, finalizations,
challenges resolved as upheld, overturned or without quorum, expiries (also of
tasks a stranger refunded in the escrow directly), time passing and
withdrawals by anyone.

Invariants after every step:
  * AIOracle's ETH + its escrow credit + its requests' fees still in the escrow
    == what it owes (credits, callback reserves, bonds, open fees), and the
    escrow's own invariant holds;
  * no request is delivered twice, and a delivered request is FINAL;
  * AICommittee holds exactly its members' deposits and the treasury's credit
    (silent members penalized, left-out members proving they answered).
At the end every request is expired or final, every credit is withdrawn and
AIOracle holds zero wei, in itself and in the escrow; every member leaves and
takes its deposit back and AICommittee holds zero: nothing is ever stuck.
"""

from __future__ import annotations

import os
from collections import Counter
from types import SimpleNamespace

import boa
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.contracts import ai_oracle_helpers as x
from tests.contracts import helpers as h

_WORLD: list = []
SEEN: Counter = Counter()  # paths taken, over all examples (printed with -s)


def _seen(what: str):
    SEEN[what] += 1
    event(what)


@pytest.fixture(scope="module", autouse=True)
def _deployed_world():
    s = h.deploy_system()
    publisher = h.funded_address("aosm-publisher")
    h.register_model(s.registry, publisher, fee=10**15, receiver=boa.env.generate_address("aosm-receiver"))
    agents = [h.new_account() for _ in range(2)]
    for a in agents:
        h.register_agent(s.escrow, a)
    w = SimpleNamespace(
        sys=s,
        escrow=s.escrow,
        registry=s.registry,
        owner=s.owner,
        oracle=s.oracle,
        treasury=s.treasury,
        publisher=publisher,
        agents=agents,
        requester=h.funded_address("aosm-requester"),
        stranger=h.funded_address("aosm-stranger"),
    )
    _WORLD[:] = [x.deploy(w, n_members=4)]
    yield
    _WORLD.clear()
    print("\npaths taken:", dict(sorted(SEEN.items())))


class AIOracleMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.ao = _WORLD[0]
        self.w = self.ao.w
        self.rids: list[int] = []
        self.outputs: dict[int, tuple[bytes, bytes]] = {}  # rid -> (output, settlement)
        self.candidates: dict[int, list] = {}
        self.committees: dict[int, list[str]] = {}  # rid -> its resolved committee's members
        self.delivered: Counter = Counter()
        self.actors = {
            self.w.requester,
            self.w.oracle,
            self.w.stranger,
            *(a.address for a in self.w.agents),
            *(m.address for m in self.ao.members),
        }

    def teardown(self):
        try:
            self._drain()
        finally:
            self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------ helpers

    def _state(self, rid):
        return self.ao.oracle.request(rid).state

    def _in(self, *states):
        return [r for r in self.rids if self._state(r) in states]

    def _fulfillable(self):
        return [r for r in self._in(x.REQUESTED) if boa.env.timestamp <= self.ao.oracle.request(r).due]

    def _finalizable(self):
        return [r for r in self._in(x.PROVISIONAL) if boa.env.timestamp >= self.ao.oracle.request(r).due]

    def _challengeable(self):
        return [r for r in self._in(x.PROVISIONAL) if boa.env.timestamp < self.ao.oracle.request(r).due]

    def _members_with_a_full_deposit(self, model_id):
        c = self.ao.committee
        return sum(1 for m in c.roster(model_id) if c.deposit_of(m) >= c.member_deposit() and m != self.w.stranger)

    def _expirable(self):
        now = boa.env.timestamp
        out = []
        for r in self.rids:
            q = self.ao.oracle.request(r)
            if (q.state == x.REQUESTED and now > q.due) or (
                q.state in (x.PROVISIONAL, x.CHALLENGED) and now > q.escrow_deadline
            ):
                out.append(r)
        return out

    def _refundable_in_escrow(self):
        return [
            r for r in self.rids if self.w.escrow.task(r)[7] == h.OPEN and boa.env.timestamp > self.w.escrow.task(r)[5]
        ]

    def _record_deliveries(self, contract):
        for e in x.events(contract, "CallbackDelivered"):
            self.delivered[e.request_id] += 1

    # -------------------------------------------------------------- rules

    @rule(
        window=st.sampled_from([0, 600]),
        mode=st.sampled_from([0, 0, 1, 2, 4]),
        gas_limit=st.sampled_from([50_000, 200_000]),
        extra=st.sampled_from([0, 0, 7]),
    )
    def request(self, window, mode, gas_limit, extra):
        x.set_window(self.ao, window)
        self.ao.consumer.set_mode(mode, b"")
        self.rids.append(x.request(self.ao, gas_limit=gas_limit, extra=extra))

    @precondition(lambda self: self._fulfillable())
    @rule(data=st.data(), paid=st.booleans(), correct=st.booleans())
    def fulfill(self, data, paid, correct):
        rid = data.draw(st.sampled_from(self._fulfillable()))
        output = b"4" if correct else b"5"
        # an agent slashed below the minimum stake can no longer be paid
        serving = [a for a in self.w.agents if self.w.escrow.serves_model(a.address, 1)]
        agents = serving[:1] if paid else []
        s = x.settlement_for(self.ao, rid, output, agents=agents, agent_fee=10**15 if agents else 0)
        x.fulfill(self.ao, rid, output, s, gas=5_000_000)
        self._record_deliveries(self.ao.oracle)
        self.outputs[rid] = (output, s, [a.address for a in agents])
        _seen(f"fulfilled with window {self.ao.oracle.request(rid).challenge_window}")

    @precondition(lambda self: self._finalizable())
    @rule(data=st.data())
    def finalize(self, data):
        rid = data.draw(st.sampled_from(self._finalizable()))
        output, s, _ = self.outputs[rid]
        x.finalize(self.ao, rid, output, s, gas=5_000_000)
        self._record_deliveries(self.ao.oracle)
        _seen("finalized")

    @precondition(lambda self: self._challengeable())
    @rule(data=st.data())
    def challenge(self, data):
        rid = data.draw(st.sampled_from(self._challengeable()))
        request = self.ao.oracle.request(rid)
        if (
            self._members_with_a_full_deposit(request.model_id)
            < self.ao.oracle.COMMITTEE_SIZE() + request.original_agents
        ):
            # Penalized members fall below the member deposit and are not drawn: no committee, no challenge.
            with boa.env.prank(self.w.stranger), boa.reverts("aioracle: too few committee members"):
                self.ao.oracle.challenge(rid, value=x.CHALLENGE_BOND)
            assert self._state(rid) == x.PROVISIONAL
            _seen("challenge refused: too few members with a full deposit")
            return
        with boa.env.prank(self.w.stranger):
            self.ao.oracle.challenge(rid, value=x.CHALLENGE_BOND)
        (ev,) = x.events(self.ao.oracle, "Challenged")
        self.candidates[rid] = list(ev.candidates)

    @precondition(lambda self: self._in(x.CHALLENGED))
    @rule(data=st.data(), verdict=st.sampled_from(["uphold", "overturn", "none"]), n=st.sampled_from([2, 3]))
    def resolve(self, data, verdict, n):
        rid = data.draw(st.sampled_from(self._in(x.CHALLENGED)))
        output, s, originals = self.outputs[rid]
        cands = self.candidates[rid]
        members = [x.member(self.ao, m) for m in self.ao.committee.committee_of(cands, originals)]
        if verdict == "none":
            if boa.env.timestamp <= self.ao.oracle.request(rid).due:
                return
            verdicts, final = [], output
        else:
            final = output if verdict == "uphold" else (b"5" if output == b"4" else b"4")
            verdicts = [x.verdict(self.ao, m, rid, x.file_digest(final)) for m in members[:n]]
        with boa.env.prank(self.w.stranger):
            self.ao.oracle.resolve(rid, cands, s, verdicts, final, False, b"ctx", gas=5_000_000)
        self.committees[rid] = [m.address for m in members]
        self._record_deliveries(self.ao.oracle)
        _seen(f"resolved: {verdict}")

    def _duties(self, silent: bool, due: bool):
        """(request, member) pairs of resolved committees: those recorded silent (or not yet
        answered), whose committee deadline has (or has not) passed."""
        c = self.ao.committee
        return [
            (rid, m)
            for rid, members in sorted(self.committees.items())
            for m in members
            if (c.silent(rid, m) if silent else not c.answered(rid, m))
            and (boa.env.timestamp > c.deadline_of(rid)) == due
        ]

    @precondition(lambda self: self._duties(silent=False, due=False))
    @rule(data=st.data())
    def member_posts_its_verdict_late(self, data):
        rid, m = data.draw(st.sampled_from(self._duties(silent=False, due=False)))
        v = x.verdict(self.ao, x.member(self.ao, m), rid, x.file_digest(b"4"))
        self.ao.committee.post_verdict(rid, v[1], v[2])
        assert not self.ao.committee.silent(rid, m)
        _seen("a left-out member proves it answered")

    @precondition(lambda self: self._duties(silent=True, due=False))
    @rule()
    def past_a_committee_deadline(self):
        rid, _ = self._duties(silent=True, due=False)[0]
        boa.env.time_travel(seconds=self.ao.committee.deadline_of(rid) - boa.env.timestamp + 1)

    @precondition(lambda self: self._duties(silent=True, due=True))
    @rule(data=st.data())
    def penalize_silence(self, data):
        rid, m = data.draw(st.sampled_from(self._duties(silent=True, due=True)))
        before = self.ao.committee.deposit_of(m)
        with boa.env.prank(self.w.stranger):
            self.ao.committee.penalize(rid, m)
        assert self.ao.committee.deposit_of(m) == before - before * 5_000 // 10_000
        _seen("a silent member penalized")

    @precondition(lambda self: self._expirable())
    @rule(data=st.data())
    def expire(self, data):
        rid = data.draw(st.sampled_from(self._expirable()))
        state = self._state(rid)
        with boa.env.prank(self.w.stranger):
            self.ao.oracle.expire(rid)
        _seen(f"expired from state {state}")

    @precondition(lambda self: self._refundable_in_escrow())
    @rule(data=st.data())
    def stranger_refunds_in_the_escrow(self, data):
        rid = data.draw(st.sampled_from(self._refundable_in_escrow()))
        self.w.escrow.refund(rid)
        _seen("refunded in the escrow by a stranger")

    @rule(seconds=st.sampled_from([30, 300, 601, 601, 3_601, h.DAY + 1, 23 * h.DAY]))
    def time_passes(self, seconds):
        boa.env.time_travel(seconds=seconds)

    def _credited(self):
        return [a for a in sorted(self.actors) if self.ao.oracle.balance_of(a)]

    @precondition(lambda self: self._credited())
    @rule(data=st.data())
    def withdraw(self, data):
        who = data.draw(st.sampled_from(self._credited()))
        with boa.env.prank(self.w.stranger):
            self.ao.oracle.withdraw_for(who)
        _seen("withdrawn")

    # --------------------------------------------------------- invariants

    @invariant()
    def oracle_holds_exactly_what_it_owes(self):
        x.assert_conserved(self.ao, self.rids)

    @invariant()
    def committee_holds_exactly_deposits_and_credits(self):
        c = self.ao.committee
        members = [m.address for m in self.ao.members] + [a.address for a in self.w.agents]
        assert c.total_deposits() == sum(c.deposit_of(m) for m in members)
        assert (
            boa.env.get_balance(c.address)
            == c.total_deposits() + c.total_credits()
            == c.total_deposits() + c.credit_of(self.w.treasury)
        )

    @invariant()
    def delivered_at_most_once_and_only_when_final(self):
        for rid, n in self.delivered.items():
            assert n == 1 and self._state(rid) == x.FINAL

    # -------------------------------------------------------------- drain

    def _drain(self):
        boa.env.time_travel(seconds=30 * h.DAY)
        for rid in self.rids:
            if self._state(rid) in (x.REQUESTED, x.PROVISIONAL, x.CHALLENGED):
                with boa.env.prank(self.w.stranger):
                    self.ao.oracle.expire(rid)
        x.assert_conserved(self.ao, self.rids)
        o = self.ao.oracle
        assert (o.total_held(), o.total_open_fees()) == (0, 0)
        for who in sorted(self.actors):
            if o.balance_of(who):
                o.withdraw_for(who)
        assert o.total_credited() == 0
        assert boa.env.get_balance(o.address) == 0 and self.w.escrow.balance_of(o.address) == 0
        # The committee: every silence penalized, the treasury paid, every member out with its deposit.
        c = self.ao.committee
        for rid, m in self._duties(silent=True, due=True):
            c.penalize(rid, m)
        if c.credit_of(self.w.treasury):
            with boa.env.prank(self.w.treasury):
                c.withdraw()
        for m in self.ao.members:
            with boa.env.prank(m.address):
                c.leave(1)
                c.withdraw_deposit(c.deposit_of(m.address))
        assert c.total_deposits() == c.total_credits() == 0 and boa.env.get_balance(c.address) == 0


TestAIOracleState = AIOracleMachine.TestCase
TestAIOracleState.settings = settings(
    max_examples=int(os.environ.get("AIORACLE_SM_EXAMPLES", "25")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
