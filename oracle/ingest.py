"""Event ingestion: chunked eth_getLogs from a saved cursor, N confirmations deep, reorg-safe.

Logs, the cursor and the hash of the cursor block advance in one database transaction, so a
crash keeps a whole chunk or none of it, and a replayed chunk is absorbed by the (block hash,
log index) unique key.

Reorgs. Each poll first checks that the saved hash of the cursor block is still the chain's.
If not, it walks back over the saved hashes of recent blocks (the last `reorg_window`) to the
newest one the chain still has (the fork point), then in one transaction deletes the logs above
it, stores the logs the chain now has up to the old cursor, and rebuilds every task those logs
touch (see `rebuild_task`). A posting that was merely re-included (same transaction, another
block) leaves its task exactly as it was.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import BlockNotFound

from oracle.db import (
    ChainLog,
    Cursor,
    Database,
    IngestedBlock,
    Job,
    JobState,
    Task,
    TaskState,
    now,
)
from oracle.rpc import Backoff, endpoint, is_transient
from tributa.errors import TributaError

log = logging.getLogger("tributa.oracle.ingest")

CURSOR_NAME = "escrow"
WATCHED_EVENTS = ("TaskPosted", "TaskSettled", "TaskFailed", "TaskRefunded")
# Block hashes kept per cursor: a reorg deeper than this many saved blocks is replayed from the
# oldest one kept (logged as an error: raise `confirmations` on such a chain).
REORG_WINDOW = 128
# The TaskPosted fields that identify a posting; a task id re-used by a different posting after
# a reorg voids the old off-chain work.
POSTING_FIELDS = ("requester", "model_id", "input_digest", "fee", "model_fee", "deadline", "k")


@dataclass(frozen=True)
class DecodedLog:
    event: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str


@dataclass(frozen=True)
class _Layout:
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, abi type) per topic after topic0
    plain: tuple[tuple[str, str], ...]  # (name, abi type) in the data


class EventDecoder:
    """Decodes raw logs of one contract by topic0.

    eth_abi straight from the event's layout: several times faster than web3's get_event_data
    (which dominated catch-up ingestion), with the same result (addresses checksummed).
    """

    def __init__(self, contract: Contract, names: tuple[str, ...]) -> None:
        self._by_topic: dict[bytes, _Layout] = {}
        self._codec = contract.w3.codec
        for abi in contract.abi:
            if abi.get("type") == "event" and abi["name"] in names and not abi.get("anonymous"):
                signature = f"{abi['name']}({','.join(_abi_type(i) for i in abi['inputs'])})"
                inputs = [(i["name"], _abi_type(i)) for i in abi["inputs"]]
                self._by_topic[bytes(Web3.keccak(text=signature))] = _Layout(
                    abi["name"],
                    tuple(t for t, i in zip(inputs, abi["inputs"], strict=False) if i.get("indexed")),
                    tuple(t for t, i in zip(inputs, abi["inputs"], strict=False) if not i.get("indexed")),
                )

    @property
    def topics(self) -> list[str]:
        return ["0x" + t.hex() for t in self._by_topic]

    def decode(self, raw: dict) -> DecodedLog | None:
        layout = self._by_topic.get(bytes(raw["topics"][0])) if raw["topics"] else None
        if layout is None:
            return None
        args: dict[str, Any] = {}
        for (name, typ), topic in zip(layout.indexed, raw["topics"][1:], strict=False):
            # An indexed dynamic value is stored as its hash: keep the 32 bytes, as web3 does.
            args[name] = bytes(topic) if _is_dynamic(typ) else self._codec.decode([typ], bytes(topic))[0]
        values = self._codec.decode([typ for _, typ in layout.plain], bytes(raw["data"]))
        args.update(zip((name for name, _ in layout.plain), values, strict=False))
        types = dict(layout.indexed + layout.plain)
        return DecodedLog(
            event=layout.name,
            args={k: _checksummed(v, types[k]) for k, v in args.items()},
            block_number=raw["blockNumber"],
            block_hash=HexBytes(raw["blockHash"]).to_0x_hex(),
            log_index=raw["logIndex"],
            tx_hash=HexBytes(raw["transactionHash"]).to_0x_hex(),
        )


def _is_dynamic(typ: str) -> bool:
    return typ in ("string", "bytes") or typ.endswith("]") or typ.startswith("(")


def _checksummed(value: Any, typ: str) -> Any:
    if typ == "address":
        return Web3.to_checksum_address(value)
    if typ.startswith("address[") and isinstance(value, (list, tuple)):
        return [Web3.to_checksum_address(v) for v in value]
    return value


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


# -- log arguments as JSON -----------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def encode_args(args: dict[str, Any]) -> str:
    return json.dumps({k: _jsonable(v) for k, v in args.items()}, sort_keys=True)


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
        task = session.get(Task, task_id)
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


# -- the ingestor --------------------------------------------------------------------------------
class ChainMoved(TributaError):
    """The chain reorganised while a range was being read; the poll is retried."""


class Ingestor:
    def __init__(
        self,
        db: Database,
        escrow: Contract,
        start_block: int,
        confirmations: int = 0,
        max_blocks: int = 2000,
        on_event: Callable[[DecodedLog], None] | None = None,
        on_reorg: Callable[[int], None] | None = None,
        reorg_window: int = REORG_WINDOW,
        cursor_name: str = CURSOR_NAME,
        replicas_by_requester: dict[str, int] | None = None,
    ) -> None:
        self.db = db
        # Tasks these requesters post are run by fewer agents than their k (AIOracle's: 1).
        self.replicas_by_requester = {a.lower(): n for a, n in (replicas_by_requester or {}).items()}
        self.escrow = escrow
        self.w3 = escrow.w3
        self.start_block = start_block
        self.confirmations = confirmations
        self.max_blocks = max(1, max_blocks)
        self.decoder = EventDecoder(escrow, WATCHED_EVENTS)
        self.on_event = on_event
        # Called with the fork point before a reorg is repaired (again on a retried pass, if it raises).
        self.on_reorg = on_reorg
        self.reorg_window = max(2, reorg_window)
        self.cursor_name = cursor_name
        self.backoff = Backoff("ingest", log)
        self.reorgs = 0  # reorgs handled by this instance (for status and tests)
        # The chain tip the last complete pass caught up with: while the node reports the same tip
        # hash, nothing new was mined and nothing was reorged (a reorg changes the tip's hash).
        self._synced_tip: str | None = None
        self._tip_timestamp: int | None = None

    def poll_once(self) -> int:
        """Ingest every confirmed block past the cursor; returns the number of new logs.

        While the RPC node is unreachable it raises RpcUnavailable once per attempt (one log
        line) and then returns 0 until the backoff delay has passed; the database is always
        left at a chunk boundary.
        """
        if not self.backoff.ready():
            return 0
        try:
            new = self._poll()
        except ChainMoved as exc:
            log.warning("%s; polling again", exc)
            return 0
        except Exception as exc:
            if is_transient(exc):
                raise self.backoff.failed(exc, endpoint(self.w3)) from None
            raise
        self.backoff.succeeded()
        return new

    def take_tip_timestamp(self) -> int | None:
        """The tip's timestamp read by the latest pass (once; None if no pass read it since)."""
        timestamp, self._tip_timestamp = self._tip_timestamp, None
        return timestamp

    def _poll(self) -> int:
        tip = self.w3.eth.get_block("latest")
        tip_hash = HexBytes(tip["hash"]).to_0x_hex()
        self._tip_timestamp = int(tip["timestamp"])
        if tip_hash == self._synced_tip:
            return 0
        ingested = self._catch_up(int(tip["number"]) - self.confirmations)
        self._synced_tip = tip_hash
        return ingested

    def _catch_up(self, head: int) -> int:
        ingested = self._check_reorg(head)
        saved = self.db.cursor(self.cursor_name)
        start = self.start_block if saved is None else saved + 1
        while start <= head:
            end = min(head, start + self.max_blocks - 1)
            decoded, end_hash = self._read_range(start, end)
            with self.db.session() as s:
                new = self._save_all(s, decoded, start, end)
                tasks = self._load_tasks(s, new)
                for ev in new:
                    apply_event(s, ev, tasks)
                    if ev.event == "TaskPosted":
                        self._set_replicas(tasks.get(ev.args["task_id"]))
                self._advance(s, end, end_hash, decoded)
            ingested += len(new)
            self._notify(new)
            start = end + 1
        return ingested

    # -- chain reads --------------------------------------------------------------------------
    def _block_hash(self, number: int) -> str | None:
        try:
            return HexBytes(self.w3.eth.get_block(number)["hash"]).to_0x_hex()
        except BlockNotFound:
            return None

    def _read_range(self, start: int, end: int) -> tuple[list[DecodedLog], str]:
        """The watched logs of [start, end] and the hash of `end`, all from one fork.

        The end block's hash is read before and after eth_getLogs: if it changed, a reorg hit
        the range mid-read and the poll is retried rather than storing a mix of two forks.
        """
        before = self._block_hash(end)
        raw_logs = self.w3.eth.get_logs(
            {"address": self.escrow.address, "fromBlock": start, "toBlock": end, "topics": [self.decoder.topics]}
        )
        after = self._block_hash(end)
        if before is None or before != after:
            raise ChainMoved(f"block {end} changed while logs {start}..{end} were read")
        decoded = [d for d in (self.decoder.decode(r) for r in raw_logs) if d is not None]
        stale = [d for d in decoded if d.block_number == end and d.block_hash != after]
        if stale:
            raise ChainMoved(f"logs of block {end} came from another fork")
        return decoded, after

    # -- reorgs -------------------------------------------------------------------------------
    def _check_reorg(self, head: int) -> int:
        """Detect a reorg below the cursor and repair it; returns the number of new logs stored."""
        with self.db.session() as s:
            saved = s.execute(
                select(IngestedBlock.block_number, IngestedBlock.block_hash)
                .where(IngestedBlock.cursor == self.cursor_name)
                .order_by(IngestedBlock.block_number.desc())
            ).all()
            cursor = s.get(Cursor, self.cursor_name)
            cursor_block = cursor.block_number if cursor else None
        if not saved or cursor_block is None:
            return 0
        newest_number, newest_hash = saved[0]
        chain_hash = self._block_hash(newest_number)
        if chain_hash == newest_hash:
            return 0
        fork = None
        for number, block_hash in saved[1:]:
            if self._block_hash(number) == block_hash:
                fork = number
                break
        if fork is None:
            fork = max(self.start_block - 1, saved[-1][0] - 1)
            log.error(
                "reorg deeper than the %d saved block hashes; replaying from block %d. "
                "Raise TRIBUTA_CONFIRMATIONS on this chain.",
                len(saved),
                fork + 1,
            )
        log.warning(
            "reorg: block %d is now %s (was %s); fork point %d, replaying to block %d",
            newest_number,
            chain_hash or "gone",
            newest_hash,
            fork,
            max(fork, min(cursor_block, head)),
        )
        if self.on_reorg:
            self.on_reorg(fork)
        return self._repair(fork, cursor_block, head)

    def _repair(self, fork: int, old_cursor: int, head: int) -> int:
        replay_to = min(old_cursor, head)
        replacement: list[DecodedLog] = []
        end_hash = None
        if replay_to > fork:
            start = fork + 1
            while start <= replay_to:
                end = min(replay_to, start + self.max_blocks - 1)
                chunk, end_hash = self._read_range(start, end)
                replacement += chunk
                start = end + 1
            if self._block_hash(replay_to) != end_hash:
                raise ChainMoved(f"the chain moved again while blocks {fork + 1}..{replay_to} were replayed")
        with self.db.session() as s:
            lost = list(
                s.execute(
                    select(ChainLog)
                    .where(ChainLog.block_number > fork)
                    .order_by(ChainLog.block_number, ChainLog.log_index)
                ).scalars()
            )
            lost_keys = Counter((row.event, row.tx_hash) for row in lost)
            for row in lost:
                s.delete(row)
            s.flush()
            self._save_all(s, replacement, fork + 1, replay_to)
            s.flush()
            new = [ev for ev in replacement if not _take(lost_keys, (ev.event, ev.tx_hash))]
            self._rebuild(s, lost, replacement)
            s.execute(
                delete(IngestedBlock).where(IngestedBlock.cursor == self.cursor_name, IngestedBlock.block_number > fork)
            )
            if end_hash is not None:
                self._advance(s, replay_to, end_hash, replacement)
            else:
                s.get(Cursor, self.cursor_name).block_number = max(fork, self.start_block - 1)
        self.reorgs += 1
        log.warning(
            "reorg repaired: %d logs reorged out, %d on the new chain (%d of them new)",
            len(lost),
            len(replacement),
            len(new),
        )
        self._notify(new)
        return len(new)

    def _rebuild(self, s: Session, lost: list[ChainLog], replacement: list[DecodedLog]) -> None:
        by_task_lost: dict[int, list[ChainLog]] = {}
        for row in lost:
            if row.task_id is not None:
                by_task_lost.setdefault(row.task_id, []).append(row)
        by_task_new: dict[int, Counter] = {}
        for ev in replacement:
            by_task_new.setdefault(ev.args["task_id"], Counter())[(ev.event, ev.tx_hash)] += 1
        for task_id in sorted(set(by_task_lost) | set(by_task_new)):
            lost_rows = by_task_lost.get(task_id, [])
            same = Counter((r.event, r.tx_hash) for r in lost_rows) == by_task_new.get(task_id, Counter())
            surviving = list(
                s.execute(
                    select(ChainLog)
                    .where(ChainLog.task_id == task_id)
                    .order_by(ChainLog.block_number, ChainLog.log_index)
                ).scalars()
            )
            task = s.get(Task, task_id)
            if same and task is not None:
                # The same transactions, re-included in other blocks: the task is unchanged.
                posted = [r for r in surviving if r.event == "TaskPosted"]
                if posted:
                    task.posted_block = posted[-1].block_number
                continue
            outcome = rebuild_task(s, task_id, surviving, lost_rows)
            self._set_replicas(s.get(Task, task_id))
            log.warning("reorg: task %s rebuilt from its surviving logs: %s", task_id, outcome)

    def _set_replicas(self, task: Task | None) -> None:
        if task is not None:
            task.replicas = self.replicas_by_requester.get(task.requester.lower())

    # -- storage ------------------------------------------------------------------------------
    def _advance(self, s: Session, end: int, end_hash: str, decoded: Iterable[DecodedLog]) -> None:
        """Move the cursor to `end` and remember recent block hashes (pruned to the window)."""
        cursor = s.get(Cursor, self.cursor_name)
        if cursor is None:
            s.add(Cursor(name=self.cursor_name, block_number=end))
        else:
            cursor.block_number = end
        hashes = {ev.block_number: ev.block_hash for ev in decoded}
        hashes[end] = end_hash
        s.execute(
            delete(IngestedBlock).where(
                IngestedBlock.cursor == self.cursor_name, IngestedBlock.block_number.in_(list(hashes))
            )
        )
        s.add_all(IngestedBlock(cursor=self.cursor_name, block_number=n, block_hash=h) for n, h in hashes.items())
        s.flush()
        cutoff = s.execute(
            select(IngestedBlock.block_number)
            .where(IngestedBlock.cursor == self.cursor_name)
            .order_by(IngestedBlock.block_number.desc())
            .offset(self.reorg_window - 1)
            .limit(1)
        ).scalar()
        if cutoff is not None:
            s.execute(
                delete(IngestedBlock).where(
                    IngestedBlock.cursor == self.cursor_name, IngestedBlock.block_number < cutoff
                )
            )

    def _notify(self, events: list[DecodedLog]) -> None:
        if self.on_event:
            for ev in events:
                self.on_event(ev)

    @staticmethod
    def _save_all(session: Session, events: list[DecodedLog], start: int, end: int) -> list[DecodedLog]:
        """Store the logs not stored yet (by block hash and log index); returns those."""
        if not events:
            return []
        seen = set(
            session.execute(
                select(ChainLog.block_hash, ChainLog.log_index).where(ChainLog.block_number.between(start, end))
            ).tuples()
        )
        new = []
        for ev in events:
            if (ev.block_hash, ev.log_index) in seen:
                continue
            seen.add((ev.block_hash, ev.log_index))
            new.append(ev)
            session.add(
                ChainLog(
                    block_number=ev.block_number,
                    block_hash=ev.block_hash,
                    log_index=ev.log_index,
                    tx_hash=ev.tx_hash,
                    event=ev.event,
                    task_id=ev.args.get("task_id"),
                    args=encode_args(ev.args),
                )
            )
        return new

    @staticmethod
    def _load_tasks(session: Session, events: list[DecodedLog]) -> dict[int, Task | None]:
        """The batch's tasks in one query instead of one per event."""
        ids = {ev.args["task_id"] for ev in events if "task_id" in ev.args}
        tasks: dict[int, Task | None] = dict.fromkeys(ids)
        if ids:
            tasks.update((t.task_id, t) for t in session.execute(select(Task).where(Task.task_id.in_(ids))).scalars())
        return tasks


def _take(counter: Counter, key: tuple[str, str]) -> bool:
    """Consume one `key` from `counter`; True if there was one."""
    if counter[key] > 0:
        counter[key] -= 1
        return True
    return False


def saved_block_hashes(db: Database, cursor_name: str = CURSOR_NAME) -> dict[int, str]:
    """The block hashes the ingestor remembers (for `tributa oracle status` and tests)."""
    with db.session() as s:
        rows = s.execute(
            select(IngestedBlock.block_number, IngestedBlock.block_hash).where(IngestedBlock.cursor == cursor_name)
        ).all()
    return dict(rows)


def log_count(db: Database) -> int:
    with db.session() as s:
        return s.execute(select(func.count()).select_from(ChainLog)).scalar_one()
