"""TaskEscrow state machine: random posts, settlements (single and batched, valid
and invalid), failures, refunds, withdrawals, stakes, unbonding (to zero, or
to at least the minimum) and slashing by signed proofs (expired leases in
fail_task and settle, conflicting results in settle; forged ones rejected),
checked against a Python model of every balance. Model 2's fee receiver is
locked by an "IMO" to a contract that accepts or reverts at random: its fee is
pushed at settlement, or credited when the push fails.

Invariants after every step:
  * escrow ETH balance == total_open_fees + total_credited + total_staked;
  * each running total, each credited balance and each agent stake equals the model;
  * the vault holds exactly the data shares the model expects;
  * the locked receiver holds exactly the fees pushed into it.
At the end every task is settled or refunded, every balance and every stake is
withdrawn, and the escrow holds zero wei: nothing is ever stuck.
"""

from __future__ import annotations

import os
from collections import defaultdict

import boa
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.contracts import helpers as h

BPS = 10_000
PBPS, DBPS, SLASH = 500, 1_000, 2_500
MIN_STAKE = 10**15
DELAY = h.UNBONDING_DELAY  # the shortest the escrow accepts
MODEL_FEE = 10**14
OPEN, SETTLED, FAILED, REFUNDED = 1, 2, 3, 4


_WORLD: list = []

RECEIVER = """
# pragma version ~=0.4.3
reject: public(bool)
@external
def set_reject(reject: bool):
    self.reject = reject
@external
@payable
def __default__():
    assert not self.reject, "no"
"""


@pytest.fixture(scope="module", autouse=True)
def _deployed_world():
    """Deployed once per module, before any example; each example then runs
    inside its own anchor, so examples never see each other's state."""
    _WORLD[:] = [_deploy_world()]
    yield
    _WORLD.clear()


def _deploy_world():
    s = h.deploy_system(PBPS, DBPS, SLASH, MIN_STAKE, DELAY)
    data_owner = h.funded_address("sm-data-owner")
    h.register_dataset(s.registry, data_owner, 3, label="sm-1")
    h.register_dataset(s.registry, data_owner, 10, label="sm-2")
    publisher = h.funded_address("sm-publisher")
    receiver = boa.env.generate_address("sm-receiver")
    h.register_model(s.registry, publisher, fee=MODEL_FEE, receiver=receiver)
    h.register_model(s.registry, publisher, fee=MODEL_FEE, receiver=receiver, name="sm-imo")
    token = boa.loads(RECEIVER)
    launcher = boa.env.generate_address("sm-launcher")
    with boa.env.prank(s.owner):
        s.registry.set_imo_launcher(launcher)
    with boa.env.prank(launcher):
        if hasattr(s.registry, "end_imo"):
            s.registry.begin_imo(2)
            s.registry.end_imo(2, token.address)
        else:
            s.registry.set_fee_receiver(2, token.address)
    assert s.registry.fee_receiver_locked(2)
    requesters = [h.funded_address(f"sm-requester-{i}") for i in range(2)]
    agents = [h.new_account() for _ in range(4)]
    return s, receiver, token, requesters, agents


class EscrowMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.sys, self.receiver, self.token, self.requesters, self.agents = _WORLD[0]
        self.e = self.sys.escrow
        self.pushed = 0  # wei pushed into the locked receiver
        self.tasks: dict[int, dict] = {}
        self.balances: dict[str, int] = defaultdict(int)
        self.stakes: dict[str, list[int]] = {}  # addr -> [stake, unbonding, unbond_at]
        self.vault_credited = 0

    def teardown(self):
        try:
            self.token.set_reject(False)
            self._drain()
        finally:
            self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------ helpers

    def _actors(self):
        return [
            *self.requesters,
            *(a.address for a in self.agents),
            self.receiver,
            self.sys.treasury,
            self.token.address,
        ]

    def _open_tasks(self):
        return [t for t, x in self.tasks.items() if x["state"] == OPEN]

    def _settleable(self):
        now = boa.env.timestamp
        return [t for t in self._open_tasks() if now <= self.tasks[t]["deadline"]]

    def _credit(self, who, amount):
        self.balances[str(who)] += amount

    def _expected_valid(self, tid, agents, slashed, agent_fee, datasets, weights, bad_sig, bad_proof):
        t = self.tasks.get(tid)
        if t is None or t["state"] != OPEN or boa.env.timestamp > t["deadline"]:
            return False
        if len(agents) + len(slashed) > t["k"]:
            return False
        if not agents and agent_fee:
            return False
        if any(a.address not in self.stakes for a in [*agents, *slashed]):
            return False
        if any(self.stakes[a.address][0] < MIN_STAKE for a in agents):
            return False
        if bad_sig and agents:
            return False
        if slashed and (not t["slashable"] or bad_proof):
            return False
        if datasets and (any(d not in (1, 2) for d in datasets) or sum(weights) != BPS):
            return False
        fee = t["fee"]
        return agent_fee <= fee - fee * PBPS // BPS - fee * DBPS // BPS - MODEL_FEE

    def _apply_model(self, tid, agents, slashed, agent_fee, datasets, weights):
        t = self.tasks[tid]
        fee = t["fee"]
        protocol, data = fee * PBPS // BPS, fee * DBPS // BPS
        self._credit(self.sys.treasury, protocol)
        if t["model"] == 1:
            self._credit(self.receiver, MODEL_FEE)
        elif self.token.reject():  # the push fails: credited for pull
            self._credit(self.token.address, MODEL_FEE)
            event("push: failed, credited")
        else:
            self.pushed += MODEL_FEE
            event("push: delivered")
        if slashed:
            event(f"settle: {len(slashed)} slashed")
        if not datasets:
            data = 0
        self.vault_credited += data
        paid = 0
        if agents and agent_fee:
            each = agent_fee // len(agents)
            for a in agents:
                self._credit(a.address, each)
            paid = each * len(agents)
        refund = fee - protocol - MODEL_FEE - data - paid
        self._credit(t["requester"], refund)
        self._slash_model(t, slashed)
        t["state"] = SETTLED

    def _slash_model(self, t, slashed):
        total = half = 0
        for a in slashed:
            st_ = self.stakes[a.address]
            amount = (st_[0] + st_[1]) * SLASH // BPS
            if amount <= st_[0]:
                st_[0] -= amount
            else:
                st_[1] -= amount - st_[0]
                st_[0] = 0
            total += amount
            half += amount // 2
        to_requester = min(half, t["fee"])  # the requester is made whole, no more
        self._credit(t["requester"], to_requester)
        self._credit(self.sys.treasury, total - to_requester)

    def _proof(self, data, tid, agent, forge, lease_only=False):
        """A slash proof for `agent`: an expired lease, or (settle) a signature
        over another result; `forge` signs it with the wrong key."""
        signer = self.agents[(self.agents.index(agent) + 1) % len(self.agents)] if forge else agent
        if lease_only or data.draw(st.booleans(), label="lease"):
            expires = boa.env.timestamp - 1
            return (agent.address, b"\x00" * 32, expires, h.sign_lease(signer, self.e, tid, expires))
        other = h.digest(f"minority-{tid}")
        return (agent.address, other, 0, h.sign_result(signer, self.e, tid, other))

    def _build(self, data, tid):
        # one settlement in four may carry a fault (bad signature, bad datasets,
        # too high an agent fee); the others are well formed
        allow_faults = data.draw(st.integers(0, 3), label="faulty") == 0
        t = self.tasks.get(tid, {"k": 5, "fee": 10**16})
        pool = (
            list(self.agents)
            if allow_faults
            else [a for a in self.agents if a.address in self.stakes and self.stakes[a.address][0] >= MIN_STAKE]
        )
        cap = 5 if allow_faults else t["k"]
        n_agents = data.draw(st.integers(0, min(3, cap, len(pool))), label="n_agents")
        agents = data.draw(st.permutations(pool), label="order")[:n_agents]
        # slashable: any registered agent (a bonded stake is not needed, unbonding
        # stake is slashable too); with faults, any agent and any task
        rest = [a for a in self.agents if a not in agents and (allow_faults or a.address in self.stakes)]
        if not allow_faults and not t.get("slashable", True):
            rest = []
        n_slashed = data.draw(st.integers(0, min(2, len(rest), cap - n_agents)), label="n_slashed")
        slashed = rest[:n_slashed]
        left = t["fee"] - t["fee"] * PBPS // BPS - t["fee"] * DBPS // BPS - MODEL_FEE
        agent_fee = (
            data.draw(st.integers(0, max(left, 0) + (10 if allow_faults else 0)), label="agent_fee") if agents else 0
        )
        datasets, weights = data.draw(
            st.sampled_from(
                [([], []), ([1], [BPS]), ([2, 1], [3333, 6667]), ([1, 2], [5000, 4999]), ([3], [BPS])]
                if allow_faults
                else [([], []), ([1], [BPS]), ([2, 1], [3333, 6667])]
            ),
            label="datasets",
        )
        bad_sig = allow_faults and bool(agents) and data.draw(st.booleans(), label="bad_sig")
        bad_proof = allow_faults and bool(slashed) and data.draw(st.booleans(), label="bad_proof")
        result = h.digest(f"r-{tid}")
        sigs = [h.sign_result(a, self.e, tid, result) for a in agents]
        if bad_sig:
            sigs[0] = h.sign_result(agents[0], self.e, tid, h.digest("forged"))
        proofs = [self._proof(data, tid, a, bad_proof and i == 0) for i, a in enumerate(slashed)]
        s = h.settlement(
            tid,
            agents=[a.address for a in agents],
            signatures=sigs,
            agent_fee=agent_fee,
            slashed=proofs,
            dataset_ids=datasets,
            weights=weights,
            result=result,
        )
        return s, (tid, agents, slashed, agent_fee, datasets, weights, bad_sig, bad_proof)

    # -------------------------------------------------------------- rules

    @initialize(n=st.integers(1, 3))
    def register_some_agents(self, n):
        for a in self.agents[:n]:
            self.register(a.address, MIN_STAKE)

    @initialize(fees=st.lists(st.integers(2 * 10**14, 10**16), min_size=1, max_size=4), k=st.integers(1, 5))
    def post_some_tasks(self, fees, k):
        for i, fee in enumerate(fees):
            self.post(i % 2, fee, k, h.DAY, 1 + i % 2)

    def register(self, addr, stake):
        with boa.env.prank(addr):
            self.e.register_agent([1, 2], 1, 2, b"\x04" + b"\x01" * 64, value=stake)
        self.stakes[addr] = [stake, 0, 0]

    @rule(i=st.integers(0, 3), extra=st.integers(0, 10**15))
    def register_agent(self, i, extra):
        addr = self.agents[i].address
        if addr in self.stakes:
            with boa.env.prank(addr), boa.reverts("escrow: already registered"):
                self.e.register_agent([1], 1, 2, b"\x04", value=MIN_STAKE)
            return
        self.register(addr, MIN_STAKE + extra)

    @rule(
        r=st.integers(0, 1),
        fee=st.one_of(st.integers(1, 2 * 10**14), st.integers(2 * 10**14, 10**16)),
        k=st.integers(1, 5),
        ttl=st.one_of(st.integers(1, 59), st.integers(60, 3 * h.DAY)),
        model=st.integers(1, 2),
    )
    def post(self, r, fee, k, ttl, model):
        requester = self.requesters[r]
        deadline = boa.env.timestamp + ttl
        if fee - fee * PBPS // BPS - fee * DBPS // BPS < MODEL_FEE:
            with boa.env.prank(requester), boa.reverts("escrow: fee below model price"):
                self.e.post_task(model, h.digest("in"), deadline, k, MODEL_FEE, value=fee)
            return
        with boa.env.prank(requester), boa.reverts("escrow: model fee above max"):
            self.e.post_task(model, h.digest("in"), deadline, k, MODEL_FEE - 1, value=fee)
        tid = h.post_task(self.e, requester, model_id=model, fee=fee, k=k, deadline=deadline, max_model_fee=MODEL_FEE)
        slashable = ttl >= 60
        assert self.e.task_slashable(tid) == slashable
        self.tasks[tid] = dict(
            requester=requester, fee=fee, deadline=deadline, k=k, state=OPEN, model=model, slashable=slashable
        )

    @precondition(lambda self: self._settleable())
    @rule(data=st.data())
    def settle_one(self, data):
        tid = data.draw(st.sampled_from(self._settleable()), label="task")
        s, args = self._build(data, tid)
        ok = self._expected_valid(*args)
        with boa.env.prank(self.sys.oracle):
            if ok:
                self.e.settle(s)
            else:
                with boa.reverts():
                    self.e.settle(s)
        if ok:
            self._apply_model(*args[:-2])
        event(f"settle: {'applied' if ok else 'rejected'}")

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def settle_batch(self, data):
        live = self._settleable()
        pick = st.sampled_from(sorted(self.tasks))
        if live:  # mostly tasks that can still be settled, sometimes any task
            pick = st.one_of(st.sampled_from(live), st.sampled_from(live), pick)
        tids = data.draw(st.lists(pick, min_size=1, max_size=4), label="tasks")
        batch, expected = [], []
        for tid in tids:
            s, args = self._build(data, tid)
            ok = self._expected_valid(*args)
            if ok:
                self._apply_model(*args[:-2])  # later entries for the same task see it settled
            batch.append(s)
            expected.append(ok)
        with boa.env.prank(self.sys.oracle):
            flags = self.e.settle_batch(batch)
        assert flags == expected
        for log in self.e.get_logs():
            if type(log).__name__ == "SettlementRejected":
                event(f"rejected: {log.reason}")
        event(f"settle_batch: {sum(flags)} of {len(flags)} applied")

    @precondition(lambda self: self._open_tasks())
    @rule(data=st.data())
    def fail(self, data):
        tid = data.draw(st.sampled_from(self._open_tasks()), label="task")
        t = self.tasks[tid]
        registered = [a for a in self.agents if a.address in self.stakes]
        n = data.draw(st.integers(0, min(len(registered), t["k"])), label="n_silent") if t["slashable"] else 0
        silent = registered[:n]
        forge = bool(silent) and data.draw(st.integers(0, 3), label="forge") == 0
        proofs = [self._proof(data, tid, a, forge and i == 0, lease_only=True) for i, a in enumerate(silent)]
        closed = bool(proofs) and boa.env.timestamp > t["deadline"] + self.e.SLASH_GRACE()
        with boa.env.prank(self.sys.oracle):
            if closed or forge:
                # past the slash window the unbonded stake may be gone: no proof counts
                with boa.reverts("escrow: slash window closed" if closed else "escrow: bad slash proof"):
                    self.e.fail_task(tid, "sm", proofs)
                event("fail: slash window closed" if closed else "fail: forged proof")
                return
            self.e.fail_task(tid, "sm", proofs)
        self._slash_model(t, silent)
        t["state"] = FAILED
        event(f"fail: {n} slashed")

    @rule(reject=st.booleans())
    def toggle_receiver(self, reject):
        self.token.set_reject(reject)

    @precondition(lambda self: self.tasks)
    @rule(data=st.data())
    def refund(self, data):
        tid = data.draw(st.sampled_from(sorted(self.tasks)), label="task")
        t = self.tasks[tid]
        ok = t["state"] == FAILED or (t["state"] == OPEN and boa.env.timestamp > t["deadline"])
        if not ok:
            with boa.reverts():
                self.e.refund(tid)
            return
        self.e.refund(tid)
        t["state"] = REFUNDED
        self._credit(t["requester"], t["fee"])

    @rule(seconds=st.one_of(st.integers(1, 2 * h.DAY), st.just(DELAY)))
    def wait(self, seconds):
        boa.env.time_travel(seconds=seconds)

    @rule(i=st.integers(0, 8), for_other=st.booleans())
    def withdraw(self, i, for_other):
        who = str(self._actors()[i])
        owed = self.balances[who]
        before = boa.env.get_balance(who)
        is_token = who == str(self.token.address)
        for_other = for_other or is_token
        caller = self.requesters[0] if for_other else who
        if is_token and owed and self.token.reject():
            with boa.env.prank(caller), boa.reverts("escrow: transfer failed"):
                self.e.withdraw_for(who)
            return
        if is_token and owed:
            self.pushed += owed
        with boa.env.prank(caller):
            if owed == 0:
                with boa.reverts("escrow: nothing to withdraw"):
                    self.e.withdraw_for(who) if for_other else self.e.withdraw()
                return
            sent = self.e.withdraw_for(who) if for_other else self.e.withdraw()
        assert sent == owed
        assert boa.env.get_balance(who) == before + owed  # paid to the account, whoever called
        self.balances[who] = 0

    @rule(i=st.integers(0, 3), amount=st.integers(1, 10**15))
    def add_stake(self, i, amount):
        addr = self.agents[i].address
        if addr not in self.stakes:
            return
        with boa.env.prank(addr):
            self.e.add_stake(value=amount)
        self.stakes[addr][0] += amount

    @rule(i=st.integers(0, 3), fraction=st.floats(0.01, 1.0))
    def unbond(self, i, fraction):
        addr = self.agents[i].address
        if addr not in self.stakes or self.stakes[addr][0] == 0:
            return
        amount = max(1, int(self.stakes[addr][0] * fraction))
        left = self.stakes[addr][0] - amount
        with boa.env.prank(addr):
            if 0 < left < MIN_STAKE:
                with boa.reverts("escrow: stake left below minimum"):
                    self.e.request_unbond(amount)
                amount = self.stakes[addr][0]  # unbonding everything is always allowed
            self.e.request_unbond(amount)
        event("unbond: to zero" if amount == self.stakes[addr][0] else "unbond: partial")
        st_ = self.stakes[addr]
        st_[0] -= amount
        st_[1] += amount
        st_[2] = boa.env.timestamp + DELAY

    @rule(i=st.integers(0, 3))
    def withdraw_stake(self, i):
        addr = self.agents[i].address
        st_ = self.stakes.get(addr)
        with boa.env.prank(addr):
            if not st_ or st_[1] == 0 or boa.env.timestamp < st_[2]:
                with boa.reverts():
                    self.e.withdraw_stake()
                return
            assert self.e.withdraw_stake() == st_[1]
        st_[1], st_[2] = 0, 0

    # --------------------------------------------------------- invariants

    @invariant()
    def escrow_holds_exactly_what_it_owes(self):
        e = self.e
        open_fees = sum(t["fee"] for t in self.tasks.values() if t["state"] in (OPEN, FAILED))
        credited = sum(self.balances.values())
        staked = sum(s[0] + s[1] for s in self.stakes.values())
        assert (e.total_open_fees(), e.total_credited(), e.total_staked()) == (open_fees, credited, staked)
        assert boa.env.get_balance(e.address) == open_fees + credited + staked

    @invariant()
    def balances_and_stakes_match_model(self):
        for who in self._actors():
            assert self.e.balance_of(who) == self.balances[str(who)]
        for addr, (stake, unbonding, _) in self.stakes.items():
            assert self.e.agent(addr)[:2] == (stake, unbonding)
        assert boa.env.get_balance(self.sys.vault.address) == self.vault_credited == self.sys.vault.total_credited()
        assert boa.env.get_balance(self.token.address) == self.pushed

    @invariant()
    def task_states_match_model(self):
        for tid, t in self.tasks.items():
            assert self.e.task(tid)[7] == t["state"]

    # ------------------------------------------------------------- drain

    def _drain(self):
        """Every task can be closed and every wei withdrawn."""
        boa.env.time_travel(seconds=31 * h.DAY)
        for tid, t in self.tasks.items():
            if t["state"] in (OPEN, FAILED):
                self.e.refund(tid)
                t["state"] = REFUNDED
                self._credit(t["requester"], t["fee"])
        for who in self._actors():
            if self.balances[str(who)]:
                self.e.withdraw_for(who)
                if str(who) == str(self.token.address):
                    self.pushed += self.balances[str(who)]
                self.balances[str(who)] = 0
        for addr, st_ in self.stakes.items():
            with boa.env.prank(addr):
                if st_[0]:
                    self.e.request_unbond(st_[0])
                boa.env.time_travel(seconds=DELAY)
                if st_[0] + st_[1]:
                    self.e.withdraw_stake()
        e = self.e
        assert (e.total_open_fees(), e.total_credited(), e.total_staked()) == (0, 0, 0)
        assert boa.env.get_balance(e.address) == 0


TestEscrowState = EscrowMachine.TestCase
TestEscrowState.settings = settings(
    max_examples=int(os.environ.get("ESCROW_SM_EXAMPLES", "25")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
