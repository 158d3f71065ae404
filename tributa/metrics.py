"""What the services' metrics look like to the code that updates them.

Each service keeps its own Prometheus registry (`oracle/metrics.py`, `compute_agent/metrics.py`).
Code that only counts or times types against these Protocols, so a stand-in such as the oracle's
relay to its API process is checked like the real metric.
"""

from __future__ import annotations

from typing import Protocol

LATENCY_BUCKETS = (0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120, 300)


class Counting(Protocol):
    """A Prometheus counter, or anything that forwards to one."""

    def labels(self, *values: str) -> Counting: ...

    def inc(self, amount: float = 1) -> None: ...


class Observing(Protocol):
    """A Prometheus histogram, or anything that forwards to one."""

    def labels(self, *values: str) -> Observing: ...

    def observe(self, amount: float) -> None: ...


class Rendered(Protocol):
    """A service's metrics as served on GET /metrics."""

    def render(self) -> bytes: ...
