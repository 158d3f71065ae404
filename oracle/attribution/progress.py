"""Progress reporting for long index builds: a callback, or structured log lines by default."""

from __future__ import annotations

import logging
from collections.abc import Callable

# (stage, done, total): stages are "tokenize" (chars), "suffix_array" (tokens), "embed" (chunks)
# and "merge" (tokens, span segments).
ProgressFn = Callable[[str, int, int], None]
UNITS = {"tokenize": "chars", "suffix_array": "tokens", "embed": "chunks", "merge": "tokens"}

log = logging.getLogger("tributa.oracle.attribution")


class LogProgress:
    """Logs one line per stage each time it passes another 10% (and at the end)."""

    def __init__(self, dataset_id: str) -> None:
        self.dataset_id = dataset_id
        self._last: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        tenth = 10 * done // total if total else 10
        if self._last.get(stage) == tenth:
            return
        self._last[stage] = tenth
        log.info(
            "index %s: %s %d/%d %s (%d%%)",
            self.dataset_id,
            stage,
            done,
            total,
            UNITS.get(stage, "items"),
            10 * tenth,
            extra={
                "fields": {
                    "dataset_id": self.dataset_id,
                    "stage": stage,
                    "done": done,
                    "total": total,
                    "percent": 10 * tenth,
                }
            },
        )
