"""The agent's own slashes, read from the escrow's AgentSlashed events: each is logged once with
its task and amount, and counted (`tributa_agent_slashes_total`, `tributa_agent_slashed_wei_total`),
so an operator learns of a slash from the agent itself, not only from the chain."""

from __future__ import annotations

import logging

from compute_agent.block_ranges import BlockRanges
from tributa.chain.contracts import Contracts

log = logging.getLogger("tributa.agent.slashes")

CHECK_EVERY_S = 30.0  # slashes are rare; one log query per half minute is plenty


class SlashWatcher:
    def __init__(self, contracts: Contracts, agent: str, metrics, from_block: int | None = None) -> None:
        self.contracts = contracts
        self.agent = agent
        self.metrics = metrics
        # From now on by default: slashes before this start were reported by earlier runs.
        start = contracts.w3.eth.block_number + 1 if from_block is None else from_block
        self._blocks = BlockRanges(contracts.w3, start, CHECK_EVERY_S)
        self.seen: list[tuple[int, int]] = []  # (task_id, wei)

    def check(self, force: bool = False) -> list[tuple[int, int]]:
        """New slashes of this agent since the last check (at most every CHECK_EVERY_S)."""
        blocks = self._blocks.take(force)
        if blocks is None:
            return []
        events = self.contracts.escrow.events.AgentSlashed.get_logs(
            from_block=blocks[0], to_block=blocks[1], argument_filters={"agent": self.agent}
        )
        self._blocks.done(blocks)  # only once read: a refused query reads the same range again
        found = [(e["args"]["task_id"], e["args"]["amount"]) for e in events]
        for task_id, amount in found:
            log.warning(
                "this agent was slashed %s wei on task %s (see `tributa task show %s`)", amount, task_id, task_id
            )
            self.metrics.slashes.inc()
            self.metrics.slashed_wei.inc(amount)
        self.seen.extend(found)
        return found
