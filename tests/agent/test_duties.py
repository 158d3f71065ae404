"""Committee duties read on-chain by the agent itself (compute_agent/duties.py), on a real Anvil
deployment: who has a duty, with which model and input, until when; what an agent refuses
whatever the oracle offers; and the watcher's cursor and retries."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.ai_oracle_gas import ANSWER, PROMPT, Bench, file_digest
from bench.chain import deployed_chain
from compute_agent.block_ranges import BlockRanges
from compute_agent.client import JobClient
from compute_agent.duties import DutyWatcher, duty_for
from compute_agent.service import Agent
from tributa.ai_oracle import PostedResult
from tributa.catalog import ModelCatalog
from tributa.chain.eip712 import sign_result
from tributa.store import cid_of_bytes, cid_to_digest, open_store


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("duties")
    with deployed_chain(root) as (_, contracts, s):
        b = Bench(contracts, s)
        rid, _ = b.ask(b.slow)
        b.fulfill(rid)
        provisional, _ = b.ask(b.slow)
        b.fulfill(provisional)
        candidates, _ = b.challenge(rid)
        committee = contracts.committee.functions.committee_of(candidates, [b.agent.address]).call()
        by_address = {m.address: m for m in b.members}
        yield SimpleNamespace(
            contracts=contracts,
            s=s,
            b=b,
            rid=rid,
            provisional=provisional,
            candidates=candidates,
            members=[by_address[a] for a in committee],
            spares=[by_address[a] for a in candidates if a not in committee],
            store=open_store(root / "store"),
        )


def agent_of(world, signer) -> Agent:
    client = JobClient("http://127.0.0.1:9", signer.account, world.contracts.chain_id, world.contracts.escrow.address)
    return Agent(world.contracts, signer, ModelCatalog(world.store), client, world.store, executor=None)


def test_duty_for__a_committee_member__gets_the_on_chain_model_input_and_deadline_and_nobody_else_does(world):
    c, rid = world.contracts, world.rid
    duty = duty_for(c, world.members[0].address, rid)
    assert (duty.request_id, duty.model_id, duty.input_bytes) == (rid, world.b.slow, PROMPT)
    assert duty.resolve_by == c.committee.functions.deadline_of(rid).call()
    assert duty_for(c, world.b.agent.address, rid) is None  # the original agent judges no one
    assert all(duty_for(c, spare.address, rid) is None for spare in world.spares)  # drawn, not on the committee
    assert duty_for(c, world.s["requester"].address, rid) is None
    assert duty_for(c, world.members[0].address, world.provisional) is None  # nobody challenged it


def test_offer__a_posted_request_not_this_agents_duty__refused_before_any_signature_and_an_ordinary_task_is_not(world):
    member, outsider = agent_of(world, world.members[1]), agent_of(world, world.s["requester"])
    duty, refusal = member._duty_of_offer(world.rid)
    assert refusal is None and duty.input_bytes == PROMPT  # the chain's input, whatever an offer carries
    for agent, rid in ((member, world.provisional), (outsider, world.rid)):
        duty, refusal = agent._duty_of_offer(rid)
        assert duty is None and "awaits no result from this agent" in refusal, refusal
    assert member._duty_of_offer(10**12) == (None, None)  # not an AIOracle request: an ordinary job


def test_duty_watcher__hands_a_duty_until_its_verdict_is_on_chain_and_backs_off_after_a_failure(world):
    c, rid, member = world.contracts, world.rid, world.members[2]
    watcher = DutyWatcher(c, member.address)
    (duty,) = watcher.due(limit=5)
    assert duty.request_id == rid
    assert watcher.due(busy={rid}, limit=5) == []  # being answered
    watcher.failed(rid, "the rescoring crashed")
    assert watcher.due(limit=5) == []  # backing off
    assert all(DutyWatcher(c, spare.address).due(limit=5) == [] for spare in world.spares)

    digest = file_digest(ANSWER)
    signature = sign_result(member.account, c.chain_id, c.escrow.address, rid, digest)
    member.transact(c.committee.functions.post_verdict(rid, digest, signature))
    assert DutyWatcher(c, member.address).due(limit=5) == []  # its verdict is on-chain
    # The oracle's lease of it still gets the answer, so that the oracle counts it too.
    assert agent_of(world, member)._duty_of_offer(rid)[0].request_id == rid


def test_block_ranges__a_range_not_marked_done__is_handed_out_again(world):
    w3 = world.contracts.w3
    ranges = BlockRanges(w3, 1, every_s=0)
    first = ranges.take()
    assert first == (1, w3.eth.block_number)
    assert ranges.take() == first  # the query failed: the same range again, never skipped
    ranges.done(first)
    assert ranges.take() is None  # nothing new
    behind = BlockRanges(w3, 1, every_s=0, max_span=2)  # a node that refuses wide log ranges
    assert behind.take() == (1, 2)
    behind.done((1, 2))
    assert behind.take() == (3, 4)  # catching up a range per check


@pytest.mark.parametrize("form", ["v0", "v1"])
def test_posted_result__a_cid_output__is_read_by_its_digest_in_either_form_the_contract_takes(form):
    data = b"x" * 2000
    digest = cid_to_digest(cid_of_bytes(data))
    output = (b"\x12\x20" if form == "v0" else b"\x01\x70\x12\x20") + digest
    fetched = []
    posted = PostedResult(7, digest, output, True, b"")
    assert posted.output_bytes(lambda cid: fetched.append(cid) or data) == data
    assert fetched == [str(cid_of_bytes(data))]
    with pytest.raises(ValueError, match="not a CIDv0 or dag-pb CIDv1"):
        PostedResult(7, digest, b"\x01\x55\x12\x20" + digest, True, b"").output_bytes(lambda cid: data)
