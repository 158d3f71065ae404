"""Event ingestion: chunked eth_getLogs from a saved cursor, N confirmations deep.

Logs and the cursor advance in one database transaction, so a crash either keeps a
whole chunk or none of it, and a replayed chunk is absorbed by the (block hash, log
index) unique key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.orm import Session
from web3 import Web3
from web3._utils.events import get_event_data
from web3.contract import Contract

from oracle.db import ChainLog, Cursor, Database, Task, TaskState, now

log = logging.getLogger("tributa.oracle.ingest")

CURSOR_NAME = "escrow"
WATCHED_EVENTS = ("TaskPosted", "TaskSettled", "TaskFailed", "TaskRefunded")


@dataclass(frozen=True)
class DecodedLog:
    event: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str


class EventDecoder:
    """Decodes raw logs of one contract by topic0."""

    def __init__(self, contract: Contract, names: tuple[str, ...]) -> None:
        self._by_topic: dict[bytes, dict] = {}
        codec = contract.w3.codec
        self._codec = codec
        for abi in contract.abi:
            if abi.get("type") == "event" and abi["name"] in names:
                signature = f"{abi['name']}({','.join(_abi_type(i) for i in abi['inputs'])})"
                self._by_topic[bytes(Web3.keccak(text=signature))] = abi

    @property
    def topics(self) -> list[str]:
        return ["0x" + t.hex() for t in self._by_topic]

    def decode(self, raw: dict) -> DecodedLog | None:
        abi = self._by_topic.get(bytes(raw["topics"][0])) if raw["topics"] else None
        if abi is None:
            return None
        data = get_event_data(self._codec, abi, raw)
        return DecodedLog(
            event=data["event"],
            args=dict(data["args"]),
            block_number=raw["blockNumber"],
            block_hash=HexBytes(raw["blockHash"]).to_0x_hex(),
            log_index=raw["logIndex"],
            tx_hash=HexBytes(raw["transactionHash"]).to_0x_hex(),
        )


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


def apply_event(session: Session, ev: DecodedLog) -> None:
    """Fold one escrow event into the task table (idempotent)."""
    a = ev.args
    task = session.get(Task, a["task_id"])
    if ev.event == "TaskPosted":
        if task is None:
            session.add(
                Task(
                    task_id=a["task_id"],
                    requester=a["requester"],
                    model_id=a["model_id"],
                    input_digest="0x" + bytes(a["input_digest"]).hex(),
                    fee=a["fee"],
                    model_fee=a["model_fee"],
                    deadline=a["deadline"],
                    k=a["k"],
                    state=TaskState.OPEN,
                    posted_block=ev.block_number,
                    posted_at=now(),
                )
            )
        return
    if task is None:
        log.warning("event %s for unknown task %s ignored", ev.event, a["task_id"])
        return
    if ev.event == "TaskSettled":
        task.state = TaskState.SETTLED
        task.result_digest = "0x" + bytes(a["result_digest"]).hex()
        task.agent_paid = a["agent_fee"]
        task.refund = a["refund"]
        task.settle_tx = task.settle_tx or ev.tx_hash
        task.settled_at = task.settled_at or now()
    elif ev.event == "TaskFailed":
        if task.state not in (TaskState.REFUNDED,):
            task.state = TaskState.FAILED
        task.reason = a["reason"]
    elif ev.event == "TaskRefunded":
        task.state = TaskState.REFUNDED
        task.refund = a["amount"]
        task.refund_tx = task.refund_tx or ev.tx_hash


class Ingestor:
    def __init__(
        self,
        db: Database,
        escrow: Contract,
        start_block: int,
        confirmations: int = 0,
        max_blocks: int = 2000,
        on_event: Callable[[DecodedLog], None] | None = None,
    ) -> None:
        self.db = db
        self.escrow = escrow
        self.w3 = escrow.w3
        self.start_block = start_block
        self.confirmations = confirmations
        self.max_blocks = max(1, max_blocks)
        self.decoder = EventDecoder(escrow, WATCHED_EVENTS)
        self.on_event = on_event

    def poll_once(self) -> int:
        """Ingest every confirmed block past the cursor; returns the number of new logs."""
        head = self.w3.eth.block_number - self.confirmations
        saved = self.db.cursor(CURSOR_NAME)
        start = self.start_block if saved is None else saved + 1
        ingested = 0
        while start <= head:
            end = min(head, start + self.max_blocks - 1)
            raw_logs = self.w3.eth.get_logs(
                {"address": self.escrow.address, "fromBlock": start, "toBlock": end, "topics": [self.decoder.topics]}
            )
            decoded = [d for d in (self.decoder.decode(r) for r in raw_logs) if d is not None]
            with self.db.session() as s:
                for ev in decoded:
                    if self._save(s, ev):
                        apply_event(s, ev)
                        ingested += 1
                cursor = s.get(Cursor, CURSOR_NAME)
                if cursor is None:
                    s.add(Cursor(name=CURSOR_NAME, block_number=end))
                else:
                    cursor.block_number = end
            for ev in decoded:
                if self.on_event:
                    self.on_event(ev)
            start = end + 1
        return ingested

    @staticmethod
    def _save(session: Session, ev: DecodedLog) -> bool:
        exists = session.execute(
            select(ChainLog.id).where(ChainLog.block_hash == ev.block_hash, ChainLog.log_index == ev.log_index)
        ).first()
        if exists:
            return False
        session.add(
            ChainLog(
                block_number=ev.block_number,
                block_hash=ev.block_hash,
                log_index=ev.log_index,
                tx_hash=ev.tx_hash,
                event=ev.event,
                task_id=ev.args.get("task_id"),
            )
        )
        return True
