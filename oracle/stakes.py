"""Agents' bonded stake, kept current from the escrow's stake events.

The job book must not lease to an agent whose bonded stake is below min_stake (TaskEscrow
would refuse to pay it, and a slash would take next to nothing). Reading the stake on every
poll would cost an RPC per request, so this watcher follows StakeAdded, UnbondRequested,
StakeWithdrawn, AgentSlashed, AgentRegistered and ParamsSet (min_stake) logs, re-reads
`agent()` for each agent they name (every known agent on ParamsSet) and records the result on
its AgentSeen row (bonded_stake, stake_ok), which `JobBook.lease` already reads.

The state is re-read from the chain, never summed from events, so a reorged event only means
one extra read; the job API's AgentDirectory also re-checks stake every few seconds.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from web3.contract import Contract

from oracle.db import AgentSeen, Cursor, Database
from oracle.ingest import EventDecoder

log = logging.getLogger("tributa.oracle.stakes")

CURSOR_NAME = "stakes"
STAKE_EVENTS = ("StakeAdded", "UnbondRequested", "StakeWithdrawn", "AgentSlashed", "AgentRegistered", "ParamsSet")


class StakeWatcher:
    def __init__(
        self, db: Database, escrow: Contract, start_block: int, confirmations: int = 0, max_blocks: int = 2000
    ) -> None:
        self.db = db
        self.escrow = escrow
        self.w3 = escrow.w3
        self.start_block = start_block
        self.confirmations = confirmations
        self.max_blocks = max(1, max_blocks)
        self.decoder = EventDecoder(escrow, STAKE_EVENTS)

    def poll_once(self) -> int:
        """Read stake events past the cursor and refresh the agents they name; returns how many."""
        head = self.w3.eth.block_number - self.confirmations
        saved = self.db.cursor(CURSOR_NAME)
        start = self.start_block if saved is None else saved + 1
        refreshed = 0
        while start <= head:
            end = min(head, start + self.max_blocks - 1)
            raw = self.w3.eth.get_logs(
                {"address": self.escrow.address, "fromBlock": start, "toBlock": end, "topics": [self.decoder.topics]}
            )
            events = [e for e in (self.decoder.decode(r) for r in raw) if e is not None]
            everyone = any(e.event == "ParamsSet" for e in events)
            agents = {e.args["agent"] for e in events if "agent" in e.args}
            refreshed += self.refresh(agents, everyone)
            with self.db.session() as s:
                cursor = s.get(Cursor, CURSOR_NAME)
                if cursor is None:
                    s.add(Cursor(name=CURSOR_NAME, block_number=end))
                else:
                    cursor.block_number = end
            start = end + 1
        return refreshed

    def refresh(self, agents: set[str], everyone: bool = False) -> int:
        """Re-read the bonded stake of `agents` (of every agent seen, if `everyone`)."""
        with self.db.session() as s:
            rows = {r.agent.lower(): r.agent for r in s.execute(select(AgentSeen)).scalars()}
        wanted = set(rows.values()) if everyone else {rows[a.lower()] for a in agents if a.lower() in rows}
        if not wanted:
            return 0
        min_stake = self.escrow.functions.min_stake().call()
        read = {}
        for agent in wanted:
            onchain = self.escrow.functions.agent(agent).call()
            stake, registered = onchain.stake, onchain.registered
            read[agent] = (int(stake), bool(registered) and stake >= min_stake)
        with self.db.session() as s:
            for agent, (stake, ok) in read.items():
                row = s.get(AgentSeen, agent)
                if row is not None:
                    if row.stake_ok is not False and not ok:
                        log.warning(
                            "agent %s: bonded stake %s below min_stake %s; leasing it nothing", agent, stake, min_stake
                        )
                    row.bonded_stake, row.stake_ok = stake, ok
        return len(read)
