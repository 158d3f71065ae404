"""Committee duties read from the chain by the agent itself: the AIOracle challenges whose drawn
committee includes this agent and that still lack its verdict.

The oracle leases a challenged request to its committee too, but an oracle that withheld the
duty would leave its members silent (and penalized) and let the posted result stand, deciding
alone. So the agent reads `Challenged` itself, takes the model and input from the request's
event (they are on-chain) and posts its verdict on-chain (Agent.answer_duty). A duty the oracle
leases is checked the same way (`duty_for`): the oracle's word changes neither the input nor who
sits on the committee.

A duty that cannot be read or answered now (a node's hiccup, a crash of the rescoring) is tried
again, backing off, until its committee deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from compute_agent.block_ranges import BlockRanges
from tributa.ai_oracle import CHALLENGED, find_logs, original_agents, posted_result, request_state
from tributa.chain.contracts import Contracts
from tributa.errors import TributaError

log = logging.getLogger("tributa.agent.duties")

CHECK_EVERY_S = 5.0  # a committee window is an hour by default; a duty found within seconds is plenty
RETRY_MAX_S = 60.0
# Challenges older than this many blocks at start-up are not looked for (a day at 12 s blocks,
# against a default committee window of an hour).
LOOKBACK_BLOCKS = 7_200


class DutyUnreadable(TributaError):
    """The chain does not tell this agent's duty on a challenge now (tried again later)."""


@dataclass(frozen=True)
class Duty:
    request_id: int
    model_id: int
    input_bytes: bytes
    resolve_by: int  # the committee deadline (chain time)


def duty_for(
    contracts: Contracts,
    agent: str,
    request_id: int,
    challenged_at: int | None = None,
    answered_too: bool = False,
) -> Duty | None:
    """`agent`'s duty on challenged request `request_id`, all read on-chain; None when it has
    none (not challenged, not on the committee, or, unless `answered_too`, its verdict is already
    posted; once resolved, only a member recorded silent, which may still prove it answered before
    the deadline). DutyUnreadable when the chain cannot tell now. `challenged_at`: the Challenged
    event's block. `answered_too`: the oracle's lease of a duty already answered on-chain still
    gets the answer, so the oracle counts it."""
    if contracts.ai_oracle is None or contracts.committee is None:
        return None  # a deployment without AIOracle: no committees, no duties
    agent = contracts.w3.to_checksum_address(agent)
    committee = contracts.committee.functions
    if not answered_too and committee.posted_digest(request_id, agent).call() != bytes(32):
        return None
    state = request_state(contracts, request_id)
    if state != CHALLENGED:
        # Resolved: only a member recorded silent may still prove it answered, until the deadline.
        if state == 0 or not committee.silent(request_id, agent).call():
            return None
        if contracts.w3.eth.get_block("latest")["timestamp"] > committee.deadline_of(request_id).call():
            return None
    tip = contracts.w3.eth.block_number
    challenge = find_logs(contracts, contracts.ai_oracle.events.Challenged, request_id, challenged_at or tip)
    if challenge is None:
        raise DutyUnreadable(f"request {request_id}: no Challenged event found")
    candidates = list(challenge.args.candidates)
    if agent not in candidates:
        return None
    posted = posted_result(contracts, request_id, challenge.blockNumber)
    originals = None if posted is None else original_agents(contracts, posted)
    if originals is None:
        raise DutyUnreadable(f"request {request_id}: its posted settlement is unreadable, so the committee is unknown")
    if agent not in committee.committee_of(candidates, originals).call():
        return None  # drawn as a spare: the committee is the first three non-original candidates
    asked = find_logs(contracts, contracts.ai_oracle.events.AICallbackRequest, request_id, challenge.blockNumber)
    if asked is None:
        raise DutyUnreadable(f"request {request_id}: no AICallbackRequest event found for its input")
    return Duty(request_id, int(asked.args.model_id), bytes(asked.args.input), int(challenge.args.resolve_by))


@dataclass
class _Pending:
    challenged_at: int
    resolve_by: int
    next_try: float = 0.0
    tries: int = 0


@dataclass
class DutyWatcher:
    contracts: Contracts
    agent: str
    from_block: int | None = None
    _pending: dict[int, _Pending] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.agent = self.contracts.w3.to_checksum_address(self.agent)
        start = max(self.contracts.deployment.block_number, self.contracts.w3.eth.block_number - LOOKBACK_BLOCKS)
        self._blocks = BlockRanges(
            self.contracts.w3, start if self.from_block is None else self.from_block, CHECK_EVERY_S
        )

    def due(self, busy: AbstractSet[int] = frozenset(), limit: int = 1) -> list[Duty]:
        """Up to `limit` duties to answer now, none in `busy` (being answered). A duty comes back
        until its verdict is on-chain (`failed` spaces its retries), or its deadline passes."""
        if self.contracts.ai_oracle is None or self.contracts.committee is None:
            return []
        try:
            self._read_challenges()
        except Exception as exc:  # noqa: BLE001 -- a refused or failed query: read again next time; the pending still run
            log.warning("reading Challenged events failed (read again in %.0fs): %s", CHECK_EVERY_S, exc)
        now = time.time()
        duties: list[Duty] = []
        for rid, pending in sorted(self._pending.items()):
            if len(duties) >= limit:
                break
            if rid in busy or pending.next_try > time.monotonic():
                continue
            if now > pending.resolve_by + CHECK_EVERY_S:  # the chain's clock may trail the wall's a little
                del self._pending[rid]
                continue
            try:
                duty = duty_for(self.contracts, self.agent, rid, pending.challenged_at)
            except Exception as exc:  # a node hiccup or an unreadable settlement: again later, until the deadline  # noqa: BLE001
                self.failed(rid, f"{type(exc).__name__}: {exc}")
                continue
            if duty is None:  # resolved, not this agent's, or its verdict is on-chain
                del self._pending[rid]
            else:
                duties.append(duty)
        return duties

    def failed(self, request_id: int, why: str, again: bool = True) -> None:
        """The duty could not be answered now: try again after a backoff (or, `again` False, a
        failure that would only repeat: never)."""
        pending = self._pending.get(request_id)
        if pending is None:
            return
        if not again:
            del self._pending[request_id]
            log.error("committee duty on request %s given up: %s", request_id, why)
            return
        pending.tries += 1
        delay = min(RETRY_MAX_S, CHECK_EVERY_S * 2 ** (pending.tries - 1))
        pending.next_try = time.monotonic() + delay
        log.warning("committee duty on request %s not answered (%s): trying again in %.0fs", request_id, why, delay)

    def _read_challenges(self) -> None:
        ai_oracle = self.contracts.ai_oracle
        blocks = self._blocks.take()
        if ai_oracle is None or blocks is None:
            return
        events = ai_oracle.events.Challenged.get_logs(from_block=blocks[0], to_block=blocks[1])
        self._blocks.done(blocks)  # only once read: a refused query reads the same range again
        for ev in events:
            if self.agent in ev.args.candidates and int(ev.args.request_id) not in self._pending:
                self._pending[int(ev.args.request_id)] = _Pending(ev.blockNumber, int(ev.args.resolve_by))
                log.info(
                    "request %s challenged: this agent is among its candidates (verdicts due by %s)",
                    ev.args.request_id,
                    ev.args.resolve_by,
                )
