"""Committee duties read from the chain by the agent itself: the AIOracle challenges whose drawn
committee includes this agent and that still lack its verdict.

The oracle leases a challenged request to its committee too, but an oracle that withheld the
duty would leave its members silent (and penalized) and let the posted result stand, deciding
alone. So the agent reads `Challenged` itself, takes the input from the request's event (it is
on-chain) and posts its verdict on-chain (Agent.answer_duty)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from compute_agent.block_ranges import BlockRanges
from tributa.ai_oracle import CHALLENGED, original_agents, posted_result, request_input, request_state
from tributa.chain.contracts import Contracts

log = logging.getLogger("tributa.agent.duties")

CHECK_EVERY_S = 5.0  # a committee window is an hour by default; a duty found within seconds is plenty
# Challenges older than this many blocks at start-up are not looked for (a day at 12 s blocks,
# against a default committee window of an hour): a node may refuse an unbounded log range.
LOOKBACK_BLOCKS = 7_200


@dataclass(frozen=True)
class Duty:
    request_id: int
    model_id: int
    input_bytes: bytes
    resolve_by: int  # the committee deadline (chain time)


class DutyWatcher:
    def __init__(self, contracts: Contracts, agent: str, from_block: int | None = None) -> None:
        self.contracts = contracts
        self.agent = contracts.w3.to_checksum_address(agent)
        start = max(contracts.deployment.block_number, contracts.w3.eth.block_number - LOOKBACK_BLOCKS)
        self._blocks = BlockRanges(contracts.w3, start if from_block is None else from_block, CHECK_EVERY_S)
        self._handed: set[int] = set()  # requests already returned as duties

    def due(self, force: bool = False) -> list[Duty]:
        """New challenges this agent must answer (at most every CHECK_EVERY_S)."""
        if self.contracts.ai_oracle is None or self.contracts.committee is None:
            return []
        blocks = self._blocks.take(force)
        if blocks is None:
            return []
        events = self.contracts.ai_oracle.events.Challenged.get_logs(from_block=blocks[0], to_block=blocks[1])
        duties = []
        for ev in events:
            rid = int(ev.args.request_id)
            if rid in self._handed or self.agent not in ev.args.candidates:
                continue
            duty = self._duty(rid, list(ev.args.candidates), int(ev.args.resolve_by))
            if duty is not None:
                self._handed.add(rid)
                duties.append(duty)
        return duties

    def _duty(self, rid: int, candidates: list[str], resolve_by: int) -> Duty | None:
        committee = self.contracts.committee.functions
        if request_state(self.contracts, rid) != CHALLENGED or committee.posted_digest(rid, self.agent).call() != bytes(32):
            return None  # resolved already, or this agent's verdict is on-chain
        posted = posted_result(self.contracts, rid)
        originals = None if posted is None else original_agents(self.contracts, posted)
        if originals is None:
            log.warning("request %s: its posted settlement is unreadable, so this agent cannot tell its committee", rid)
            return None
        if self.agent not in committee.committee_of(candidates, originals).call():
            return None  # drawn as a spare: the committee is the first three non-original candidates
        found = request_input(self.contracts, rid)
        if found is None:
            log.warning("request %s: no AICallbackRequest event found for its input", rid)
            return None
        log.info("request %s challenged: this agent is on its committee (verdict due by %s)", rid, resolve_by)
        return Duty(rid, found[0], found[1], resolve_by)
