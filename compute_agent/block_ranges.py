"""The block range an agent's chain watcher has not read yet, handed out at most every so often."""

from __future__ import annotations

import time

from tributa.ai_oracle import LOG_CHUNK_BLOCKS

# The widest range handed out at once: many nodes refuse eth_getLogs over more blocks.
MAX_SPAN_BLOCKS = LOG_CHUNK_BLOCKS


class BlockRanges:
    def __init__(self, w3, next_block: int, every_s: float, max_span: int = MAX_SPAN_BLOCKS) -> None:
        self.w3 = w3
        self.next_block = next_block
        self.every_s = every_s
        self.max_span = max_span
        self._checked_at = 0.0

    def take(self, force: bool = False) -> tuple[int, int] | None:
        """(first, last) blocks to read now, at most `max_span` of them, or None (checked too
        recently, or nothing new). The range is handed out again until `done` says it was read;
        a watcher behind by more catches up a range per check."""
        if not force and time.monotonic() - self._checked_at < self.every_s:
            return None
        self._checked_at = time.monotonic()
        tip = self.w3.eth.block_number
        if tip < self.next_block:
            return None
        return self.next_block, min(tip, self.next_block + self.max_span - 1)

    def done(self, blocks: tuple[int, int]) -> None:
        self.next_block = max(self.next_block, blocks[1] + 1)
