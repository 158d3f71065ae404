"""Deciding a task's result from its agents' answers: majority, slashing, re-execution.

Greedy decoding on the same weights gives the same bytes, and embedding outputs are
rounded to a stated tolerance before hashing, so agents' results compare by digest.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Protocol

from oracle.db import Job, JobState, Task

# Re-executes a task on the oracle's own copy of the model: input CID -> output bytes.
Reexecute = Callable[[Task], bytes]


class ResultStore(Protocol):
    def put_bytes(self, data: bytes): ...


@dataclass(frozen=True)
class Verdict:
    """What settles: the result, the agents paid for it and the agents slashed."""

    result_digest: str | None  # None: no result can be trusted; the task fails
    result_cid: str | None
    paid: list[Job] = field(default_factory=list)
    slashed: list[str] = field(default_factory=list)
    source: str = "majority"  # majority | spot_check | reexecution | no_majority
    note: str = ""


def spot_check_selected(task_id: int, fraction: float, seed: bytes) -> bool:
    """A deterministic draw (so a restarted oracle draws the same), unpredictable without the seed."""
    if fraction <= 0:
        return False
    draw = int.from_bytes(hashlib.sha256(seed + task_id.to_bytes(32, "big")).digest()[:8], "big")
    return draw < fraction * 2**64


def decide(
    task: Task,
    jobs: list[Job],
    reexecute: Reexecute | None,
    digest_of: Callable[[bytes], tuple[str, str]],
    spot_check: bool = False,
) -> Verdict:
    """The verdict for a task from all its jobs.

    `digest_of(output)` stores output bytes and returns (cid, 0x-digest).
    """
    answered = [j for j in jobs if j.state == JobState.SUBMITTED]
    missed = sorted({j.agent for j in jobs if j.state == JobState.EXPIRED} - {j.agent for j in answered})
    if not answered:
        return Verdict(None, None, [], [], "no_majority", "no agent answered")
    counts = Counter(j.result_digest for j in answered)
    top, votes = counts.most_common(1)[0]
    needed = task.k // 2 + 1
    tied = len(counts) > 1 and list(counts.values()).count(votes) > 1

    if votes >= needed and not tied and not spot_check:
        return _verdict_for(top, answered, missed, "majority")
    if reexecute is None:
        if votes >= needed and not tied:
            return _verdict_for(top, answered, missed, "majority", "spot check skipped: oracle cannot re-execute")
        return Verdict(None, None, [], [], "no_majority", f"no majority among {len(answered)} answers and no re-execution")
    cid, digest = digest_of(reexecute(task))
    source = "spot_check" if spot_check and votes >= needed and not tied else "reexecution"
    verdict = _verdict_for(digest, answered, missed, source)
    if not verdict.paid:  # every agent disagreed with the oracle's own run: it settles with its result
        return Verdict(digest, cid, [], verdict.slashed, source, "no agent matched the oracle's re-execution")
    return verdict


def _verdict_for(digest: str, answered: list[Job], missed: list[str], source: str, note: str = "") -> Verdict:
    paid = sorted((j for j in answered if j.result_digest == digest), key=lambda j: j.id)
    wrong = sorted({j.agent for j in answered if j.result_digest != digest})
    cid = paid[0].result_cid if paid else None
    return Verdict(digest, cid, paid, wrong + missed, source, note)
