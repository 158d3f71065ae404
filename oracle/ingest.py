"""Event ingestion: TaskEscrow's logs polled into the task table, reorg-safe.

Three parts, wired together by `Ingestor`:
- oracle/log_poller.py reads the logs from a saved cursor, N confirmations deep, stores them
  with the cursor in one transaction per chunk, and detects reorgs and walks back to the fork;
- oracle/event_decoder.py decodes the raw logs;
- oracle/escrow_projection.py folds the escrow's events into tasks and rebuilds the tasks a
  reorg touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from web3.contract import Contract

from oracle import log_poller
from oracle.db import Database
from oracle.escrow_projection import WATCHED_EVENTS, EscrowProjection, apply_event, rebuild_task
from oracle.event_decoder import DecodedLog, EventDecoder, encode_args
from oracle.log_poller import REORG_WINDOW, ChainMoved, LogPoller, log_count

__all__ = [
    "CURSOR_NAME",
    "REORG_WINDOW",
    "WATCHED_EVENTS",
    "ChainMoved",
    "DecodedLog",
    "EventDecoder",
    "Ingestor",
    "apply_event",
    "encode_args",
    "log_count",
    "rebuild_task",
    "saved_block_hashes",
]

log = logging.getLogger("tributa.oracle.ingest")

CURSOR_NAME = "escrow"


class Ingestor(LogPoller):
    """A LogPoller over TaskEscrow's task events whose sink is the task table."""

    def __init__(
        self,
        db: Database,
        escrow: Contract,
        start_block: int,
        confirmations: int = 0,
        max_blocks: int = 2000,
        on_event: Callable[[DecodedLog], None] | None = None,
        on_reorg: Callable[[int], object] | None = None,  # its result (e.g. txs reopened) is unused
        reorg_window: int = REORG_WINDOW,
        cursor_name: str = CURSOR_NAME,
        replicas_by_requester: dict[str, int] | None = None,
    ) -> None:
        self.escrow = escrow
        self.projection = EscrowProjection(replicas_by_requester)
        super().__init__(
            db,
            escrow.w3,
            escrow.address,
            EventDecoder(escrow, WATCHED_EVENTS),
            self.projection,
            start_block,
            cursor_name=cursor_name,
            logger=log,
            what="ingest",
            confirmations=confirmations,
            max_blocks=max_blocks,
            on_event=on_event,
            on_reorg=on_reorg,
            reorg_window=reorg_window,
        )


def saved_block_hashes(db: Database, cursor_name: str = CURSOR_NAME) -> dict[int, str]:
    """The block hashes the ingestor remembers (for `tributa oracle status` and tests)."""
    return log_poller.saved_block_hashes(db, cursor_name)
