"""Stateless properties of TaskEscrow's packed task words and of its fee split
(hypothesis, on the real contract).

Task word A packs requester (160 bits) | deadline (40) | k (8) | state (8) |
protocol bps (16) | data bps (16) | slashable (1); word B packs fee (96) |
model fee (96) | model id (64). The properties:

* whatever goes in at post time comes back out of `task`, `task_fee_shares`
  and `task_slashable`, at the extremes of every field too (a requester of
  all ones, a fee of 2**96 - 1, the latest deadline, 5000 bps), so no field
  bleeds into its neighbour;
* the state transitions (fail_task, refund) rewrite the state and nothing
  else (the packing functions themselves, contracts/modules/task_packing.vy, are
  fuzzed bit by bit in test_task_packing.py);
* the slashable bit is exactly fee >= min_slash_fee and deadline - now >=
  MIN_SLASH_WINDOW;
* the settlement split never underflows for any bps within the limits and
  any agent fee up to what is left, and its parts sum to the fee.
"""

from __future__ import annotations

import boa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contracts import helpers as h

MASK_96 = 2**96 - 1
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

_WORLD: list = []


@pytest.fixture(scope="module", autouse=True)
def _world():
    s = h.deploy_system()
    publisher = h.funded_address("fz-publisher")
    h.register_dataset(s.registry, publisher, 3, label="fz-1")
    h.register_dataset(s.registry, publisher, 2, label="fz-2")
    model_id = h.register_model(s.registry, publisher, fee=0, name="fz-free")
    _WORLD[:] = [(s, publisher, model_id)]
    yield
    _WORLD.clear()


def shares():
    """(protocol bps, data bps) within MAX_FEE_SHARES_BPS, extremes included."""
    return st.integers(0, 5000).flatmap(
        lambda p: st.tuples(st.just(p), st.sampled_from([0, 5000 - p]) | st.integers(0, 5000 - p))
    )


# ------------------------------------------------------------ word A / word B


@SETTINGS
@given(
    requester=st.sampled_from([2**160 - 1, 1]) | st.integers(1, 2**160 - 1),
    offset=st.sampled_from([1, 59, 60, 30 * h.DAY]) | st.integers(1, 30 * h.DAY),
    k=st.integers(1, 5),
    bps=shares(),
    fee=st.sampled_from([1, MASK_96]) | st.integers(1, MASK_96),
    min_slash_fee=st.sampled_from([0, MASK_96]) | st.integers(0, MASK_96),
)
def test_post_task__any_fields__round_trip_without_bleeding(requester, offset, k, bps, fee, min_slash_fee):
    s, _, model_id = _WORLD[0]
    e = s.escrow
    with boa.env.anchor():
        with boa.env.prank(s.owner):
            e.set_params(bps[0], bps[1], h.SLASH_BPS, h.MIN_STAKE, h.UNBONDING_DELAY)
            e.set_min_slash_fee(min_slash_fee)
        who = "0x" + requester.to_bytes(20, "big").hex()
        boa.env.set_balance(who, fee)
        deadline = boa.env.timestamp + offset
        tid = h.post_task(e, who, model_id=model_id, fee=fee, k=k, deadline=deadline, max_model_fee=0)
        expected = (who.lower(), model_id, h.digest("input"), fee, 0, deadline, k)
        got = e.task(tid)
        assert (got[0].lower(), *got[1:7]) == expected and got[7] == h.OPEN
        assert e.task_fee_shares(tid) == bps
        assert e.task_slashable(tid) == (fee >= min_slash_fee and offset >= 60)
        # state transitions rewrite the state bits only
        with boa.env.prank(s.oracle):
            e.fail_task(tid, "fz", [])
        assert e.task(tid)[:7] == got[:7] and e.task(tid)[7] == h.FAILED
        e.refund(tid)
        assert e.task(tid)[:7] == got[:7] and e.task(tid)[7] == h.REFUNDED
        assert e.task_fee_shares(tid) == bps
        assert e.task_slashable(tid) == (fee >= min_slash_fee and offset >= 60)


# ----------------------------------------------------------------- fee split


@SETTINGS
@given(
    bps=shares(),
    fee=st.integers(1, 10**21),
    model_part=st.floats(0, 1),
    agent_part=st.floats(0, 1),
    n_agents=st.integers(0, 3),
    datasets=st.sampled_from([([], []), ([1], [10_000]), ([1, 2], [1, 9_999]), ([2, 1], [3333, 6667])]),
)
def test_settle__any_split__sums_to_fee_without_underflow(bps, fee, model_part, agent_part, n_agents, datasets):
    s, publisher, _ = _WORLD[0]
    e = s.escrow
    pbps, dbps = bps
    protocol, data = fee * pbps // h.BPS, fee * dbps // h.BPS
    model_fee = int((fee - protocol - data) * model_part)
    model_fee = min(model_fee, fee - protocol - data)
    with boa.env.anchor():
        with boa.env.prank(s.owner):
            e.set_params(pbps, dbps, h.SLASH_BPS, h.MIN_STAKE, h.UNBONDING_DELAY)
        receiver = boa.env.generate_address("fz-receiver")
        model_id = h.register_model(s.registry, publisher, fee=model_fee, receiver=receiver, name="fz-priced")
        agents = [h.new_account() for _ in range(n_agents)]
        for a in agents:
            h.register_agent(e, a, models=[model_id])
        requester = h.funded_address("fz-requester", fee + 10**18)
        tid = h.post_task(e, requester, model_id=model_id, fee=fee, k=5, max_model_fee=model_fee)
        left = fee - protocol - data - model_fee
        assert left >= 0
        agent_fee = int(left * agent_part) if agents else 0
        with boa.env.prank(s.oracle):
            e.settle(
                h.settlement(
                    tid, agents=agents, agent_fee=agent_fee, dataset_ids=datasets[0], weights=datasets[1], escrow=e
                )
            )
        (log,) = h.events(e, "TaskSettled")
        parts = (log.agent_fee, log.model_fee, log.data_share, log.protocol_fee, log.refund)
        assert min(parts) >= 0 and sum(parts) == fee
        assert log.protocol_fee == protocol and log.model_fee == model_fee
        assert log.data_share == (data if datasets[0] else 0)
        assert log.agent_fee == (agent_fee // n_agents * n_agents if agents else 0)
        assert boa.env.get_balance(e.address) == e.total_open_fees() + e.total_credited() + e.total_staked()
