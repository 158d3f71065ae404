"""An agent learns of its own slashes: each AgentSlashed event for it is logged once and counted."""

from __future__ import annotations

import logging

from compute_agent.metrics import AgentMetrics
from compute_agent.slashes import SlashWatcher
from tests.helpers import OracleParts, advance_time, ensure_agent, post_raw_task, register_test_model
from tributa.chain.eip712 import sign_lease
from tributa.store import cid as cidlib


def test_slash_watcher__a_silence_slash__logged_once_and_counted_only_for_that_agent(
    contracts, signers, tmp_path, chain_snapshot, caplog
):
    oracle = OracleParts(contracts, signers, tmp_path)
    agent = signers["agent2"]
    model = register_test_model(contracts, signers["publisher"])
    ensure_agent(contracts, agent, [model])
    mine, other = AgentMetrics(), AgentMetrics()
    watcher = SlashWatcher(contracts, agent.address, mine)
    bystander = SlashWatcher(contracts, signers["agent"].address, other)
    task_id = post_raw_task(
        contracts,
        signers["requester"],
        model,
        cidlib.cid_to_digest(str(oracle.store.put_bytes(b'{"prompt":"x"}'))),
        deadline_s=120,
    )
    oracle.ingestor.poll_once()
    offer = oracle.book.lease(agent.address, {model}, oracle.chain_time())
    oracle.book.accept(
        agent.address,
        offer.job_id,
        sign_lease(agent.account, contracts.chain_id, contracts.escrow.address, task_id, offer.lease_expires_at),
    )
    advance_time(contracts.w3, 180)
    oracle.settler.refund_due(oracle.chain_time())
    assert oracle.settler.fail_pending() == 1  # slashes the silent agent

    with caplog.at_level(logging.WARNING, logger="tributa.agent.slashes"):
        found = watcher.check(force=True)
        again = watcher.check(force=True)
    assert len(found) == 1 and found[0][0] == task_id and found[0][1] > 0
    assert again == []  # each slash once
    assert mine.slashes._value.get() == 1 and mine.slashed_wei._value.get() == found[0][1]
    assert [r.getMessage() for r in caplog.records] == [
        f"this agent was slashed {found[0][1]} wei on task {task_id} (see `tributa task show {task_id}`)"
    ]
    assert bystander.check(force=True) == [] and other.slashes._value.get() == 0
