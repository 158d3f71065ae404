"""A contract's logs, polled: chunked eth_getLogs from a saved cursor, N confirmations deep, reorg-safe.

The poller stores the logs (`chain_logs`) and the hashes of recent blocks (`ingested_blocks`);
what the logs mean is its sink's (`LogSink`), called inside the same transactions.

Logs, the sink's effect, the cursor and the hash of the cursor block advance in one database
transaction, so a crash keeps a whole chunk or none of it, and a replayed chunk is absorbed by
the (block hash, log index) unique key.

Reorgs. Each poll first checks that the saved hash of the cursor block is still the chain's.
If not, it walks back over the saved hashes of recent blocks (the last `reorg_window`) to the
newest one the chain still has (the fork point), then in one transaction deletes the logs above
it, stores the logs the chain now has up to the old cursor, and hands both to the sink to repair
what the lost logs had done.

`chain_logs` has no cursor column: one poller (the escrow's, oracle/ingest.py) owns it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Protocol

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from web3 import Web3
from web3.exceptions import BlockNotFound

from oracle.db import ChainLog, Cursor, Database, IngestedBlock, get_or_raise
from oracle.event_decoder import DecodedLog, EventDecoder, encode_args
from oracle.rpc import Backoff, endpoint, is_transient
from tributa.errors import TributaError

# Block hashes kept per cursor: a reorg deeper than this many saved blocks is replayed from the
# oldest one kept (logged as an error: raise `confirmations` on such a chain).
REORG_WINDOW = 128


class ChainMoved(TributaError):
    """The chain reorganised while a range was being read; the poll is retried."""


class LogSink(Protocol):
    """What a poller's logs do; each call runs in the transaction that stores them."""

    def task_id_of(self, ev: DecodedLog) -> int | None:
        """The id a stored log is found by (`chain_logs.task_id`), if it has one."""
        ...

    def apply(self, session: Session, logs: list[DecodedLog]) -> None:
        """Fold in logs stored for the first time, in chain order."""
        ...

    def repair(self, session: Session, lost: list[ChainLog], replacement: list[DecodedLog]) -> None:
        """After a reorg: `lost` (already deleted) left the chain; `replacement` (already stored)
        is what the chain now has from the fork point to the old cursor."""
        ...


class LogPoller:
    def __init__(
        self,
        db: Database,
        w3: Web3,
        address: ChecksumAddress,
        decoder: EventDecoder,
        sink: LogSink,
        start_block: int,
        *,
        cursor_name: str,
        logger: logging.Logger,
        what: str,
        confirmations: int = 0,
        max_blocks: int = 2000,
        on_event: Callable[[DecodedLog], None] | None = None,
        on_reorg: Callable[[int], object] | None = None,  # its result (e.g. txs reopened) is unused
        reorg_window: int = REORG_WINDOW,
    ) -> None:
        self.db = db
        self.w3 = w3
        self.address = address
        self.decoder = decoder
        self.sink = sink
        self.start_block = start_block
        self.cursor_name = cursor_name
        self.log = logger  # the owner's: its lines read as the owner's (`what` names it in backoff lines)
        self.confirmations = confirmations
        self.max_blocks = max(1, max_blocks)
        self.on_event = on_event
        # Called with the fork point before a reorg is repaired (again on a retried pass, if it raises).
        self.on_reorg = on_reorg
        self.reorg_window = max(2, reorg_window)
        self.backoff = Backoff(what, logger)
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
            self.log.warning("%s; polling again", exc)
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
                self.sink.apply(s, new)
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
            {"address": self.address, "fromBlock": start, "toBlock": end, "topics": [self.decoder.topics]}
        )
        after = self._block_hash(end)
        if after is None or before != after:
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
            self.log.error(
                "reorg deeper than the %d saved block hashes; replaying from block %d. "
                "Raise TRIBUTA_CONFIRMATIONS on this chain.",
                len(saved),
                fork + 1,
            )
        self.log.warning(
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
            # New: not one of the lost logs' transactions re-included in another block.
            new = [ev for ev in replacement if not _take(lost_keys, (ev.event, ev.tx_hash))]
            self.sink.repair(s, lost, replacement)
            s.execute(
                delete(IngestedBlock).where(IngestedBlock.cursor == self.cursor_name, IngestedBlock.block_number > fork)
            )
            if end_hash is not None:
                self._advance(s, replay_to, end_hash, replacement)
            else:
                get_or_raise(s, Cursor, self.cursor_name).block_number = max(fork, self.start_block - 1)
        self.reorgs += 1
        self.log.warning(
            "reorg repaired: %d logs reorged out, %d on the new chain (%d of them new)",
            len(lost),
            len(replacement),
            len(new),
        )
        self._notify(new)
        return len(new)

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

    def _save_all(self, session: Session, events: list[DecodedLog], start: int, end: int) -> list[DecodedLog]:
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
                    task_id=self.sink.task_id_of(ev),
                    args=encode_args(ev.args),
                )
            )
        return new


def _take(counter: Counter[tuple[str, str]], key: tuple[str, str]) -> bool:
    """Consume one `key` from `counter`; True if there was one."""
    if counter[key] > 0:
        counter[key] -= 1
        return True
    return False


def saved_block_hashes(db: Database, cursor_name: str) -> dict[int, str]:
    """The block hashes a poller remembers under `cursor_name`."""
    with db.session() as s:
        rows = s.execute(
            select(IngestedBlock.block_number, IngestedBlock.block_hash).where(IngestedBlock.cursor == cursor_name)
        ).all()
    return dict(rows)


def log_count(db: Database) -> int:
    with db.session() as s:
        return s.execute(select(func.count()).select_from(ChainLog)).scalar_one()
