"""TaskEscrow's events folded into the task table, and tasks rebuilt from their logs after a reorg.

`EscrowProjection` is the escrow poller's sink (oracle/log_poller.py): new logs go through
`apply_event`; after a reorg every task the lost or replacing logs touch is recomputed from its
surviving logs (`rebuild_task`). A posting that was merely re-included (same transaction, another
block) leaves its task exactly as it was.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from web3 import Web3

from oracle.db import ChainLog, Job, JobState, Task, TaskState, get_or_raise, now
from oracle.event_decoder import DecodedLog

log = logging.getLogger("tributa.oracle.ingest")  # ingestion's lines, wherever they are written

WATCHED_EVENTS = ("TaskPosted", "TaskSettled", "TaskFailed", "TaskRefunded")
# The TaskPosted fields that identify a posting; a task id re-used by a different posting after
# a reorg voids the old off-chain work.
POSTING_FIELDS = ("requester", "model_id", "input_digest", "fee", "model_fee", "deadline", "k")


class EscrowProjection:
    """The task table as the escrow's logs make it (a `LogSink`)."""

    def __init__(self, replicas_by_requester: dict[str, int] | None = None) -> None:
        # Tasks these requesters post are run by fewer agents than their k (AIOracle's: 1).
        self.replicas_by_requester = {a.lower(): n for a, n in (replicas_by_requester or {}).items()}

    def task_id_of(self, ev: DecodedLog) -> int | None:
        return ev.args.get("task_id")

    def apply(self, session: Session, logs: list[DecodedLog]) -> None:
        tasks = _load_tasks(session, logs)
        for ev in logs:
            apply_event(session, ev, tasks)
            if ev.event == "TaskPosted":
                self._set_replicas(tasks.get(ev.args["task_id"]))

    def repair(self, session: Session, lost: list[ChainLog], replacement: list[DecodedLog]) -> None:
        by_task_lost: dict[int, list[ChainLog]] = {}
        for row in lost:
            if row.task_id is not None:
                by_task_lost.setdefault(row.task_id, []).append(row)
        by_task_new: dict[int, Counter[tuple[str, str]]] = {}
        for ev in replacement:
            by_task_new.setdefault(ev.args["task_id"], Counter())[(ev.event, ev.tx_hash)] += 1
        for task_id in sorted(set(by_task_lost) | set(by_task_new)):
            lost_rows = by_task_lost.get(task_id, [])
            same = Counter((r.event, r.tx_hash) for r in lost_rows) == by_task_new.get(task_id, Counter())
            surviving = _logs_of(session, task_id)
            task = session.get(Task, task_id)
            if same and task is not None:
                # The same transactions, re-included in other blocks: the task is unchanged.
                posted = [r for r in surviving if r.event == "TaskPosted"]
                if posted:
                    task.posted_block = posted[-1].block_number
                continue
            outcome = rebuild_task(session, task_id, surviving, lost_rows)
            self._set_replicas(session.get(Task, task_id))
            log.warning("reorg: task %s rebuilt from its surviving logs: %s", task_id, outcome)

    def _set_replicas(self, task: Task | None) -> None:
        if task is not None:
            task.replicas = self.replicas_by_requester.get(task.requester.lower())


def _load_tasks(session: Session, events: list[DecodedLog]) -> dict[int, Task | None]:
    """The batch's tasks in one query instead of one per event."""
    ids = {ev.args["task_id"] for ev in events if "task_id" in ev.args}
    tasks: dict[int, Task | None] = dict.fromkeys(ids)
    if ids:
        tasks.update((t.task_id, t) for t in session.execute(select(Task).where(Task.task_id.in_(ids))).scalars())
    return tasks


def _logs_of(session: Session, task_id: int) -> list[ChainLog]:
    """A task's stored logs, in chain order."""
    return list(
        session.execute(
            select(ChainLog).where(ChainLog.task_id == task_id).order_by(ChainLog.block_number, ChainLog.log_index)
        ).scalars()
    )


def _args_of(row: ChainLog) -> dict[str, Any] | None:
    return json.loads(row.args) if row.args else None


def _hex32(value: Any) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


def _posting(args: dict[str, Any]) -> dict[str, Any]:
    """The identifying fields of a TaskPosted, normalised (bytes as 0x hex, addresses lowercase)."""
    return {
        "requester": str(args["requester"]).lower(),
        "model_id": int(args["model_id"]),
        "input_digest": _hex32(args["input_digest"]),
        "fee": int(args["fee"]),
        "model_fee": int(args["model_fee"]),
        "deadline": int(args["deadline"]),
        "k": int(args["k"]),
    }


def _task_posting(task: Task) -> dict[str, Any]:
    return {f: (getattr(task, f).lower() if f == "requester" else getattr(task, f)) for f in POSTING_FIELDS}


# -- folding events into tasks -------------------------------------------------------------------
def apply_event(session: Session, ev: DecodedLog, tasks: dict[int, Task | None] | None = None) -> None:
    """Fold one escrow event into the task table (idempotent).

    `tasks`: the rows of this batch's task ids, loaded at once (None for ids not in the table).
    """
    a = ev.args
    task = tasks[a["task_id"]] if tasks is not None and a["task_id"] in tasks else session.get(Task, a["task_id"])
    if ev.event == "TaskPosted":
        if task is None:
            task = _new_task(a, ev.block_number)
            session.add(task)
            if tasks is not None:
                tasks[task.task_id] = task
        elif task.state == TaskState.ORPHANED or _task_posting(task) != _posting(a):
            _adopt_posting(session, task, a, ev.block_number)
        return
    if task is None:
        log.warning("event %s for unknown task %s ignored", ev.event, a["task_id"])
        return
    _apply_outcome(task, ev.event, a, ev.tx_hash)


