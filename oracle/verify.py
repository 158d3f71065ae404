"""Deciding a task's result from its agents' answers: majority, slashing, re-execution.

Answers compare by the acceptance rule of `tributa.verification` (embeddings within a cosine,
generations the verifier's model accepts), not by digest: honest agents on other hardware or
batches give other bytes. The settled digest is one set member's, and only the agents that
signed exactly it are paid on-chain (the escrow checks each paid signature against it); the
agreeing others are neither paid nor slashed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from oracle.db import Job, JobState, Task
from tributa.verification import AgreeingSet, Answer, Judge, agreeing_set, agreeing_sets

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
    agreed: list[Job] = field(default_factory=list)  # agreed with other bytes: not paid, not slashed


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
    judge: Judge | None = None,
    output_of: Callable[[Job], bytes | None] | None = None,
) -> Verdict:
    """The verdict for a task from all its jobs.

    `digest_of(output)` stores output bytes and returns (cid, 0x-digest); `output_of(job)` is a
    job's output bytes (None: unknown, it agrees by digest only); `judge` the acceptance rule
    (None: answers agree only when their digests are equal).
    """
    answered = [j for j in jobs if j.state == JobState.SUBMITTED]
    missed = sorted({j.agent for j in jobs if j.state == JobState.EXPIRED} - {j.agent for j in answered})
    if not answered:
        return Verdict(None, None, [], [], "no_majority", "no agent answered")
    answers = _answers(answered, output_of)
    agree = judge.agree if judge is not None else _bytes_equal
    sets = agreeing_sets(answers, agree)
    best = sets[0]
    needed = task.wanted // 2 + 1
    majority = best.agents >= needed and not (len(sets) > 1 and sets[1].agents == best.agents)

    if majority and not spot_check:
        return _verdict_for(best, answered, missed, "majority")
    if reexecute is None:
        if majority:
            return _verdict_for(best, answered, missed, "majority", "spot check skipped: oracle cannot re-execute")
        return Verdict(
            None, None, [], [], "no_majority", f"no majority among {len(answered)} answers and no re-execution"
        )
    output = reexecute(task)
    cid, digest = digest_of(output)
    source = "spot_check" if spot_check and majority else "reexecution"
    verdict = _verdict_for(agreeing_set(Answer(digest, output, 0), answers, agree), answered, missed, source)
    if not verdict.paid:  # every agent disagreed with the oracle's own run: it settles with its result
        return Verdict(digest, cid, [], verdict.slashed, source, "no agent matched the oracle's re-execution")
    return verdict


def _answers(answered: list[Job], output_of: Callable[[Job], bytes | None] | None) -> list[Answer]:
    # A submitted job always carries its digest (the API stores none without one).
    counts = Counter(j.result_digest for j in answered if j.result_digest is not None)
    first: dict[str, Job] = {}
    for job in answered:
        if job.result_digest is not None:
            first.setdefault(job.result_digest, job)
    return [Answer(d, output_of(first[d]) if output_of else None, n) for d, n in counts.items()]


def _bytes_equal(a: bytes, b: bytes) -> bool:
    return a == b


def _verdict_for(chosen: AgreeingSet, answered: list[Job], missed: list[str], source: str, note: str = "") -> Verdict:
    paid = sorted((j for j in answered if j.result_digest == chosen.canonical), key=lambda j: j.id)
    agreed = sorted((j for j in answered if j.result_digest in chosen.members and j not in paid), key=lambda j: j.id)
    wrong = sorted({j.agent for j in answered if j.result_digest not in chosen.members})
    cid = paid[0].result_cid if paid else None
    return Verdict(chosen.canonical, cid, paid, wrong + missed, source, note, agreed)
