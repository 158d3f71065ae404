"""The oracle's Prometheus metrics, and their relay from the worker process to the API process.

The oracle's worker runs in one process and its job API (which serves /metrics) in another: the
worker updates a `RelayedMetrics`, whose messages travel over a queue and are applied to the API
process's `OracleMetrics` by `apply_relayed`. Both satisfy `WorkerMetrics`, which is what the
settler and the service are typed against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from multiprocessing.queues import Queue
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from tributa.metrics import LATENCY_BUCKETS, Counting, Observing

TaskCounts = Callable[[], Mapping[str, int]]

# The metrics the worker updates; only these may cross the queue.
RELAYED_METRICS = ("rpc_errors", "gas_spent", "slashes", "settled", "latency")


class WorkerMetrics(Protocol):
    """What the oracle's worker updates, whichever process serves it. Read-only members, so a
    Prometheus Counter or a relay stand-in both match (a plain attribute would have to be exact)."""

    @property
    def rpc_errors(self) -> Counting: ...

    @property
    def gas_spent(self) -> Counting: ...

    @property
    def slashes(self) -> Counting: ...

    @property
    def settled(self) -> Counting: ...

    @property
    def latency(self) -> Observing: ...


class OracleMetrics:
    def __init__(self, task_counts: TaskCounts | None = None) -> None:
        self.registry = CollectorRegistry()
        self.rpc_errors = Counter(
            "tributa_oracle_rpc_errors_total",
            "Worker passes that failed on an RPC or chain error",
            registry=self.registry,
        )
        self.gas_spent = Counter(
            "tributa_oracle_gas_spent_total",
            "Gas used by the oracle's transactions",
            ["purpose"],
            registry=self.registry,
        )
        self.slashes = Counter("tributa_oracle_slashes_total", "Agents slashed in settlements", registry=self.registry)
        self.settled = Counter(
            "tributa_oracle_settled_total", "Tasks settled, by verdict source", ["source"], registry=self.registry
        )
        self.leases = Counter("tributa_oracle_jobs_leased_total", "Jobs leased to agents", registry=self.registry)
        self.latency = Histogram(
            "tributa_oracle_task_latency_seconds",
            "From ingestion of TaskPosted to the settlement receipt",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if task_counts is not None:
            self.registry.register(_TaskStateCollector(task_counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TaskStateCollector:
    """Tasks by state, read from the oracle's database at scrape time (never stale)."""

    def __init__(self, task_counts: TaskCounts) -> None:
        self.task_counts = task_counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("tributa_oracle_tasks", "Tasks known to the oracle, by state", labels=["state"])
        for state, count in sorted(self.task_counts().items()):
            family.add_metric([state], count)
        yield family


class RelayedMetrics:
    """The worker process's stand-in for OracleMetrics: `.settled.labels("majority").inc()` etc.
    put one small message on the queue, never blocking the worker."""

    def __init__(self, queue: Queue[Any]) -> None:
        box = [queue]  # every metric handed out reads the queue from here, so it follows `retarget`
        self._queue = box
        self.rpc_errors = _RelayedMetric(box, "rpc_errors", ())
        self.gas_spent = _RelayedMetric(box, "gas_spent", ())
        self.slashes = _RelayedMetric(box, "slashes", ())
        self.settled = _RelayedMetric(box, "settled", ())
        self.latency = _RelayedMetric(box, "latency", ())

    def retarget(self, queue: Queue[Any]) -> None:
        """Relay to `queue` from now on: a restarted API process reads a fresh one (the killed
        one may have died holding the old queue's read lock)."""
        self._queue[0] = queue


class _RelayedMetric:
    def __init__(self, box: list[Queue[Any]], name: str, labels: tuple[str, ...]) -> None:
        self._box, self._name, self._labels = box, name, labels

    def labels(self, *values: str) -> _RelayedMetric:
        return _RelayedMetric(self._box, self._name, tuple(str(v) for v in values))

    def inc(self, amount: float = 1) -> None:
        self._box[0].put((self._name, self._labels, "inc", amount))

    def observe(self, amount: float) -> None:
        self._box[0].put((self._name, self._labels, "observe", amount))


def apply_relayed(metrics: OracleMetrics, queue: Queue[Any]) -> None:
    """Apply relayed updates until the queue yields None (run it in a thread of the API process)."""
    while (message := queue.get()) is not None:
        name, labels, op, amount = message
        if name not in RELAYED_METRICS or op not in ("inc", "observe"):
            continue
        metric = getattr(metrics, name)
        getattr(metric.labels(*labels) if labels else metric, op)(amount)