def _new_task(a: dict[str, Any], block_number: int) -> Task:
    p = _posting(a)
    return Task(
        task_id=int(a["task_id"]),
        requester=Web3.to_checksum_address(p["requester"]),
        model_id=p["model_id"],
        input_digest=p["input_digest"],
        fee=p["fee"],
        model_fee=p["model_fee"],
        deadline=p["deadline"],
        k=p["k"],
        state=TaskState.OPEN,
        posted_block=block_number,
        posted_at=now(),
    )


def _apply_outcome(task: Task, event: str, a: dict[str, Any], tx_hash: str) -> None:
    if event == "TaskSettled":
        task.state = TaskState.SETTLED
        task.result_digest = _hex32(a["result_digest"])
        task.agent_paid = int(a["agent_fee"])
        task.refund = int(a["refund"])
        task.settle_tx = task.settle_tx or tx_hash
        task.settled_at = task.settled_at or now()
    elif event == "TaskFailed":
        if task.state not in (TaskState.REFUNDED,):
            task.state = TaskState.FAILED
        task.reason = a["reason"]
    elif event == "TaskRefunded":
        task.state = TaskState.REFUNDED
        task.refund = int(a["amount"])
        task.refund_tx = task.refund_tx or tx_hash


def _jobs(session: Session, task_id: int) -> list[Job]:
    return list(session.execute(select(Job).where(Job.task_id == task_id)).scalars())


def _progress_state(session: Session, task: Task) -> str:
    """Where the off-chain work on a task stands, ignoring every on-chain outcome."""
    jobs = _jobs(session, task.task_id)
    submitted = sum(1 for j in jobs if j.state == JobState.SUBMITTED)
    if submitted and submitted >= task.wanted:
        return TaskState.VERIFIED
    if any(j.state in (JobState.LEASED, JobState.SUBMITTED) for j in jobs):
        return TaskState.RUNNING
    return TaskState.OPEN


def _adopt_posting(session: Session, task: Task, a: dict[str, Any], block_number: int) -> None:
    """A TaskPosted for a task row we already have: restore an orphan, or replace a stranger."""
    if _task_posting(task) == _posting(a):
        task.state = _progress_state(session, task)
        task.reason = None
        task.posted_block = block_number
        log.info("task %s re-posted after a reorg; back to %s", task.task_id, task.state)
        return
    # The id now belongs to another posting: results signed for the old one must never settle it.
    for job in _jobs(session, task.task_id):
        if job.state in (JobState.LEASED, JobState.SUBMITTED):
            job.state = JobState.ERRORED
            job.error = "voided: after a reorg this task id belongs to a different posting"
    fresh = _new_task(a, block_number)
    for column in Task.__table__.columns.keys():
        if column != "task_id":
            setattr(task, column, getattr(fresh, column))
    log.warning("task %s now belongs to a different posting after a reorg; earlier jobs voided", task.task_id)


# -- rebuilding a task after a reorg -------------------------------------------------------------
def rebuild_task(session: Session, task_id: int, surviving: list[ChainLog], lost: list[ChainLog]) -> str:
    """Recompute one task after a reorg from the logs still on the chain; returns what it did.

    The rules (`surviving`: this task's logs on the new chain, in order; `lost`: the ones
    reorged out):
    - no surviving TaskPosted: a task nobody has worked on (no jobs) is deleted; one with jobs
      becomes ORPHANED (kept, never leased or settled; restored if the posting comes back);
    - a surviving TaskPosted with other content than the row (the id was re-used by another
      posting): its jobs are voided and the row is reset to the new posting, OPEN;
    - otherwise the state restarts from the off-chain progress (OPEN / RUNNING / VERIFIED from
      the jobs), or FAILING if a TaskFailed was lost (the oracle's decision to fail stands and
      fail_task is sent again); then the surviving TaskSettled / TaskFailed / TaskRefunded are
      folded in again, and settlement or refund fields of a lost outcome are cleared.
    """
    task = session.get(Task, task_id)
    posted = [row for row in surviving if row.event == "TaskPosted"]
    if not posted:
        if task is None:
            return "unknown"
        if not _jobs(session, task_id):
            session.delete(task)
            return "removed"
        task.state = TaskState.ORPHANED
        task.reason = "its TaskPosted was reorged out of the chain"
        return "orphaned"
    post_args = _args_of(posted[-1])
    if task is None:
        if post_args is None:
            return "unknown"  # a log stored before arguments were kept: nothing to rebuild from
        session.add(_new_task({"task_id": task_id, **post_args}, posted[-1].block_number))
        session.flush()
        task = get_or_raise(session, Task, task_id)
    elif post_args is not None and _task_posting(task) != _posting(post_args):
        _adopt_posting(session, task, {"task_id": task_id, **post_args}, posted[-1].block_number)
    else:
        task.posted_block = posted[-1].block_number
        if task.state == TaskState.ORPHANED:
            task.reason = None
        lost_events = {row.event for row in lost}
        task.state = TaskState.FAILING if "TaskFailed" in lost_events else _progress_state(session, task)
        survived = {row.event for row in surviving}
        if "TaskSettled" not in survived:
            task.settle_tx = task.settled_at = task.agent_paid = task.gas_used = None
        if "TaskRefunded" not in survived:
            task.refund_tx = None
            if "TaskSettled" not in survived:
                task.refund = None
    for row in surviving:
        args = _args_of(row)
        if row.event != "TaskPosted" and args is not None:
            _apply_outcome(task, row.event, args, row.tx_hash)
    return task.state
